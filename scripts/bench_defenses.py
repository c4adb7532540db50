"""Speed and memory of every diffusion-targeted defense: seconds per image, peak memory.

Default: full-size Stable Diffusion 1.5 architectures (UNet 860M, VAE 84M, CLIP
ViT-L/14 text encoder) with RANDOM weights, which time the same as real ones:
the model layer's built-in `random/sd-v1-5`, `random/sd-v1-5-inpaint` (9-channel
UNet) and `random/instruct-pix2pix` (8-channel UNet), at 512 px, each defense at its published settings except the number of
iterations: the script runs `--iterations` of them and extrapolates to the
published count (the cost per iteration is constant). Precisions: fp32 weights
with the attack in fp32, or under fp16 / bf16 autocast (`precision`).

    python scripts/bench_defenses.py                       # GPU, 512 px, fp32 + fp16
    python scripts/bench_defenses.py --precisions fp32,bf16 --defenses advdm,sds
    python scripts/bench_defenses.py --tiny                # CPU smoke run: tiny models, 64 px

Peak memory: torch.cuda.max_memory_allocated per run on CUDA; on CPU the
process's peak resident set size so far (monotone, so an upper bound per row).
Writes a CSV (`--out`) and prints a Markdown table.
"""

import argparse
import csv
import gc
import resource
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (factory kwargs, published iterations, the model kind it attacks)
DEFENSES = {
    "photoguard_encoder": ({}, 1000, "sd"),
    "photoguard_diffusion": ({"grad_samples": 10}, 200, "inpaint"),
    "advdm": ({}, 100, "sd"),
    "mist": ({}, 100, "sd"),
    "sds": ({}, 100, "sd"),
    "sdst": ({"textural": True}, 100, "sd"),
    "diffusionguard": ({}, 800, "inpaint"),
    "editshield": ({}, 30, "ip2p"),
    "facelock": ({}, 100, "ip2p"),
}
# the loader's built-in random models (benchmark/models/tiny.py): no weights files needed
MODELS = {"sd": "random/sd-v1-5", "inpaint": "random/sd-v1-5-inpaint",
          "ip2p": "random/instruct-pix2pix"}
TINY_MODELS = {"sd": "tiny/sd", "inpaint": "tiny/sd-inpaint", "ip2p": "tiny/instruct-pix2pix"}


def make_defense(name: str, model: str, tiny: bool, device: torch.device, iterations: int,
                 precision: str):
    from benchmark.defenses.advdm import AdvDM
    from benchmark.defenses.diffusionguard import DiffusionGuard
    from benchmark.defenses.editshield import EditShield
    from benchmark.defenses.facelock import FaceLock
    from benchmark.defenses.mist import Mist
    from benchmark.defenses.photoguard import PhotoGuardDiffusion, PhotoGuardEncoder
    from benchmark.defenses.sds import ScoreDistillation

    extra, _, _ = DEFENSES[name]
    if name == "photoguard_encoder":  # its precision is the encoder's dtype
        dtype = "fp32" if precision == "fp32" else precision
        return PhotoGuardEncoder({"_target_": "benchmark.models.encoders.SDVaeEncoder",
                                  "model": model, "dtype": dtype, "device": str(device)},
                                 iterations=iterations)
    common = {"model": model, "iterations": iterations, "device": str(device),
              "precision": precision, **extra}
    if name == "facelock":
        # the recogniser is a small random CNN here: FaceLock's own (AdaFace ViT-B at 112 px)
        # is not available offline; LPIPS's VGG runs with untrained weights (same cost)
        common.update(face_model="random", lpips_random_backbone=True,
                      lpips_net="squeeze" if tiny else "vgg")
    if name == "photoguard_diffusion" and tiny:
        common.update(grad_samples=2, steps=2)
    cls = {"photoguard_diffusion": PhotoGuardDiffusion, "advdm": AdvDM, "mist": Mist,
           "sds": ScoreDistillation, "sdst": ScoreDistillation, "diffusionguard": DiffusionGuard,
           "editshield": EditShield, "facelock": FaceLock}[name]
    return cls(**common)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run(args) -> list[dict]:
    device = torch.device(args.device if args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    size = 64 if args.tiny else args.size
    names = args.defenses.split(",") if args.defenses else list(DEFENSES)
    unknown = [n for n in names if n not in DEFENSES]
    if unknown:
        raise SystemExit(f"unknown defenses {unknown}; choose from {list(DEFENSES)}")
    x = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    seeds = list(range(args.batch))
    rows = []
    for name in names:
        _, published, kind = DEFENSES[name]
        model = (TINY_MODELS if args.tiny else MODELS)[kind]
        for precision in args.precisions.split(","):
            d = make_defense(name, model, args.tiny, device, args.iterations, precision)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            if hasattr(d, "parts"):  # load (build) the models outside the timed region
                _ = d.parts
            if args.warmup:  # first calls build kernels and caches: one iteration, untimed
                d.pgd.iterations = 1
                d.protect(x[:1], seeds[:1])
                d.pgd.iterations = args.iterations
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            error = ""
            try:
                d.protect(x, seeds)
            except torch.OutOfMemoryError as e:
                error = f"out of memory: {str(e).splitlines()[0][:80]}"
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            per_iteration = seconds / args.batch / args.iterations
            rows.append({
                "defense": name, "precision": precision, "device": torch.cuda.get_device_name(device)
                if device.type == "cuda" else "cpu", "size": size, "batch": args.batch,
                "model": model,
                "iterations_run": args.iterations, "published_iterations": published,
                "s_per_iteration_per_image": round(per_iteration, 4),
                "s_per_image_published": round(per_iteration * published, 2),
                "peak_memory_gib": round(peak_memory_gib(device), 2), "error": error})
            print(f"{name:<22} {precision:<5} {per_iteration:8.4f} s/it/img  "
                  f"{per_iteration * published:9.2f} s/img @ {published} it  "
                  f"{rows[-1]['peak_memory_gib']:7.2f} GiB {error}", flush=True)
            del d
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def markdown(rows: list[dict]) -> str:
    head = ["defense", "precision", "device", "size", "s_per_iteration_per_image",
            "published_iterations", "s_per_image_published", "peak_memory_gib", "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help="tiny random models at 64 px on the CPU (a smoke run, not a timing)")
    parser.add_argument("--defenses", default="", help="comma-separated subset")
    parser.add_argument("--precisions", default=None, help="e.g. fp32,fp16 (default: fp32,fp16 "
                        "on CUDA, fp32,bf16 on CPU)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="iterations run per defense (default 5; 1 with --tiny)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    parser.add_argument("--out", default=None, help="CSV file for the rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.iterations is None:
        args.iterations = 1 if args.tiny else 5
    if args.precisions is None:
        args.precisions = "fp32,fp16" if torch.cuda.is_available() and args.device != "cpu" \
            else "fp32,bf16"
    if args.tiny:
        args.device = "cpu" if args.device == "auto" else args.device
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rows = run(args)
    print()
    print(markdown(rows))
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"\nwrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
