"""The peer of `cargo bench --bench opcua`: an asyncua client subscribing to
the same server's variables, counting the values it receives.

    python opcua_subscribe.py ENDPOINT NS ASSETS SIGNALS PUBLISHING_MS SAMPLING_MS SECONDS

Subscribes to ns=NS;s=A<a>.S<s> (one subscription, like usan), waits 2 s for
values to flow, counts for SECONDS and prints `received_per_s=<n>`.
"""
import asyncio
import logging
import sys
import time

from asyncua import Client, ua

logging.disable(logging.WARNING)


class Count:
    def __init__(self):
        self.values = 0

    def datachange_notification(self, node, value, data):
        self.values += 1


async def main(endpoint, ns, assets, signals, publishing_ms, sampling_ms, seconds):
    client = Client(endpoint, timeout=60)
    client.max_array_length = 1_000_000
    async with client:
        count = Count()
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing_ms, RequestedLifetimeCount=30,
            RequestedMaxKeepAliveCount=10, MaxNotificationsPerPublish=5000, PublishingEnabled=True,
        )
        subscription = await client.create_subscription(params, count)
        nodes = [client.get_node(f"ns={ns};s=A{a}.S{s}") for a in range(assets) for s in range(signals)]
        for start in range(0, len(nodes), 500):
            await subscription.subscribe_data_change(
                nodes[start:start + 500], sampling_interval=sampling_ms, queuesize=100)
        await asyncio.sleep(2)
        before, t0 = count.values, time.monotonic()
        await asyncio.sleep(seconds)
        received = count.values - before
        print(f"received_per_s={received / (time.monotonic() - t0):.0f}", flush=True)


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                 float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])))
