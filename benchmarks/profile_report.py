"""Summarizes a py-spy raw (collapsed stacks) profile: inclusive and self share per function/line.

    .venv/bin/python -m benchmarks.profile_report benchmarks/results/profile_10000000.txt [--top 30]
        [--under charge]   # only stacks through a frame whose text contains this

`run.py --profile` writes such files (py-spy record --format raw); `py-spy record --pid PID
--format raw` on a running worker does too.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
NOISE = ("Timers.wrap.<locals>.timed", "_run_module_as_main", "_run_code", "<module>")


def parse(path: Path, under: str | None) -> tuple[list[tuple[list[str], int]], int]:
    stacks = []
    total = 0
    for raw in path.read_text().splitlines():
        if not raw.strip():
            continue
        frames_text, _, count = raw.rpartition(" ")
        frames = [f for f in frames_text.split(";") if f and not f.startswith(NOISE)]
        if under is not None:
            idx = next((i for i, f in enumerate(frames) if under in f), None)
            if idx is None:
                continue
            frames = frames[idx:]
        stacks.append((frames, int(count)))
        total += int(count)
    return stacks, total


def function_of(frame: str) -> str:
    m = FRAME.match(frame)
    return f"{m['func']} ({m['file']})" if m else frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--under", help="only stacks through a frame containing this text")
    args = parser.parse_args()
    stacks, total = parse(args.profile, args.under)
    inclusive_fn: Counter[str] = Counter()
    self_line: Counter[str] = Counter()
    for frames, count in stacks:
        for fn in {function_of(f) for f in frames}:
            inclusive_fn[fn] += count
        if frames:
            self_line[frames[-1]] += count
    print(f"{total} samples{' under ' + args.under if args.under else ''}")
    print("\ninclusive, by function:")
    for fn, n in inclusive_fn.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {fn}")
    print("\nself (leaf frame, with line):")
    for frame, n in self_line.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
