"""Publish Celery tasks to a queue from a process of its own, as fast as one connection can.

    python -m bench.publish --broker redis://... --queue Q --relay --ids-file F
    python -m bench.publish --broker redis://... --queue Q --task bench.noop --count 5000

With --relay the notification ids in the file go out exactly as the web process's outbox relay
sends them (`models.outbox.Relay.publish`, a full pipeline at a time: batch tasks of twenty ids).
With --task, one task per line of --ids-file (its single argument), or --count tasks without
arguments, from a bare Celery app of its own (only the broker URL and JSON).
Prints one JSON line: {"published": N, "started": epoch, "finished": epoch}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from celery import Celery


def publish(broker: str, queue: str, task: str, args_list: list[tuple[str, ...]]) -> dict:
    """Send one task per entry of `args_list` over one pooled producer; return the timings."""
    app = Celery("bench-publisher", broker=broker, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True)
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=3)
        with app.producer_or_acquire() as producer:
            started = time.time()
            for args in args_list:
                app.send_task(task, args=args, queue=queue, producer=producer)
            finished = time.time()
    return {"published": len(args_list), "started": started, "finished": finished}


def relay(broker: str, queue: str, ids: list[str]) -> dict:
    """Publish `ids` through the service's own outbox relay, as its thread would."""
    from models.outbox import PUBLISH_BATCH, Relay, batches  # the service, only for this mode

    publisher = Relay(Celery("bench-relay", broker=broker, set_as_current=False), queue)
    started = time.time()
    for pipeline in batches(ids, PUBLISH_BATCH):
        publisher.publish(pipeline)
    finished = time.time()
    return {"published": publisher.published, "started": started, "finished": finished}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--queue", required=True)
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--task")
    how.add_argument("--relay", action="store_true", help="ids as the outbox relay sends them")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ids-file", type=Path)
    source.add_argument("--count", type=int)
    args = parser.parse_args(argv)
    if args.relay:
        if args.ids_file is None:
            parser.error("--relay needs --ids-file")
        ids = args.ids_file.read_text().split()
        print(json.dumps(relay(args.broker, args.queue, ids)), flush=True)
        return 0
    if args.ids_file is not None:
        lines = args.ids_file.read_text().split()
        args_list: list[tuple[str, ...]] = [(line,) for line in lines]
    else:
        args_list = [()] * args.count
    print(json.dumps(publish(args.broker, args.queue, args.task, args_list)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
