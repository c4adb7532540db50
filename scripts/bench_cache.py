"""Speed and disk cost of the cache's image formats, and the cache's share of a cold image-job.

Part 1, formats: for 512 px RGB uint8 images (the shipped portraits, and "protected-like"
ones: each portrait plus uniform noise of +-8/255, rounded to 8 bits, which is what a
defense's release holds and what compresses worst), per candidate format, the milliseconds
per item of a save as the cache does it (encode, SHA-256 for the sidecar, write a temporary
file, rename) and of a load (read, SHA-256, decode), and the bytes on disk. Medians over
--repeats rounds; in each round every format runs once on every image, formats in turn
(interleaved), so that the machine's load drifts over all of them alike.

Candidates: PNG through Pillow at compress_level 1 (the cache's format before issue 26) and
0 (stored, no deflate), raw uint8 .npy, .npy deflated with zlib level 1 (stdlib; lz4 and
zstandard are not dependencies of bench), WebP lossless (Pillow, method 0).

Part 2, job share: the main thread's time inside the cache for a cold 512 px image-job, old
(PNG, written on the main thread) vs new (the cache as it is: .npy, written by the
background writer), next to the JPEG transform's own compute per image. Per image the job
does what a cold job with a transform does: store the clean image, the protected image,
T(x_adv) and T(x) (4 saves; a cold job's loads are misses and cost a stat), then a warm
job of the same sweep reads 3 entries back (x, x_adv, T(x_adv)): reported apart. The old
cache is the same class with its image format set to PNG and its writer off, so the
difference is the format and the thread, nothing else.

    python scripts/bench_cache.py [--repeats 7] [--size 512] [--jobs 5]
"""

import argparse
import contextlib
import hashlib
import io
import os
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmark.data.portraits import PortraitsDataset
from benchmark.images import from_uint8, to_uint8


def _png(level: int):
    def encode(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a, mode="RGB").save(buf, format="PNG", compress_level=level)
        return buf.getvalue()
    return encode


def _pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _npy_decode(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _webp(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode="RGB").save(buf, format="WEBP", lossless=True, method=0, quality=0)
    return buf.getvalue()


FORMATS = {
    "png level 1 (old)": (_png(1), _pil_decode),
    "png level 0": (_png(0), _pil_decode),
    "npy uint8 (new)": (_npy, _npy_decode),
    "npy + zlib 1": (lambda a: zlib.compress(_npy(a), 1), lambda d: _npy_decode(zlib.decompress(d))),
    "webp lossless m0": (_webp, _pil_decode),
}


def _save(path: Path, encode, a: np.ndarray) -> int:
    data = encode(a)
    hashlib.sha256(data).hexdigest()
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return len(data)


def _load(path: Path, decode) -> np.ndarray:
    data = path.read_bytes()
    hashlib.sha256(data).hexdigest()
    return decode(data)


def images(size: int) -> dict[str, list[np.ndarray]]:
    d = PortraitsDataset(resolution=size)
    clean = [to_uint8(d.load(i).x) for i in range(len(d))]
    g = np.random.default_rng(0)
    noisy = [np.clip(a.astype(np.int16) + g.integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
             for a in clean]
    return {"portraits": clean, "protected-like": noisy}


def formats(sets: dict, repeats: int, folder: Path) -> None:
    print(f"part 1: formats, {repeats} interleaved rounds, median ms per item\n")
    times = {(s, f, op): [] for s in sets for f in FORMATS for op in ("save", "load")}
    sizes = {(s, f): [] for s in sets for f in FORMATS}
    for r in range(repeats):
        for s, arrays in sets.items():
            for name, (encode, decode) in FORMATS.items():
                paths = [folder / f"{s}-{name.split()[0]}-{i}" for i in range(len(arrays))]
                start = time.perf_counter()
                nbytes = [_save(p, encode, a) for p, a in zip(paths, arrays)]
                times[s, name, "save"].append((time.perf_counter() - start) / len(arrays))
                start = time.perf_counter()
                back = [_load(p, decode) for p in paths]
                times[s, name, "load"].append((time.perf_counter() - start) / len(arrays))
                if r == 0:
                    assert all(np.array_equal(a, b) for a, b in zip(arrays, back)), name
                    sizes[s, name] = nbytes
    raw = next(iter(sets.values()))[0].nbytes
    for s, arrays in sets.items():
        print(f"{s} ({len(arrays)} images, raw {raw} bytes each)")
        print(f"  {'format':<20} {'save ms':>8} {'load ms':>8} {'KB/item':>8} {'disk':>6}")
        for name in FORMATS:
            save, load = (1000 * statistics.median(times[s, name, op]) for op in ("save", "load"))
            kb = statistics.mean(sizes[s, name]) / 1000
            print(f"  {name:<20} {save:>8.2f} {load:>8.2f} {kb:>8.0f} {kb * 1000 / raw:>5.2f}x")
        print()


class _Timed:
    """Accumulates the main thread's time in the cache calls a job makes, per method."""

    def __init__(self, cache):
        self.cache, self.seconds = cache, {}

    def __getattr__(self, name):
        method = getattr(self.cache, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start)
        return timed

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def _job(cache, xs: list[torch.Tensor], transform, behind: bool) -> dict[str, float]:
    """Seconds per image: the transform's compute, the main thread's time in each cache call
    of a cold job (the block's end: waiting for the writer), the whole cold job, warm reads."""
    from benchmark.cache import ArtifactCache

    timed = _Timed(cache)
    compute, keys = 0.0, []
    began = time.perf_counter()
    block = cache.write_behind() if behind else contextlib.nullcontext()
    with block:
        for i, x in enumerate(xs):
            mine = [hashlib.sha256(f"{i}-{k}".encode()).hexdigest() for k in range(4)]
            for stage, k in (("clean", mine[0]), ("protect", mine[1])):
                timed.has(stage, k, ArtifactCache.IMAGE)  # a cold job's miss
                timed.save_image(stage, k, x, {"config": {"image": i}})
            start = time.perf_counter()
            y = transform(torch.stack([x, x]), [i, i])  # T(x_adv) and T(x)
            compute += time.perf_counter() - start
            for k, yi in zip(mine[2:], y):
                timed.load_image("transform", k)  # a miss
                timed.save_image("transform", k, yi, {"config": {"image": i}})
            keys.append(mine)
        start = time.perf_counter()
    timed.add("end of block", time.perf_counter() - start)
    wall = time.perf_counter() - began
    cold = dict(timed.seconds)
    timed.seconds = {}
    for mine in keys:
        for stage, k in (("clean", mine[0]), ("protect", mine[1]), ("transform", mine[2])):
            assert timed.load_image(stage, k) is not None
    n = len(xs)
    return {"compute": compute / n, "save": cold["save_image"] / n,
            "miss": (cold["has"] + cold["load_image"]) / n, "end": cold["end of block"] / n,
            "cold": sum(cold.values()) / n, "wall": wall / n,
            "warm": timed.seconds["load_image"] / n}


def job_share(sets: dict, repeats: int, jobs: int, folder: Path) -> None:
    from benchmark.cache import ArtifactCache
    from benchmark.transforms.jpeg import JpegCompression

    transform = JpegCompression(quality=75)
    xs = [from_uint8(a) for a in sets["protected-like"]]
    runs: dict[str, list] = {"old": [], "new": []}
    for r in range(repeats * jobs):
        for name, measured in runs.items():
            cache = ArtifactCache(folder / f"job-{name}-{r}")
            if name == "old":
                cache.image_ext = ArtifactCache.PNG
            measured.append(_job(cache, list(xs), transform, behind=name == "new"))
    med = {name: {k: 1000 * statistics.median(v[k] for v in measured) for k in measured[0]}
           for name, measured in runs.items()}
    n = repeats * jobs
    print(f"part 2: a cold image-job at {xs[0].shape[-1]} px (per image: 4 saves, 4 misses, "
          f"JPEG of x_adv and x), {n} jobs of {len(xs)} images each way, interleaved; median "
          f"ms per image. old: PNG on the main thread; new: .rgb.npy written behind")
    cols = [("compute", "2 JPEG"), ("save", "4 saves"), ("miss", "4 misses"),
            ("end", "block end"), ("cold", "cache"), ("wall", "job wall")]
    print(f"  {'':<5}" + "".join(f"{label:>11}" for _, label in cols)
          + f"{'cache share':>12}{'warm: 3 loads':>15}")
    for name, m in med.items():
        share = m["cold"] / m["wall"]
        print(f"  {name:<5}" + "".join(f"{m[k]:>11.2f}" for k, _ in cols)
              + f"{100 * share:>11.0f}%{m['warm']:>15.2f}")
    new, old = med["new"], med["old"]
    print(f"  new / old: cache time of a cold job {new['cold'] / old['cold']:.3f}x, its share "
          f"{(new['cold'] / new['wall']) / (old['cold'] / old['wall']):.3f}x, job wall "
          f"{new['wall'] / old['wall']:.3f}x, warm loads {new['warm'] / old['warm']:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--jobs", type=int, default=1, help="jobs per repeat in part 2")
    parser.add_argument("--part", choices=["formats", "job", "both"], default="both")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = images(args.size)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        if args.part in ("formats", "both"):
            formats(sets, args.repeats, Path(tmp))
        if args.part in ("job", "both"):
            job_share(sets, args.repeats, args.jobs, Path(tmp))


if __name__ == "__main__":
    main()
