"""Cold vs warm sweep: the warm re-run must compute nothing and take < 5% of the cold run.

Runs `bench run -m defense=none,noise,photoguard_encoder transform=identity,jpeg,resize`
(9 jobs of the offline default) in a fresh cache (cold), then the same sweep again
(warm), each as a separate `bench` process, and reports wall times, their ratio
(median over --repeats) and the stage counts of the warm jobs from stats.json.

    python scripts/bench_sweep.py [--repeats 3] [extra overrides...]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["defense=none,noise,photoguard_encoder", "transform=identity,jpeg,resize"]


def run_sweep(workdir: Path, cache: Path, extra: list[str], tag: str) -> tuple[float, Path]:
    sweep_dir = workdir / tag
    cmd = ["bench", "run", "-m", *SWEEP, "progress=false", f"hydra.sweep.dir={sweep_dir}", *extra]
    env = {**os.environ, "BENCH_CACHE": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                          check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds, sweep_dir


def stage_totals(sweep_dir: Path) -> dict:
    totals: dict[str, dict[str, int]] = {}
    jobs = sorted(sweep_dir.rglob("stats.json"))
    for path in jobs:
        for stage, s in json.loads(path.read_text())["stages"].items():
            t = totals.setdefault(stage, {"computed": 0, "cached": 0})
            t["computed"] += s["computed"]
            t["cached"] += s["cached"]
    return {"jobs": len(jobs), **totals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    ratios, colds, warms = [], [], []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            tmp = Path(tmp)
            cold, _ = run_sweep(tmp, tmp / "cache", args.overrides, "cold")
            warm, warm_dir = run_sweep(tmp, tmp / "cache", args.overrides, "warm")
            totals = stage_totals(warm_dir)
            computed = sum(v["computed"] for k, v in totals.items() if k != "jobs")
            print(f"run {i + 1}: cold {cold:.1f}s  warm {warm:.1f}s  ratio {warm / cold:.3f}  "
                  f"warm stages {totals}")
            if computed:
                sys.exit(f"warm sweep computed {computed} items: the cache missed")
            colds.append(cold)
            warms.append(warm)
            ratios.append(warm / cold)
    print(f"median over {args.repeats}: cold {statistics.median(colds):.1f}s, "
          f"warm {statistics.median(warms):.1f}s, warm/cold {statistics.median(ratios):.3f} "
          f"(target < 0.05)")


if __name__ == "__main__":
    main()
