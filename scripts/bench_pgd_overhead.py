"""Overhead of the PGD engine per defense: seconds per iteration over its floor.

The floor of a defense is one forward + backward of its objective: the loss
callable the defense hands to the PGD engine (its networks, the objective's
arithmetic and the per-evaluation noise draws it makes), called on the same
batch on the same device and differentiated with respect to the images, times
the gradient samples of one iteration. Seconds per iteration are measured on
the defense's own `protect`: the difference between a run of `--short` and a
run of `--short + --iterations` iterations, divided by `--iterations`, so that
per-call set-up (clean embeddings, face masks, model loading) is not counted.
The ratio (target <= 1.15) is what the engine adds: sign / projection / Adam,
EOT draws, masks, the loss history.

Each repeat measures the floor and the iterations back to back; the reported
ratio is the median of the repeats' ratios (a shared, noisy machine moves both
together). Images per second = batch / seconds per iteration.

    python scripts/bench_pgd_overhead.py --tiny                 # CPU, tiny random models
    python scripts/bench_pgd_overhead.py --batches 1,8 --size 512   # GPU, SD 1.5-size models
"""

import argparse
import importlib.util
import math
import statistics
import time
import warnings
from pathlib import Path

import torch

from benchmark.build import build

ROOT = Path(__file__).resolve().parents[1]


def _bench_defenses():
    spec = importlib.util.spec_from_file_location("bench_defenses",
                                                  ROOT / "scripts" / "bench_defenses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class CapturedObjective:
    """Records the loss (and penalty) a defense hands to its PGD engine."""

    def __init__(self, defense):
        self.defense, self.loss, self.penalty = defense, None, None
        original = defense.pgd.minimize

        def minimize(x, loss, seeds, mask=None, penalty=None, *args, **kwargs):
            self.loss, self.penalty = loss, penalty
            return original(x, loss, seeds, mask, penalty, *args, **kwargs)

        defense.pgd.minimize = minimize

    def forward_backward(self, x: torch.Tensor) -> None:
        for _ in range(self.defense.pgd.grad_samples):
            v = x.detach().clone().requires_grad_(True)
            values = self.loss(v)
            if self.penalty is not None:
                values = values + self.penalty(v)
            torch.autograd.grad(values.sum(), v)


def seconds(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def measure(defense, x, seeds, device, short: int, iterations: int, repeats: int) -> dict:
    captured = CapturedObjective(defense)
    defense.pgd.iterations = 1
    defense.protect(x, seeds)  # warm-up; also captures the objective
    ratios, per_iteration, floors = [], [], []
    for _ in range(repeats):
        defense.pgd.iterations = short
        t_short = seconds(lambda: defense.protect(x, seeds), device)
        defense.pgd.iterations = short + iterations
        t_long = seconds(lambda: defense.protect(x, seeds), device)
        floor = statistics.median(seconds(lambda: captured.forward_backward(x), device)
                                  for _ in range(iterations))
        # a long run no longer than the short one is noise, not a measurement: no value
        step = (t_long - t_short) / iterations if t_long > t_short else math.nan
        ratios.append(step / floor)
        per_iteration.append(step)
        floors.append(floor)
    measured = [i for i, r in enumerate(ratios) if math.isfinite(r)]
    if not measured:
        return {"ratio": math.nan, "s_per_iteration": math.nan,
                "floor_s": statistics.median(floors), "ratios": ratios}
    return {"ratio": statistics.median(ratios[i] for i in measured),
            "s_per_iteration": statistics.median(per_iteration[i] for i in measured),
            "floor_s": statistics.median(floors), "ratios": [round(r, 3) for r in ratios]}


def run(args) -> list[dict]:
    bench = _bench_defenses()
    device = torch.device(args.device if args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    selection = bench.select_defenses(args.defenses.split(",") if args.defenses else None,
                                      args.tiny)
    selection.print_skipped()
    rows = []
    for name in selection.timed:
        cfg = bench.defense_config(name, args.tiny, device, 1, "fp32")
        model = bench.attacked_model(cfg)[1]
        row = {"defense": name, "device": "cpu" if device.type == "cpu"
               else torch.cuda.get_device_name(device), "size": args.size, "model": model}
        for batch in (int(b) for b in args.batches.split(",")):
            x = torch.rand(batch, 3, args.size, args.size,
                           generator=torch.Generator().manual_seed(0)).to(device)
            seeds = list(range(batch))
            defense = build(cfg, "defense")
            if hasattr(defense, "parts"):
                _ = defense.parts
            m = measure(defense, x, seeds, device, args.short, args.iterations, args.repeats)
            row.update({f"ratio_b{batch}": round(m["ratio"], 3),
                        f"s_per_it_b{batch}": round(m["s_per_iteration"], 4),
                        f"floor_s_b{batch}": round(m["floor_s"], 4),
                        f"img_per_s_b{batch}": round(batch / m["s_per_iteration"], 2)
                        if math.isfinite(m["s_per_iteration"]) else math.nan,
                        f"repeats_b{batch}": m["ratios"]})
            print(f"{name:<26} batch {batch}: {m['ratio']:.3f}x  {m['s_per_iteration']:.4f} s/it "
                  f"(floor {m['floor_s']:.4f} s; repeats {m['ratios']})", flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict], batches: list[int]) -> str:
    head = ["defense"] + [f"{k}_b{b}" for b in batches for k in ("ratio", "img_per_s")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models on the CPU")
    parser.add_argument("--defenses", default="", help="comma-separated subset")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--size", type=int, default=None, help="default 32 with --tiny, 512")
    parser.add_argument("--short", type=int, default=2, help="iterations of the baseline run")
    parser.add_argument("--iterations", type=int, default=6, help="extra iterations timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.size is None:
        args.size = 32 if args.tiny else 512
    if args.tiny and args.device == "auto":
        args.device = "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rows = run(args)
    print()
    print(markdown(rows, [int(b) for b in args.batches.split(",")]))
    return rows


if __name__ == "__main__":
    main()
