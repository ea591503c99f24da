"""A Sparkplug B edge node usan did not write (pysparkplug + Eclipse Paho).

    python sparkplug_edge.py HOST PORT GROUP NODE DEVICE FIRST_TS

Births the node and device (metrics temp: Double, alias 1; flow: Float,
alias 2), sends ten DDATA by alias, then one DDATA whose sequence number skips
one. It then waits up to 15 s for the host's NCMD `Node Control/Rebirth`,
births again with *different* aliases (temp 10, flow 20) and sends five more
DDATA. Timestamps: FIRST_TS + 1000*k for k = 0..17 (births included); values
temp = 20 + 0.5*k, flow = k. Exits 0 only if the rebirth was requested.
"""
import sys
import threading
import time

import pysparkplug as spb

host, port, group, node, device, first = sys.argv[1:7]
port, first = int(port), int(first)
rebirth = threading.Event()


def on_command(_client, message):
    for metric in message.payload.metrics:
        if metric.name == "Node Control/Rebirth" and metric.value:
            rebirth.set()


def metrics(k, aliases, named):
    ts = first + 1000 * k
    temp = spb.Metric(timestamp=ts, name="temp" if named else None, datatype=spb.DataType.DOUBLE,
                      value=20 + 0.5 * k, alias=aliases[0])
    flow = spb.Metric(timestamp=ts, name="flow" if named else None, datatype=spb.DataType.FLOAT,
                      value=float(k), alias=aliases[1])
    return (temp, flow)


def topic(kind, dev=None):
    return spb.Topic(message_type=kind, group_id=group, edge_node_id=node, device_id=dev)


def send(kind, payload, dev=None):
    client.publish(spb.Message(topic=topic(kind, dev), payload=payload, qos=spb.QoS.AT_MOST_ONCE, retain=False),
                   include_dtypes=True)
    time.sleep(0.02)


def births(k, bd_seq, aliases):
    now = spb.get_current_timestamp()
    bd = spb.Metric(timestamp=now, name="bdSeq", datatype=spb.DataType.INT64, value=bd_seq)
    send(spb.MessageType.NBIRTH, spb.NBirth(timestamp=now, seq=0, metrics=(bd,)))
    send(spb.MessageType.DBIRTH, spb.DBirth(timestamp=now, seq=1, metrics=metrics(k, aliases, True)), device)


client = spb.Client(client_id=f"edge-{node}")
client.subscribe(topic(spb.MessageType.NCMD), spb.QoS.AT_LEAST_ONCE, on_command)
client.connect(host, port=port, blocking=False)
time.sleep(1.0)

births(0, 0, (1, 2))
seq = 2
for k in range(1, 11):
    send(spb.MessageType.DDATA, spb.DData(spb.get_current_timestamp(), seq=seq, metrics=metrics(k, (1, 2), False)), device)
    seq += 1
seq += 1  # the forced gap
send(spb.MessageType.DDATA, spb.DData(spb.get_current_timestamp(), seq=seq, metrics=metrics(11, (1, 2), False)), device)

if not rebirth.wait(15):
    print("no rebirth request arrived", file=sys.stderr)
    sys.exit(3)
births(12, 1, (10, 20))
seq = 2
for k in range(13, 18):
    send(spb.MessageType.DDATA, spb.DData(spb.get_current_timestamp(), seq=seq, metrics=metrics(k, (10, 20), False)), device)
    seq += 1
time.sleep(0.5)
client.disconnect()
print("rebirth requested and answered")
