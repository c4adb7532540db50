"""Speed and memory of every diffusion-targeted defense: seconds per image, peak memory.

The defenses are the config group itself: every configs/defense/*.yaml, composed by Hydra
as a run would (`experiment=sd15 defense=NAME`: published settings, full scale). Timed are
those whose `model` (or `encoder.model`) is a Stable Diffusion checkpoint with a full-size
random twin in the model layer (benchmark/models/tiny.py: `random/sd-v1-5`,
`random/sd-v1-5-inpaint` with the 9-channel UNet, `random/instruct-pix2pix` with the
8-channel UNet), which times the same as the real weights and needs no download; the others
are listed as skipped, each with its reason. Each defense runs at 512 px at its published
settings except the number of iterations: the script runs `--iterations` of them and
extrapolates to the published count (the cost per iteration is constant). Precisions: fp32
weights with the attack in fp32, or under fp16 / bf16 autocast (`precision`).

    python scripts/bench_defenses.py                       # GPU, 512 px, fp32 + fp16
    python scripts/bench_defenses.py --precisions fp32,bf16 --defenses advdm,sds
    python scripts/bench_defenses.py --tiny                # CPU smoke run: tiny models, 64 px

--tiny times the same defenses composed with `experiment=tiny` (their
configs/defense/scale/tiny_*.yaml: the tiny random models).

Peak memory: torch.cuda.max_memory_allocated per run on CUDA; on CPU the
process's peak resident set size so far (monotone, so an upper bound per row).
Writes a CSV (`--out`) and prints a Markdown table.
"""

import argparse
import csv
import gc
import resource
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from benchmark.build import build
from benchmark.paths import config_dir

FULL_SCALE, TINY_SCALE = "sd15", "tiny"  # the experiments the defenses are composed with
# published checkpoints -> the model layer's full-size random twin (same architecture)
RANDOM_TWINS = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "random/sd-v1-5",
    "CompVis/stable-diffusion-v1-4": "random/sd-v1-5",
    "stable-diffusion-v1-5/stable-diffusion-inpainting": "random/sd-v1-5-inpaint",
    "timbrooks/instruct-pix2pix": "random/instruct-pix2pix",
}
ATTACKED_MODEL_KEYS = ("model", "encoder.model")
# networks loaded besides the attacked model, which then need a twin too (FaceShield's)
OTHER_CHECKPOINT_KEYS = ("adapter",)
PRECISION_KEYS = ("encoder.dtype", "precision")  # an encoder attack: its weights' dtype, no autocast
# FaceLock's recogniser is a small random CNN here: its own (AdaFace ViT-B at 112 px) is not
# available offline; LPIPS's VGG runs with untrained weights (same cost)
OFFLINE_STAND_INS = {"face_model": "random", "lpips_random_backbone": True}


@dataclass
class Selection:
    timed: dict[str, int]  # defense -> its published iteration count
    skipped: dict[str, str]  # defense -> why it is not timed

    def print_skipped(self) -> None:
        for name, reason in self.skipped.items():
            print(f"skipped {name}: {reason}", flush=True)


def defense_names(configs: Path) -> list[str]:
    return sorted(p.stem for p in (configs / "defense").glob("*.yaml"))


def composed(names: list[str], experiment: str, configs: Path,
             overrides: tuple[str, ...] = ()) -> dict[str, DictConfig]:
    """Each defense's config as a run of `experiment` composes it."""
    with initialize_config_dir(str(configs), version_base="1.3"):
        runs = {name: compose("config", overrides=[f"experiment={experiment}",
                                                   f"defense={name}", *overrides])
                for name in names}
    return {name: detached(run.defense) for name, run in runs.items()}


def detached(node: DictConfig) -> DictConfig:
    """`node` resolved against its run (`${device}`, `${encoder}`), so that it can be edited
    and built on its own."""
    return OmegaConf.create(OmegaConf.to_container(node, resolve=True))


def attacked_model(cfg: DictConfig) -> tuple[str, str] | None:
    """(key, checkpoint) of the model the defense attacks, if it names one."""
    for key in ATTACKED_MODEL_KEYS:
        if (checkpoint := OmegaConf.select(cfg, key)) is not None:
            return key, checkpoint
    return None


def checkpoints(cfg: DictConfig) -> dict[str, str]:
    """key -> checkpoint of every model-layer network the defense loads."""
    attacked = attacked_model(cfg)
    found = {attacked[0]: attacked[1]} if attacked else {}
    found.update({key: cfg[key] for key in OTHER_CHECKPOINT_KEYS if cfg.get(key) is not None})
    return found


def full_size_skip_reason(cfg: DictConfig) -> str | None:
    if attacked_model(cfg) is None:
        keys = " or ".join(ATTACKED_MODEL_KEYS)
        return f"no {keys} key: it attacks no Stable Diffusion checkpoint"
    missing = [f"{key} {value}" for key, value in checkpoints(cfg).items()
               if value not in RANDOM_TWINS]
    return f"{', '.join(missing)}: no full-size random twin" if missing else None


def tiny_skip_reason(cfg: DictConfig) -> str | None:
    full_size = [f"{key} {value}" for key, value in checkpoints(cfg).items()
                 if not value.startswith("tiny/")]
    return f"its tiny scale still loads {', '.join(full_size)}" if full_size else None


def select_defenses(names: list[str] | None = None, tiny: bool = False,
                    configs: Path | None = None) -> Selection:
    """The defenses of the config group (or `names` of them) to time, and the rest with why."""
    configs = configs or config_dir()
    known = defense_names(configs)
    names = names or known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown defenses {unknown}; choose from {known}")
    selection = Selection({}, {})
    for name, cfg in composed(names, FULL_SCALE, configs).items():
        if reason := full_size_skip_reason(cfg):
            selection.skipped[name] = reason
        else:
            selection.timed[name] = cfg.iterations
    if tiny:
        for name, cfg in composed(list(selection.timed), TINY_SCALE, configs).items():
            if reason := tiny_skip_reason(cfg):
                selection.skipped[name] = reason
                del selection.timed[name]
    return selection


def precision_key(cfg: DictConfig) -> str:
    return next(key for key in PRECISION_KEYS if OmegaConf.select(cfg, key) is not None)


def defense_config(name: str, tiny: bool, device: torch.device | str, iterations: int,
                   precision: str, configs: Path | None = None) -> DictConfig:
    """The defense as a run composes it, on the random twins (tiny models with `tiny`), with
    `iterations` and `precision`, and offline stand-ins for networks that need downloads."""
    experiment = TINY_SCALE if tiny else FULL_SCALE
    cfg = composed([name], experiment, configs or config_dir(), (f"device={device}",))[name]
    if not tiny:
        for key, checkpoint in checkpoints(cfg).items():
            OmegaConf.update(cfg, key, RANDOM_TWINS[checkpoint])
    cfg.iterations = iterations
    OmegaConf.update(cfg, precision_key(cfg), precision)
    for key, value in OFFLINE_STAND_INS.items():
        if key in cfg:
            cfg[key] = value
    return cfg


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run(args) -> list[dict]:
    device = torch.device(args.device if args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    size = 64 if args.tiny else args.size
    selection = select_defenses(args.defenses.split(",") if args.defenses else None, args.tiny)
    selection.print_skipped()
    x = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    seeds = list(range(args.batch))
    rows = []
    for name, published in selection.timed.items():
        for precision in args.precisions.split(","):
            cfg = defense_config(name, args.tiny, device, args.iterations, precision)
            model = attacked_model(cfg)[1]
            d = build(cfg, "defense")
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
                "defense": name, "precision": precision,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "size": size, "batch": args.batch,
                "model": model,
                "iterations_run": args.iterations, "published_iterations": published,
                "s_per_iteration_per_image": round(per_iteration, 4),
                "s_per_image_published": round(per_iteration * published, 2),
                "peak_memory_gib": round(peak_memory_gib(device), 2), "error": error})
            print(f"{name:<26} {precision:<5} {per_iteration:8.4f} s/it/img  "
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
    if args.out and rows:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"\nwrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
