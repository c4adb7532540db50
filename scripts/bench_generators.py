"""Speed and memory of the SD img2img editor: seconds per image and peak GPU memory, fp32 vs fp16.

Runs bench's own `SDImg2Img` generator (the code path of `generator=sd_img2img`)
on the full-size Stable Diffusion 1.5 architecture with random weights
(`random/sd-v1-5`: no download needed; speed and memory do not depend on the
weights' values) at 512 px with 50 steps, for batch sizes 1 and 8, in fp32 and
fp16. It also reports how far the fp16 (and, with --compile, the compiled)
outputs are from fp32 for the same seeds; with random weights that distance is
only indicative.

    python scripts/bench_generators.py                       # GPU: the full measurement
    python scripts/bench_generators.py --compile             # adds torch.compile rows
    python scripts/bench_generators.py --tiny                # CPU smoke run (tiny/sd, 64 px)

Writes a JSON record with --json FILE.
"""

import argparse
import gc
import json
import platform
import resource
import time

import torch

from benchmark.generators.sd_img2img import SDImg2Img
from benchmark.models import forget, resolve_device


def measure(gen: SDImg2Img, x: torch.Tensor, seeds: list[int], repeats: int) -> dict:
    cuda = gen.device.type == "cuda"
    gen.edit(x[:1], seeds[:1])  # warm-up: loading, allocation, compilation
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        y = gen.edit(x, seeds)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"seconds_per_image": best / len(x), "seconds_per_batch": best,
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "output": y}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny/sd at 64 px, fp32 and bf16: a CPU smoke run of this script")
    parser.add_argument("--steps", type=int, default=None, help="default 50 (--tiny: 4)")
    parser.add_argument("--strength", type=float, default=0.5,
                        help="the configured default; int(steps * strength) steps run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=None,
                        help="default fp32 fp16 (--tiny or CPU: fp32 bf16)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU runs only)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    model, size = ("tiny/sd", 64) if args.tiny else ("random/sd-v1-5", 512)
    steps = args.steps or (4 if args.tiny else 50)
    dtypes = args.dtypes or (["fp32", "bf16"] if args.tiny or device.type == "cpu"
                             else ["fp32", "fp16"])
    x = torch.rand(max(args.batch_sizes), 3, size, size, generator=torch.Generator().manual_seed(0))
    seeds = list(range(1, len(x) + 1))
    print(f"model {model} (RANDOM weights), {size} px, {steps} steps x strength {args.strength} "
          f"= {int(steps * args.strength)} denoising steps, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    rows, reference = [], {}
    for compiled in [False, True] if args.compile else [False]:
        for dtype in dtypes:
            gen = SDImg2Img(model=model, prompts=["a photo of a person"], strength=args.strength,
                            steps=steps, resolution=size, dtype=dtype, device=str(device),
                            compile=compiled, max_batch=max(args.batch_sizes))
            for n in args.batch_sizes:
                r = measure(gen, x[:n], seeds[:n], args.repeats)
                out = r.pop("output")
                if dtype == "fp32" and not compiled:
                    reference[n] = out
                diff = (out - reference[n]).abs() if n in reference else None
                row = {"dtype": dtype, "compile": compiled, "batch": n, **r,
                       "mean_abs_diff_vs_fp32": None if diff is None else diff.mean().item(),
                       "max_abs_diff_vs_fp32": None if diff is None else diff.max().item()}
                rows.append(row)
                peak = f"{row['peak_gpu_gib']:.2f} GiB" if row["peak_gpu_gib"] is not None else "-"
                close = "-" if diff is None else f"{row['mean_abs_diff_vs_fp32']:.4f}"
                print(f"{dtype:>5} compile={compiled!s:<5} batch {n:>2}: "
                      f"{row['seconds_per_image']:.3f} s/image, peak {peak}, "
                      f"mean |y - y_fp32| {close}", flush=True)
            del gen
            forget()  # peak memory of the next setting without this one's weights
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if device.type == "cpu":
        print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if args.json:
        record = {"model": model, "size": size, "steps": steps, "strength": args.strength,
                  "device": str(device), "torch": torch.__version__,
                  "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                  "host": platform.node(), "rows": rows}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
