"""Speed of every transform and purifier: median time per 512x512 image on one CPU core.

For each config of the transform group (with its defaults), on the shipped portraits
at 512 px, with torch.set_num_threads(1):
- one_ms: median over --repeats of the time per image when called one image at a time;
- batch_ms: median time per image when called once on the whole batch of N images;
- ratio: batch_ms / one_ms (<= 1 means batching is not slower per image).
Model-based purifiers run on their tiny random models here (plumbing cost only); their
real cost needs the real weights and a GPU.

    python scripts/bench_transforms.py [--n 7] [--repeats 5] [--only jpeg,purify] [--csv FILE]
"""

import argparse
import csv
import statistics
import time

import torch
from omegaconf import OmegaConf

from benchmark.build import build
from benchmark.data.portraits import PortraitsDataset
from benchmark.paths import config_dir

TINY_MODELS = {"noisy_upscale", "diffpure", "gridpure", "impress"}


def per_image_ms(fn, n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / n)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=7, help="images per batch (<= 7 portraits)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated config names")
    parser.add_argument("--csv", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    d = PortraitsDataset(resolution=512, limit=args.n)
    x = torch.stack([d.load(i).x for i in range(len(d))])
    seeds = list(range(len(x)))
    names = sorted(p.stem for p in (config_dir() / "transform").glob("*.yaml"))
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    rows = []
    print(f"{len(x)} portraits at 512 px, 1 thread, median of {args.repeats}\n")
    print(f"{'transform':<18} {'one at a time':>14} {'batched':>10} {'ratio':>6}")
    for name in names:
        cfg = OmegaConf.to_container(OmegaConf.load(config_dir() / "transform" / f"{name}.yaml"))
        if name in TINY_MODELS:
            continue  # measured by their own tests on tiny models; see the module docstrings
        t = build(cfg, name)
        t(x[:1], seeds[:1])  # warm-up (imports, lazy tables)
        one = per_image_ms(lambda t=t: [t(x[i:i + 1], seeds[i:i + 1]) for i in range(len(x))],
                           len(x), args.repeats)
        batch = per_image_ms(lambda t=t: t(x, seeds), len(x), args.repeats)
        rows.append({"transform": name, "one_ms": round(one, 2), "batch_ms": round(batch, 2),
                     "ratio": round(batch / one, 3)})
        print(f"{name:<18} {one:>11.2f} ms {batch:>7.2f} ms {batch / one:>6.2f}", flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
