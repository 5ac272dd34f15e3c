"""Benchmark: how long Snakemake takes to plan a 10,000-point grid (a dry run, no training).

A sweep on a cluster is planned once on the submit host; this is the time a user waits
before the first job is queued. The config is config/quick.yaml with one dataset and a
10 × 10 × 100 grid (hidden_size × lr × seed), planned in a temporary directory, so nothing
in the checkout changes. Prints the figure and writes it, with the machine, to --out.

    python scripts/bench_dag.py --out results/bench/dag.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from statetrain.scripting import cpu_model

ROOT = Path(__file__).resolve().parent.parent


def grid_config(points: int) -> dict:
    """config/quick.yaml, one dataset, a grid of `points` runs (a multiple of 100)."""
    cfg = yaml.safe_load((ROOT / "config" / "quick.yaml").read_text())
    first = next(iter(cfg["datasets"]))
    cfg["datasets"] = {first: cfg["datasets"][first]}
    cfg["experiment"] = "bench_dag"
    seeds = max(points // 100, 1)
    cfg["grid"] = {
        "hidden_size": list(range(8, 108, 10)),
        "lr": [round(0.001 * (i + 1), 6) for i in range(10)],
        "seed": list(range(seeds)),
    }
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000, help="grid points (×100)")
    parser.add_argument("--out", default="results/bench/dag.json", help="JSON report")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "grid.yaml"
        config.write_text(yaml.safe_dump(grid_config(args.points)))
        cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
        cmd += ["-d", tmp, "--configfile", str(config), "-n", "--quiet", "rules"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"the dry run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    jobs = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            jobs[parts[0]] = int(parts[1])
    report = {
        "what": "snakemake dry run (-n) of a grid on config/quick.yaml, one dataset",
        "grid_points": args.points,
        "jobs": jobs,
        "seconds": round(seconds, 1),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    total = jobs.get("total", sum(jobs.values()))
    print(
        f"{args.points:,}-point grid: {total:,} jobs planned in {seconds:.1f} s "
        f"({report['cpu']}, load {report['load_average_1min']}) -> {out}"
    )


if __name__ == "__main__":
    main()
