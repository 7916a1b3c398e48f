"""CPU per RPC publish: kombu's producer pool (nameko's path) against :class:`ChannelPublisher`.

    python -m bench.publish [--count 3000] [--rounds 3]

Publishes an RPC-request-sized message to a bounded throwaway queue on the
local RabbitMQ (``BENCH_RABBIT``, default 127.0.0.1:5672), interleaving the
two publishers round by round, and prints the process CPU microseconds per
publish of each. A micro-benchmark: ``make bench`` measures the whole system.
"""

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import kombu.serialization  # noqa: E402
from kombu import Connection, Queue  # noqa: E402

from shared.publishers import ChannelPublisher  # noqa: E402
from shared.rpc import LeanPublisher  # noqa: E402

URI = f"amqp://guest:guest@{os.environ.get('BENCH_RABBIT', '127.0.0.1:5672')}/"
BODY = {"args": [1], "kwargs": {"user_id": 2}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    connection = Connection(URI)
    queue = Queue(
        f"bench-publish-{uuid.uuid4().hex[:8]}",
        channel=connection.channel(),
        queue_arguments={"x-max-length": 1000},  # what is published is dropped, not kept
    )
    queue.declare()
    headers = {"nameko.call_id_stack": ["gateway.get_order.1"], "x-rpc-deadline": time.time()}
    pooled = LeanPublisher(URI, use_confirms=False, delivery_mode=1)
    held = ChannelPublisher(URI)

    def through_pool():
        pooled.publish(
            BODY,
            exchange="",
            routing_key=queue.name,
            reply_to="reply",
            correlation_id="1",
            extra_headers=headers,
        )

    def on_held_channel():
        content_type, encoding, body = kombu.serialization.dumps(BODY, "json")
        held.publish(
            body,
            exchange="",
            routing_key=queue.name,
            content_type=content_type,
            content_encoding=encoding,
            reply_to="reply",
            correlation_id="1",
            headers=headers,
        )

    try:
        for number in range(1, args.rounds + 1):
            for name, publish in (
                ("kombu producer pool", through_pool),
                ("held channel", on_held_channel),
            ):
                publish()  # connected before the clock starts
                started = time.process_time()
                for _ in range(args.count):
                    publish()
                spent = (time.process_time() - started) / args.count * 1e6
                print(f"round {number}: {name:20} {spent:6.1f} us CPU per publish")
    finally:
        held.close()
        queue.delete()
        connection.release()


if __name__ == "__main__":
    main()
