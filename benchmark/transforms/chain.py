"""Any list of transforms applied in order: `transform=chain transform.steps=[resize,jpeg]`.

Each step is one of
- the name of a config of the transform group (`jpeg`),
- that name with overrides (`{jpeg: {quality: 50}}`), merged onto that config,
- a full config with its own `_target_`,
and is built through the same `build()` as every component, so it is checked the
same way. A named step is composed by Hydra as `transform=<name>` would be, at the job's
scale (`scale`: its per-scale variant applies, so `experiment=tiny` gives a tiny `diffpure`
step) and on the job's `device`. A step may keep a new size (`{resize: {restore: false}}` uploads a
small picture to the next step); the chain restores the input size at its end
(`restore: true`, bicubic: Pillow, or PyTorch when every step is differentiable).

Each step draws from its own seeds, derived from the image's seed and the step's
position, so two random steps do not repeat each other's noise. `strength`, when
set, is given to every step. The chain's version folds in its steps' resolved
configs and versions, so editing a step's YAML file invalidates cached outputs.
"""

import contextlib
import hashlib
import json

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark.build import build, semantic_config
from benchmark.errors import BenchError, check
from benchmark.images import derive_seed, from_pil, to_pil
from benchmark.paths import config_dir
from benchmark.transforms.base import Transform, check_flag, check_strength
from benchmark.transforms.resize import resize_pil, resize_tensor


def _config_search():
    """Inside `bench run` (and its launchers' workers, which restore Hydra's globals) the app's
    own search path, a user's --config-dir included; elsewhere (a test, a script calling
    build) the packaged config tree."""
    if GlobalHydra.instance().is_initialized():
        return contextlib.nullcontext()
    return initialize_config_dir(str(config_dir()), version_base="1.3")


def transform_config(name: str, where: str, scale: str, device: str) -> dict:
    """The config `transform=<name> scale=<scale> device=<device>` composes to, as a plain dict."""
    if not isinstance(name, str) or not name or "/" in name or "=" in name:
        raise BenchError(f"{where}: {name!r} is not a transform config name (e.g. jpeg)")
    try:
        with _config_search():
            cfg = compose(overrides=[f"+transform={name}", f"+scale={scale}",
                                     f"+device={json.dumps(str(device))}"])
    except MissingConfigException as e:
        group, _, wanted = str(e.missing_cfg_file).partition("/")
        raise BenchError(f"{where}: no {group} config named {wanted!r}; choose from "
                         f"{', '.join(sorted(e.options or []))}") from e
    except HydraException as e:
        raise BenchError(f"{where}: cannot compose transform {name!r} at scale {scale!r}: "
                         f"{str(e).split(chr(10))[0]}") from e
    return _resolve(cfg, where)["transform"]  # resolved at the root, where ${device} points


def _resolve(cfg, where: str) -> dict:
    try:
        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    except OmegaConfBaseException as e:
        raise BenchError(f"{where}: cannot resolve the step's config ({e}); give the step as "
                         f"a full config with its values instead") from e


def step_config(step, where: str, scale: str, device: str) -> dict:
    if isinstance(step, str):
        return transform_config(step, where, scale, device)
    if isinstance(step, dict) and "_target_" in step:
        if step["_target_"] == f"{__name__}.Chain":  # a nested chain runs at the job's scale too
            step = {"scale": scale, "device": device, **step}
        return _resolve(step, where)
    if isinstance(step, dict) and len(step) == 1:
        (name, overrides), = step.items()
        check(where, str(name), overrides, overrides is None or isinstance(overrides, dict),
              "a mapping of parameter overrides, e.g. {jpeg: {quality: 50}}")
        base = OmegaConf.create(transform_config(str(name), where, scale, device))
        return _resolve(OmegaConf.merge(base, overrides or {}), where)
    raise BenchError(f"{where}: a step is a transform name (jpeg), a name with overrides "
                     f"({{jpeg: {{quality: 50}}}}) or a config with _target_; got {step!r}")


class Chain(Transform):
    name = "chain"

    def __init__(self, steps: list = ("resize", "jpeg"), restore: bool = True,
                 strength: float | None = None, scale: str = "full", device: str = "auto"):
        strength = check_strength(self.name, strength)
        check(self.name, "steps", steps, isinstance(steps, (list, tuple)) and len(steps) > 0,
              "a non-empty list of transforms")
        self.restore = check_flag(self.name, "restore", restore)
        self.configs, self.steps = [], []
        for i, step in enumerate(steps):
            where = f"chain.steps[{i}]"
            cfg = step_config(step, where, scale, device)
            if strength is not None:
                cfg["strength"] = strength
            self.configs.append(cfg)
            self.steps.append(build(cfg, where))
        self.strength = strength
        self.random = any(s.random for s in self.steps)
        self.differentiable = all(s.differentiable for s in self.steps)
        self.is_identity = all(s.is_identity for s in self.steps)
        self.changes_size = not restore and any(s.changes_size for s in self.steps)
        identity = json.dumps([[semantic_config(c), s.version]
                               for c, s in zip(self.configs, self.steps)], sort_keys=True)
        self.version = "1+" + hashlib.sha256(identity.encode()).hexdigest()[:16]

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        height, width = x.shape[-2:]
        y = x
        for i, step in enumerate(self.steps):
            y = step(y, [derive_seed(s, f"step{i}", "chain") for s in seeds])
        if not self.restore or y.shape[-2:] == (height, width):
            return y
        if self.differentiable:
            return resize_tensor(y, (width, height), "bicubic", antialias=True)
        return torch.stack([from_pil(resize_pil(to_pil(yi), (width, height), "bicubic"))
                            for yi in y]).to(x.device)
