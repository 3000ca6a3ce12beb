"""Worker: generates the demo data of one benchmark size (billing_pipeline.demo_data.generate).

The folder is marked complete (`.complete.json` with the arguments) only after every file is
written, so an interrupted generation is redone, not reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from benchmarks.common import write_json

MARKER = ".complete.json"


def params(contracts: int, facilities: int, seed: int, start: dt.date) -> dict:
    return {"contracts": contracts, "facilities": facilities, "seed": seed, "start": start.isoformat()}


def is_complete(out: Path, expected: dict) -> bool:
    marker = out / MARKER
    if not marker.exists():
        return False
    return json.loads(marker.read_text()).get("params") == expected


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--contracts", type=int, required=True)
    parser.add_argument("--facilities", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()

    from billing_pipeline.demo_data import generate

    (args.out / MARKER).unlink(missing_ok=True)
    started = time.perf_counter()
    rows = generate(args.out, contracts=args.contracts, facilities=args.facilities, seed=args.seed,
                    start=args.start, progress=True)
    seconds = time.perf_counter() - started
    p = params(args.contracts, args.facilities, args.seed, args.start)
    payload = {"params": p, "rows": rows, "generate_s": seconds,
               "bytes": sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())}
    write_json(args.out / MARKER, payload)
    write_json(args.result, payload)


if __name__ == "__main__":
    main()
