"""How big and how long a benchmark run is: its command line, parsed once."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench.load import available_generator

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("documents", "create", "order-to-sms", "confirm", "my-orders", "drain")


@dataclass(frozen=True)
class Settings:
    """How big and how long; `--smoke` makes everything tiny."""

    smoke: bool
    duration: float
    warmup: float
    connections: int
    latency_connections: int
    loadgen: str
    small_orders: int
    large_orders: int
    drain_count: int
    order_rate: float
    worker_pool: str | None
    worker_concurrency: int | None
    worker_processes: int
    profile: bool
    only: tuple[str, ...]
    results_path: Path
    log_dir: Path

    @property
    def confirm_orders(self) -> tuple[int, int]:
        """Orders prepared per confirm warm-up and per measurement: more than can be used."""
        return max(300, int(1500 * self.warmup)), max(1000, int(1500 * self.duration))

    @property
    def order_to_sms_seconds(self) -> float:
        """The order-to-SMS measurement is three times as long as the others: its p99 is
        then the 30th worst of 3,000 orders, not the 10th of 1,000."""
        return 3 * self.duration


def parse_settings(argv: list[str] | None, doc: str) -> Settings:
    """The settings of `python -m bench.run`; `doc` is its usage text (first paragraph: the
    description, the rest: the epilog)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1],
    )
    parser.add_argument("--smoke", action="store_true", help="seconds-long run, tiny data")
    parser.add_argument("--duration", type=float, help="seconds per measurement (10; smoke 1.5)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each (2; 0.5)")
    parser.add_argument("--connections", type=int, default=16, help="for throughput (16)")
    parser.add_argument("--latency-connections", type=int, default=4, help="for latency (4)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--small-orders", type=int, help="myOrders small customer (10,000)")
    parser.add_argument("--large-orders", type=int, help="myOrders large customer (1,000,000)")
    parser.add_argument("--drain", type=int, help="SMS and no-op tasks to drain (5,000)")
    parser.add_argument(
        "--order-rate",
        type=float,
        default=100.0,
        help="orders/s of the order-to-SMS phase, a fixed arrival rate (100)",
    )
    parser.add_argument("--worker-pool", help="override the Procfile worker's --pool")
    parser.add_argument("--worker-concurrency", type=int, help="override its --concurrency")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="run the Procfile's worker (and the no-op worker) this many times, scaled out (1)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the web workers under createOrder load"
    )
    parser.add_argument(
        "--only",
        type=lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
        default=PHASES,
        metavar="PHASES",
        help=f"comma-separated phases to run, of {','.join(PHASES)} (all); memory always",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "var" / "bench")
    args = parser.parse_args(argv)
    if unknown := set(args.only) - set(PHASES):
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; of {', '.join(PHASES)}")
    if args.order_rate <= 0:
        parser.error("--order-rate must be positive")
    smoke = args.smoke
    return Settings(
        smoke=smoke,
        duration=args.duration or (1.5 if smoke else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if smoke else 2.0),
        connections=args.connections,
        latency_connections=args.latency_connections,
        loadgen=available_generator(args.loadgen),
        small_orders=args.small_orders or (100 if smoke else 10_000),
        large_orders=args.large_orders or (1_000 if smoke else 1_000_000),
        drain_count=args.drain or (200 if smoke else 5_000),
        order_rate=args.order_rate,
        worker_pool=args.worker_pool,
        worker_concurrency=args.worker_concurrency,
        worker_processes=args.worker_processes,
        profile=args.profile,
        only=tuple(phase for phase in PHASES if phase in args.only),
        results_path=args.results,
        log_dir=args.log_dir,
    )
