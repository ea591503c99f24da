"""A plant publisher usan did not write: Eclipse Paho publishes JSON telemetry.

    python mqtt_publish.py HOST PORT TOPIC FIRST_TS COUNT RATE [--batch SIZE] [--from K]

Messages i = K..COUNT (K is 0 unless --from K) are published; message i
carries timestamp FIRST_TS + 1000*i (epoch ms) and the
values temp = 20 + 0.5*i and flow = i. Without --batch, one message per
timestamp: {"ts": .., "temp": .., "flow": ..}. With --batch SIZE, messages
of SIZE timestamps in long form: {"samples": [{"asset": "pump-1", "ts": ..,
"signal": "temp", "value": ..}, ...]}. QoS 1, at RATE messages per second;
exits 0 once the broker has acknowledged every message.
"""
import json
import sys
import time

import paho.mqtt.client as mqtt


def client():
    try:
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    except AttributeError:  # paho-mqtt 1.x
        return mqtt.Client()


def main():
    host, port, topic, first, count, rate = sys.argv[1:7]
    port, first, count, rate = int(port), int(first), int(count), float(rate)
    options = dict(zip(sys.argv[7::2], sys.argv[8::2]))
    batch = int(options.get("--batch", 0))
    c = client()
    c.max_inflight_messages_set(100)
    c.connect(host, port)
    c.loop_start()
    infos = []
    start = time.monotonic()
    sent = 0
    i = int(options.get("--from", 0))
    while i < count:
        if batch:
            samples = []
            for k in range(i, min(i + batch, count)):
                ts = first + 1000 * k
                samples.append({"asset": "pump-1", "ts": ts, "signal": "temp", "value": 20 + 0.5 * k})
                samples.append({"asset": "pump-1", "ts": ts, "signal": "flow", "value": k})
            payload = {"samples": samples}
            i += batch
        else:
            payload = {"ts": first + 1000 * i, "temp": 20 + 0.5 * i, "flow": i}
            i += 1
        infos.append(c.publish(topic, json.dumps(payload), qos=1))
        sent += 1
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for info in infos:
        info.wait_for_publish(timeout=30)
        if not info.is_published():
            print("a message was not acknowledged", file=sys.stderr)
            sys.exit(2)
    c.loop_stop()
    c.disconnect()
    print(f"published {sent} messages")


if __name__ == "__main__":
    main()
