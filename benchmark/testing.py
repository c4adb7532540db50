"""The contracts every component keeps, built-in or plugin: a conformance suite to run from
pytest, one line per component (`check_defense("my_defense")`).

A component is composed from its config at the tiny scale (`experiment=tiny`, random tiny
networks, 64 px), exactly as `bench run experiment=tiny defense=NAME` would, and called on two
of the shipped portraits. Each check returns the names of the contracts it verified and raises
ContractError listing every contract broken. A component that legitimately breaks one says
so next to itself: `contract_exemptions = {"seeds": "why"}` on its class (e.g. a universal
perturbation does not depend on the image's seed); an exempt contract is reported as such,
never silently skipped.

Defenses: shape, dtype, range and finiteness; inside its budget in its own norm (`budget()`:
L-inf or L2, in [0, 1] units); the same output
for the same seeds and another for other seeds; image i of a batch equals image i alone (as
released, 8-bit: at most 2 % of values differ, by at most 6/255, which float noise in a
batched attack can cause); bad parameters are BenchErrors.
Transforms: strength 0 is the identity; shape, range, size; the same output for the same
seeds; other seeds change a random transform and not a deterministic one; batch = one at a
time. Generators: shape and range; determinism; paired noise (an input nudged by 1/255 with
the same seed moves the edit less than another seed does); batch independence. Metrics:
identical inputs score at least as well as different ones; per-image values do not depend on
the batch; symmetric where the metric says so (`symmetric = True`).
"""

import subprocess
import sys
from collections.abc import Callable, Sequence

import torch

from benchmark.errors import BenchError

# (share of 8-bit values that may differ, by at most): a sign step flipped by float noise in a
# batched convolution; the worst built-in, photoguard_encoder_inpaint at the tiny scale, measured
# 0.9 % of values by up to 4/255 (a batch-dependent bug showed 26 % by up to 21/255)
BATCH_TOLERANCE = (0.02, 6 / 255)


class ContractError(AssertionError):
    """A component breaks one or more of its contracts (each listed)."""


class _Report:
    def __init__(self, what: str, component):
        self.what, self.component = what, component
        self.exempt = dict(getattr(type(component), "contract_exemptions", {}) or {})
        self.broken: list[str] = []
        self.kept: list[str] = []

    def check(self, contract: str, test: Callable[[], str | None]) -> None:
        """Run one contract: `test` returns None when it holds, else what is wrong."""
        if contract in self.exempt:
            self.kept.append(f"{contract} (exempt: {self.exempt[contract]})")
            return
        try:
            problem = test()
        except BenchError as e:
            problem = f"raised {e}"
        if problem:
            self.broken.append(f"{contract}: {problem}")
        else:
            self.kept.append(contract)

    def result(self) -> list[str]:
        if self.broken:
            raise ContractError(f"{self.what} breaks {len(self.broken)} contract(s):\n  "
                                + "\n  ".join(self.broken))
        return self.kept


# -- composing components -------------------------------------------------------------------

def compose(group: str, name: str, *overrides: str):
    """The job config of `bench run experiment=tiny <group>=<name> OVERRIDES`, bench's checks
    included (plugins' configs are on the search path)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from benchmark import safety
    from benchmark.paths import config_dir

    choice = f"{group}=[{name}]" if group == "metric" else f"{group}={name}"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = hydra_compose("config", ["experiment=tiny", choice, "device=cpu", *overrides],
                                return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    safety.check_composed(cfg)
    return cfg


def build_component(group: str, name: str, *overrides: str):
    from omegaconf import OmegaConf, open_dict

    from benchmark.build import build

    cfg = compose(group, name, *overrides)
    if group == "metric":
        from benchmark.scoring import build_metrics

        with open_dict(cfg):
            del cfg["hydra"]
        return next(iter(build_metrics(cfg, 1).values()))
    return build(OmegaConf.to_container(cfg[group], resolve=True), group)


def portraits(n: int = 2, resolution: int = 64) -> torch.Tensor:
    from benchmark.data.portraits import PortraitsDataset

    dataset = PortraitsDataset(resolution=resolution, limit=n)
    return torch.stack([dataset.load(i).x for i in range(n)])


def _side_inputs(component, x: torch.Tensor) -> dict:
    """What a component that takes dataset side inputs gets here: a centred square mask, no
    attributes (its fixed source), the sample clip."""
    side = {}
    if component.needs_masks:
        masks = torch.zeros(x.shape[0], 1, *x.shape[2:])
        h, w = x.shape[2:]
        masks[:, :, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
        side["masks"] = masks
    if component.needs_attributes:
        side["attributes"] = [{} for _ in range(x.shape[0])]
    if component.needs_audio:
        from benchmark.data.audio import read_wav, sample_audio_path

        side["audio"] = [read_wav(sample_audio_path())] * x.shape[0]
    return side


def _subset(side: dict, indices: list[int]) -> dict:
    return {k: v[indices] if isinstance(v, torch.Tensor) else [v[i] for i in indices]
            for k, v in side.items()}


# -- shared checks --------------------------------------------------------------------------

def _image_problem(y, x: torch.Tensor, same_size: bool = True) -> str | None:
    if not isinstance(y, torch.Tensor):
        return f"returned {type(y).__name__}, expected a tensor"
    if y.dtype != torch.float32:
        return f"dtype {y.dtype}, expected torch.float32"
    if y.shape[0] != x.shape[0] or y.shape[1] != 3 or (same_size and y.shape != x.shape):
        return f"shape {tuple(y.shape)} for input {tuple(x.shape)}"
    if not torch.isfinite(y).all():
        return "non-finite values"
    if y.min() < 0 or y.max() > 1:
        return f"values in [{y.min():.4g}, {y.max():.4g}], expected [0, 1]"
    return None


def _released(y: torch.Tensor) -> torch.Tensor:
    from benchmark.images import release

    return release(y.detach().cpu())


def _batch_problem(batched: torch.Tensor, alone: torch.Tensor) -> str | None:
    """Image i of a batch vs image i alone, as released files hold them."""
    a, b = _released(batched), _released(alone)
    if a.shape != b.shape:
        return f"shape {tuple(b.shape)} alone vs {tuple(a.shape)} in a batch"
    differ = (a - b).abs()
    share, largest = (differ > 1e-6).float().mean().item(), differ.max().item()
    if share > BATCH_TOLERANCE[0] or largest > BATCH_TOLERANCE[1] + 1e-6:
        return (f"image 1 alone differs from image 1 of the batch on {share:.1%} of its values, "
                f"by up to {largest * 255:.1f}/255 (tolerance {BATCH_TOLERANCE[0]:.0%}, "
                f"{BATCH_TOLERANCE[1] * 255:.0f}/255)")
    return None


def _bad_parameters_problem(group: str, name: str, component) -> str | None:
    """A key the component does not have, and a negative budget or iteration count where it
    has them, must each stop the build with a BenchError."""
    import inspect

    accepted = inspect.signature(type(component)).parameters
    overrides = [f"+{group}.not_a_parameter_of_this_component=1"]
    overrides += [f"{group}.{key}=-1" for key in ("eps", "iterations") if key in accepted]
    for override in overrides:
        try:
            build_component(group, name, override)
        except BenchError:
            continue
        except Exception as e:  # noqa: BLE001 -- any other error is the contract broken
            return f"{override}: raised {type(e).__name__} ({e}), expected a BenchError"
        return f"{override}: built without complaint, expected a BenchError"
    return None


# -- defenses -------------------------------------------------------------------------------

def _budget_problem(defense, x: torch.Tensor, y: torch.Tensor) -> str | None:
    budget = defense.budget()
    if budget is None:
        return ("declares no budget (Defense.budget() is None); give one, or exempt "
                "'budget' with the reason")
    norm, eps = budget
    delta = (y - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().max(dim=1).values
    if (size > eps + 1e-4).any():
        return f"{norm} size {size.max():.5g} over its budget {eps:.5g}"
    return None


def _started(group: str, name: str, overrides, images):
    """(component, its report, the images, their side inputs) of one check."""
    component = build_component(group, name, *overrides)
    x = portraits() if images is None else images
    return component, _Report(f"{group}={name}", component), x, _side_inputs(component, x)


def check_defense(name: str, *overrides: str, images: torch.Tensor | None = None) -> list[str]:
    """The contracts of the defense config `name` (plus OVERRIDES) at the tiny scale."""
    defense, report, x, side = _started("defense", name, overrides, images)
    seeds = [11, 12]
    y = defense.protect(x, seeds, **side)
    report.check("output", lambda: _image_problem(y, x))
    if defense.is_identity:
        report.check("identity", lambda: None if torch.equal(y, x) else "changed its input")
        return report.result()
    report.check("budget", lambda: _budget_problem(defense, x, y))
    alone = defense.protect(x[1:], seeds[1:], **_subset(side, [1]))
    report.check("batch", lambda: _batch_problem(y[1:], alone))
    again = defense.protect(x[1:], seeds[1:], **_subset(side, [1]))
    report.check("determinism", lambda: None if torch.equal(again, alone)
                 else "the same image and seed gave another output")
    other = defense.protect(x[1:], [99], **_subset(side, [1]))
    report.check("seeds", lambda: "another seed gave the same output"
                 if torch.equal(other, alone) else None)
    report.check("bad parameters", lambda: _bad_parameters_problem("defense", name, defense))
    return report.result()


# -- transforms -----------------------------------------------------------------------------

def check_transform(name: str, *overrides: str,
                    images: torch.Tensor | None = None) -> list[str]:
    transform = build_component("transform", name, *overrides)
    report = _Report(f"transform={name}", transform)
    x = portraits() if images is None else images
    report.check("strength 0", lambda: _identity_problem(name, overrides, x))
    if transform.is_identity:
        return report.result()
    seeds = [11, 12]
    y = transform(x, seeds)
    report.check("output", lambda: _image_problem(y, x))
    report.check("determinism", lambda: None if torch.equal(transform(x, seeds), y)
                 else "the same images and seeds gave another output")
    other = transform(x, [98, 99])
    if transform.random:
        report.check("seeds", lambda: "a random transform ignored its seeds"
                     if torch.equal(other, y) else None)
    else:
        report.check("seeds", lambda: "a deterministic transform (random = False) changed "
                     "with its seeds" if not torch.equal(other, y) else None)
    report.check("batch", lambda: _batch_problem(y[1:], transform(x[1:], seeds[1:])))
    report.check("bad parameters", lambda: _bad_parameters_problem("transform", name,
                                                                   transform))
    return report.result()


def _identity_problem(name: str, overrides: Sequence[str], x: torch.Tensor) -> str | None:
    untouched = build_component("transform", name, *overrides, "transform.strength=0")
    if not untouched.is_identity:
        return "strength=0 is not marked is_identity"
    return None if torch.equal(untouched(x, [1, 2]), x) else "strength=0 changed the image"


# -- generators -----------------------------------------------------------------------------

def check_generator(name: str, *overrides: str,
                    images: torch.Tensor | None = None) -> list[str]:
    generator, report, x, side = _started("generator", name, overrides, images)
    seeds = [11, 12]
    y = generator.edit(x, seeds, **side)
    report.check("output", lambda: _image_problem(y, x, same_size=generator.frames == 1))
    if generator.is_identity:
        return report.result()
    alone = generator.edit(x[1:], seeds[1:], **_subset(side, [1]))
    report.check("batch", lambda: _batch_problem(y[1:], alone))
    report.check("determinism", lambda: None if torch.equal(
        generator.edit(x[1:], seeds[1:], **_subset(side, [1])), alone)
        else "the same image and seed gave another edit")
    nudged = (x[1:] + 1 / 255).clamp(0, 1)
    near = generator.edit(nudged, seeds[1:], **_subset(side, [1]))
    far = generator.edit(x[1:], [99], **_subset(side, [1]))

    def paired_noise() -> str | None:
        moved, reseeded = (near - alone).abs().mean(), (far - alone).abs().mean()
        if reseeded == 0:
            return None if moved == 0 else "another seed does not change the edit, but 1/255 does"
        return None if moved < reseeded else (
            f"an input nudged by 1/255 moved the edit by {moved * 255:.2f}/255, as much as "
            f"another seed ({reseeded * 255:.2f}/255): the noise does not follow the seed alone")

    report.check("paired noise", paired_noise)
    return report.result()


# -- metrics --------------------------------------------------------------------------------

def check_metric(name: str, *overrides: str, images: torch.Tensor | None = None) -> list[str]:
    """On portraits at 192 px (MS-SSIM needs 176 px): per image, each against another one; a
    set-level metric (FID, KID), the set against itself and against its mirror images."""
    metric = build_component("metric", name, *overrides)
    report = _Report(f"metric={name}", metric)
    if not metric.available:
        raise ContractError(f"metric={name} is unavailable here: {metric.unavailable_reason}")
    x = portraits(4 if metric.set_level else 2, 192) if images is None else images
    other = x.flip(-1) if metric.set_level else x.roll(1, 0)  # another set / another image

    def scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if metric.embedder is not None:
            with torch.no_grad():
                a, b = metric.embedder(a).float(), metric.embedder(b).float()
        metric.reset()
        values = metric.update(a, b)
        value = metric.compute() if values is None else values.detach().cpu()
        return torch.as_tensor(value, dtype=torch.float64).reshape(-1)

    same, different = scores(x, x), scores(x, other)

    def best_when_identical() -> str | None:
        if metric.higher_is_better is None:
            return None  # no direction: nothing to compare
        known = ~(same.isnan() | different.isnan())
        ok = same[known] >= different[known] if metric.higher_is_better else \
            same[known] <= different[known]
        if not known.any():
            return "no value for any image"
        return None if bool(ok.all()) else (
            f"identical inputs scored {same.tolist()}, different ones {different.tolist()}")

    report.check("identical inputs", best_when_identical)
    if not metric.set_level:
        def batch() -> str | None:
            one = torch.cat([scores(x[i:i + 1], other[i:i + 1]) for i in range(len(x))])
            return None if torch.allclose(one, different, rtol=1e-4, atol=1e-6,
                                          equal_nan=True) else (
                f"one at a time {one.tolist()}, as a batch {different.tolist()}")

        report.check("batch", batch)
    if getattr(metric, "symmetric", False):
        report.check("symmetry", lambda: None if torch.allclose(
            scores(other, x), different, rtol=1e-4, atol=1e-6, equal_nan=True)
            else "score(a, b) != score(b, a)")
    return report.result()


# -- the cache key of a config, in another process ------------------------------------------

def cache_keys_elsewhere(configs: dict[str, tuple[dict, str]]) -> dict[str, str]:
    """The cache key of each (config, version) as a fresh Python process computes it: a key
    that depends on the process (an id, a set's order, a path) would never be found again."""
    import json

    program = ("import json, sys\nfrom benchmark.cache import cache_key\n"
               "todo = json.load(sys.stdin)\n"
               "print(json.dumps({n: cache_key('protect', c, v, ['x'], 0) "
               "for n, (c, v) in todo.items()}))\n")
    done = subprocess.run([sys.executable, "-c", program], input=json.dumps(configs),
                          capture_output=True, text=True, check=True, timeout=300)
    return json.loads(done.stdout)
