"""Run one benchmark command several times and summarise its JSON lines; prints ONE JSON line.

Every figure in bench/RESULTS.md is the median of at least five runs on an otherwise idle machine.
This runs COMMAND --runs times, one after another, each in a fresh process, takes the last line of
each run's standard output that parses as a JSON object, and prints one JSON line: the command, the
number of runs, the median of every numeric field (nested fields joined with "."), and every run's
line, so that the record can be checked against the runs it came from.

usage: python bench/repeat.py [--runs 5] [--out runs.jsonl] -- python bench/search.py --tiles 100000
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path


def last_json_line(stdout: str) -> dict:
    """The last line of ``stdout`` that is a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    raise ValueError("the command printed no JSON object line")


def numeric_fields(value: object, prefix: str = "") -> dict[str, float]:
    """Every int/float leaf of a JSON object, keyed by its dotted path (booleans left out)."""
    found: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found.update(numeric_fields(item, f"{prefix}{key}."))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.update(numeric_fields(item, f"{prefix}{i}."))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        found[prefix.rstrip(".")] = float(value)
    return found


def medians(lines: list[dict]) -> dict[str, float]:
    """Median over runs of each numeric field present in every run."""
    fields = [numeric_fields(line) for line in lines]
    common = [key for key in fields[0] if all(key in f for f in fields)]
    return {key: round(statistics.median(f[key] for f in fields), 4) for key in common}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also append every run's JSON line to this file")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the benchmark command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the benchmark command after --")
    lines, walls = [], []
    for run in range(args.runs):
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True)
        walls.append(round(time.monotonic() - started, 1))
        if done.returncode != 0:
            sys.exit(f"repeat: run {run + 1} of {shlex.join(command)} failed (exit {done.returncode}): "
                     f"{done.stderr.strip().splitlines()[-1:] or ''}")
        line = last_json_line(done.stdout)
        lines.append(line)
        if args.out:
            with args.out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        print(f"run {run + 1}/{args.runs}: {walls[-1]} s", file=sys.stderr)
    print(json.dumps({"command": shlex.join(command), "runs": args.runs, "wall_s": walls,
                      "median": medians(lines), "lines": lines}))


if __name__ == "__main__":
    main()
