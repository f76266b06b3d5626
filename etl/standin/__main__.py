"""Run the stand-in API until Ctrl-C: `python -m etl.standin --port 8080 --seed 42`."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Sequence

from etl.standin.data import DEMO_INFERENCE_KEY, DEMO_MANAGEMENT_KEY, Dataset
from etl.standin.server import FAULT_KINDS, StandIn


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m etl.standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=42, help="data seed (same seed, same data)")
    parser.add_argument("--keys", type=int, default=3, help="number of API keys in the fake account")
    parser.add_argument("--history-days", type=int, default=150, help="age of the oldest key: how far back the account has history")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before every answer")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that fail (0..1)")
    parser.add_argument(
        "--fault-kinds",
        default="",
        help=f"comma-separated kinds for random faults (default: 429,500,502,503,reset,truncate,slow); "
        f"known: {','.join(sorted(FAULT_KINDS))}",
    )
    parser.add_argument("--fault-seed", type=int, default=0)
    parser.add_argument("--date-style", choices=("plain", "live", "mixed"), default="mixed")
    parser.add_argument("--float-counts", choices=("never", "always", "mixed"), default="mixed")
    parser.add_argument("--clock-offset-days", type=int, default=0, help="serve as if today were N days later (negative: earlier)")
    parser.add_argument("--page-size", type=int, default=2, help="keys per page of GET /keys")
    parser.add_argument("--management-key", default=DEMO_MANAGEMENT_KEY)
    parser.add_argument("--inference-key", default=DEMO_INFERENCE_KEY)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    kinds = [kind.strip() for kind in args.fault_kinds.split(",") if kind.strip()] or None
    standin = StandIn(
        Dataset(seed=args.seed, keys=args.keys, first_key_age_days=args.history_days),
        host=args.host,
        port=args.port,
        management_key=args.management_key,
        inference_key=args.inference_key,
        latency=args.latency,
        date_style=args.date_style,
        float_counts=args.float_counts,
        page_size=args.page_size,
        fault_rate=args.fault_rate,
        fault_kinds=kinds,
        fault_seed=args.fault_seed,
        clock_offset_days=args.clock_offset_days,
    )
    with standin:
        print(f"OpenRouter stand-in serving at {standin.base_url}", flush=True)
        print(f"Management key: {standin.management_key}", flush=True)
        print(f"Inference key:  {standin.inference_key}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("\nStopping.", flush=True)


if __name__ == "__main__":
    main()
