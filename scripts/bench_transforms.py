"""Speed of every transform and purifier: median time per 512x512 image on one CPU core.

For each config of the transform group (with its defaults), on the shipped portraits
at 512 px, with torch.set_num_threads(1):
- one_ms: median over --repeats of the time per image when called one image at a time;
- batch_ms: median time per image when called once on the whole batch of N images;
- ratio: batch_ms / one_ms (<= 1 means batching is not slower per image).
Model-based purifiers run on their tiny random models here (plumbing cost only); their
real cost needs the real weights and a GPU.

    python scripts/bench_transforms.py [--n 7] [--repeats 5] [--only jpeg,purify] [--csv FILE]

`--purifiers` instead compares the study's purifier with the others on the FULL-SIZE
architectures with random weights (GPU when there is one, else CPU with all threads):
seconds per 512 px portrait, median of --repeats, one image at a time, for tip_rsr
(GFPGAN v1.3, Real-ESRGAN x4plus, BiSeNet: random/* built-ins, template landmarks so
that the face branch always runs), its transformation stage alone (tip_rsr_jpeg_resize),
purify, and DiffPure / GrIDPure on the SD 1.5 architecture (random/sd-v1-5). GrIDPure's
20 iterations are timed as `--gridpure-iterations` (default 1) and scaled linearly to 20
(each iteration is the same work: every 256 px patch denoised t = 10 steps), and say so.

    python scripts/bench_transforms.py --purifiers [--repeats 3] [--csv FILE]
"""

import argparse
import csv
import statistics
import time

import torch

from benchmark.build import build
from benchmark.data.portraits import PortraitsDataset
from benchmark.paths import config_dir
from benchmark.transforms.chain import transform_config

TINY_MODELS = {"noisy_upscale", "diffpure", "gridpure", "impress", "tip_rsr"}
FULL_SIZE = {
    "tip_rsr": ["transform=tip_rsr", "transform.restorer.model=random/gfpgan-v1.3",
                "transform.upsampler.model=random/realesrgan-x4plus",
                "transform.parser.model=random/bisenet", "transform.landmarks=template"],
    "tip_rsr_jpeg_resize": ["transform=tip_rsr_jpeg_resize"],
    "purify": ["transform=purify"],
    "diffpure": ["transform=diffpure", "transform.model=random/sd-v1-5"],
    "gridpure": ["transform=gridpure", "transform.model=random/sd-v1-5"],
}


def per_image_ms(fn, n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / n)
    return 1000 * statistics.median(times)


def seconds_per_image(t, x, seeds, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(x)):
            t(x[i:i + 1], seeds[i:i + 1])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / len(x))
    return statistics.median(times)


def compare_purifiers(args) -> None:
    from hydra import compose, initialize_config_dir

    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = (torch.cuda.get_device_name() if device == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    d = PortraitsDataset(resolution=512, limit=args.n)
    x = torch.stack([d.load(i).x for i in range(len(d))]).to(device)
    seeds = list(range(len(x)))
    print(f"{len(x)} portrait(s) at 512 px on {where}, RANDOM full-size weights, "
          f"median of {args.repeats}\n")
    rows = []
    with initialize_config_dir(str(config_dir()), version_base=None):
        for name, overrides in FULL_SIZE.items():
            if args.only and name not in args.only.split(","):
                continue
            extra = []
            if name == "gridpure":
                extra = [f"transform.iterations={args.gridpure_iterations}"]
            cfg = compose("config", overrides=[*overrides, *extra, f"device={device}"])
            t = build(cfg.transform, name)
            t(x[:1], seeds[:1])  # warm-up: network construction, kernels
            seconds = seconds_per_image(t, x, seeds, args.repeats)
            note = ""
            if name == "gridpure":
                measured, seconds = seconds, seconds * 20 / args.gridpure_iterations
                note = (f"measured {measured:.2f} s with {args.gridpure_iterations} iteration(s), "
                        f"scaled to 20")
            rows.append({"purifier": name, "seconds_per_image": round(seconds, 4),
                         "device": where, "note": note})
            print(f"{name:<20} {seconds:>10.3f} s/image  {note}", flush=True)
            del t
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=7, help="images per batch (<= 7 portraits)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated config names")
    parser.add_argument("--csv", default="")
    parser.add_argument("--purifiers", action="store_true",
                        help="tip_rsr vs purify, diffpure, gridpure on full-size random networks")
    parser.add_argument("--gridpure-iterations", type=int, default=1)
    args = parser.parse_args()
    if args.purifiers:
        args.n = min(args.n, 1) if args.n == 7 else args.n
        compare_purifiers(args)
        return
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
        if name in TINY_MODELS:
            continue  # measured by their own tests on tiny models; see the module docstrings
        cfg = transform_config(name, name, scale="full", device="cpu")  # as `transform=<name>`
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
