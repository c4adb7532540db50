"""Old vs new on the same sweeps, in one run (issue 26): seconds per job and per image-job.

Two sweeps, each run by the old code (a git revision, checked out into a temporary folder and
put first on PYTHONPATH) and by this checkout, interleaved, in fresh folders:

- trivial: 40 jobs (transform=jpeg at 40 qualities) of one 64 px image, PSNR only;
- images: 10 jobs (noise, then JPEG at 10 qualities) of 16 portraits at 512 px (the shipped
  portraits, mirrored and re-cropped into a folder dataset), PSNR and SSIM;

each cold (empty cache, new sweep folder) then warm (the same command again in the same sweep
folder: every job finished), with 1 and 2 threads, and with one competing CPU-bound process
(`--load`). Prints one line per run and the medians over --repeats with the ratios new/old.

    python scripts/bench_sweep_scale.py --old 40c7b79 [--repeats 3] [--only trivial]
"""

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
QUALITIES = ",".join(str(q) for q in range(50, 90))
SWEEPS = {
    "trivial": (40, 1, ["defense=none", "transform=jpeg", f"transform.quality={QUALITIES}",
                        "dataset.limit=1", "dataset.resolution=64", "metric=[psnr]",
                        "pairs=[fidelity]"]),
    "images": (10, 16, ["defense=noise", "transform=jpeg",
                        "transform.quality=" + ",".join(str(q) for q in range(40, 100, 6)),
                        "dataset=folder", "dataset.resolution=512", "metric=[psnr,ssim]",
                        "pairs=[fidelity,invisibility]"]),
}


def sixteen_portraits(folder: Path) -> Path:
    """16 distinct photos of at least 512 px from the 7 shipped ones (mirrored, cropped)."""
    from benchmark.paths import portraits_dir

    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted(p for p in portraits_dir().iterdir() if p.suffix.lower() in (".jpg", ".png"))
    made = 0
    for variant in range(3):
        for photo in photos:
            if made == 16:
                return folder
            img = Image.open(photo).convert("RGB")
            if variant == 1:
                img = ImageOps.mirror(img)
            if variant == 2:
                w, h = img.size
                img = img.crop((w // 20, h // 20, w - w // 20, h - h // 20))
            img.save(folder / f"p{made:02d}.png")
            made += 1
    return folder


def checkout(revision: str, into: Path) -> Path:
    """The old code: `git archive` of the revision, unpacked (its configs and package)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True,
                             capture_output=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def burn(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10000))


def run(code: Path | None, workdir: Path, sweep: str, threads: int, data: Path) -> float:
    _, _, overrides = SWEEPS[sweep]
    # dataset=folder reads BENCH_DATA
    env = {**os.environ, "BENCH_CACHE": str(workdir / "cache"), "BENCH_DATA": str(data)}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "-m", *overrides, "progress=false",
           f"threads={threads}", f"hydra.sweep.dir={workdir / 'sweep'}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({'old' if code else 'new'}):\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="git revision of the old code")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(SWEEPS), action="append")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--load", choices=["none", "one", "both"], default="both",
                        help="run without, with, or both without and with a competing process")
    args = parser.parse_args()
    loads = {"none": [False], "one": [True], "both": [False, True]}[args.load]
    results: dict[tuple, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        tmp = Path(tmp)
        old = checkout(args.old, tmp / "old")
        data = sixteen_portraits(tmp / "portraits")
        for rep in range(args.repeats):
            for sweep in args.only or sorted(SWEEPS):
                jobs, images, _ = SWEEPS[sweep]
                for threads in args.threads:
                    for loaded in loads:
                        stop = multiprocessing.Event()
                        burner = multiprocessing.Process(target=burn, args=(stop,), daemon=True)
                        if loaded:
                            burner.start()
                        try:
                            for name, code in (("old", old), ("new", None)):
                                work = tmp / f"{name}-{sweep}-{threads}-{loaded}-{rep}"
                                work.mkdir()
                                for phase in ("cold", "warm"):
                                    s = run(code, work, sweep, threads, data)
                                    key = (sweep, threads, loaded, phase, name)
                                    results.setdefault(key, []).append(s)
                                    print(f"{rep + 1} {sweep:<7} threads={threads} "
                                          f"load={'yes' if loaded else 'no ':<3} {phase} {name}: "
                                          f"{s:6.1f}s  {s / jobs:.3f}s/job  "
                                          f"{s / (jobs * images):.3f}s/image-job", flush=True)
                        finally:
                            stop.set()
                            if loaded:
                                burner.join()
    print(f"\nmedians of {args.repeats} (s per job; s per image-job; new/old):")
    for key in sorted({k[:4] for k in results}):
        sweep, threads, loaded, phase = key
        jobs, images, _ = SWEEPS[sweep]
        o, n = (statistics.median(results[(*key, v)]) for v in ("old", "new"))
        print(f"{sweep:<7} threads={threads} load={'yes' if loaded else 'no ':<3} {phase}: "
              f"old {o / jobs:.3f} / {o / (jobs * images):.4f}  new {n / jobs:.3f} / "
              f"{n / (jobs * images):.4f}  ratio {n / o:.2f}  (whole sweep: old {o:.1f}s, "
              f"new {n:.1f}s)")


if __name__ == "__main__":
    main()
