"""The one place where a config's `_target_` becomes an object.

A config file or a command-line override must not be able to call arbitrary code.
Hydra resolves a dotted `_target_` through module attributes, so a string prefix
check is not enough: `benchmark.results.tables.pd.read_pickle` starts with `benchmark.`
and names pandas' function. Here a target is accepted only when

- it is `<module>.<Class>` with `<module>` one of the component packages below
  (the module is imported by name, never walked attribute by attribute),
- `<Class>` is a class *defined* in that module (`cls.__module__ == module`), so
  `benchmark.runner.torch` or a class imported from elsewhere is refused,
- and it is a component: a subclass of one of the stage base classes (dataset,
  defense, transform, generator, metric) or a `torch.nn.Module` of the model
  layer (encoders, face embedders).

The class is then called directly with the config's keys; Hydra never sees the
string. `ALLOWED_TARGETS` is the explicit allow-list for anything else (empty).
"""

import importlib
import inspect
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmark.cards import CARD_KEY, without_cards
from benchmark.errors import BenchError

COMPONENT_PACKAGES = ("benchmark.data", "benchmark.defenses", "benchmark.transforms",
                      "benchmark.generators", "benchmark.metrics", "benchmark.models")
ALLOWED_TARGETS: frozenset[str] = frozenset()


def _component_bases() -> tuple[type, ...]:
    import torch.nn

    from benchmark.data.base import ImageDataset
    from benchmark.defenses.base import Defense
    from benchmark.generators.base import Generator
    from benchmark.metrics.base import Metric
    from benchmark.transforms.base import Transform

    return ImageDataset, Defense, Transform, Generator, Metric, torch.nn.Module


# Config keys that say where or how fast a component runs, not what it computes: cache keys
# leave them out at every depth (tests/test_cache.py reviews every parameter so named).
RUNTIME_KEYS = frozenset({"device", "batch_size", "max_batch", "compile", "progress"})


def semantic_config(config: Any) -> Any:
    """A plain config without its RUNTIME_KEYS and its cards (`_card_`, documentation:
    benchmark.cards) at any depth: what a cache key is made of."""
    if isinstance(config, dict):
        return {k: semantic_config(v) for k, v in config.items()
                if k not in RUNTIME_KEYS and k != CARD_KEY}
    if isinstance(config, (list, tuple)):
        return [semantic_config(v) for v in config]
    return config


def _refused(target: Any, where: str) -> BenchError:
    from benchmark.plugins import plugins

    packages = [*COMPONENT_PACKAGES, *(p.module for p in plugins())]
    return BenchError(f"{where}: _target_ {target!r} is not allowed; a component must be a class "
                      f"defined in a module of {', '.join(packages)} that subclasses a "
                      f"stage base class (Dataset, Defense, Transform, Generator, Metric) or "
                      f"torch.nn.Module (see benchmark.build; other packages join as plugins: "
                      f"bench ls --plugins)")


def check_target_name(target: Any, where: str) -> None:
    """Refuse a `_target_` by its name alone, importing nothing: outside the component packages
    and the plugins' modules (benchmark.plugins: installed entry points and --plugin)."""
    from benchmark.plugins import plugin_of

    if not isinstance(target, str) or "." not in target:
        raise _refused(target, where)
    module_name, _, class_name = target.rpartition(".")
    in_package = (module_name.startswith(tuple(p + "." for p in COMPONENT_PACKAGES))
                  or plugin_of(module_name) is not None)
    if target not in ALLOWED_TARGETS and not (in_package and class_name.isidentifier()):
        raise _refused(target, where)


def resolve_target(target: Any, where: str) -> type:
    """The component class `target` names, or a BenchError saying why it is refused."""
    check_target_name(target, where)
    module_name, _, class_name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BenchError(f"{where}: _target_ {target!r}: cannot import module {module_name!r} "
                         f"({e})") from None
    cls = module.__dict__.get(class_name)
    if cls is None:
        raise BenchError(f"{where}: _target_ {target!r}: module {module_name} defines no "
                         f"{class_name!r}")
    if target in ALLOWED_TARGETS:
        return cls
    if not (inspect.isclass(cls) and cls.__module__ == module_name
            and issubclass(cls, _component_bases())):
        raise _refused(target, where)
    return cls


def iter_targets(node: Any, where: str):
    """(path, target) of every `_target_` in a plain nested config, outermost first."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield where, node["_target_"]
        for k, v in node.items():
            if k != "_target_":
                yield from iter_targets(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from iter_targets(v, f"{where}[{i}]")


def check_targets(node: Any, where: str) -> None:
    """Refuse the whole config if any nested `_target_` names something not allowed."""
    for path, target in iter_targets(node, where):
        resolve_target(target, path)


def build(cfg: DictConfig | dict, where: str = "config", **kwargs: Any) -> Any:
    """Instantiate `cfg` after checking every nested `_target_`.

    Nested configs reach the constructor as plain dicts: a component checks its own
    parameters first and builds its children (e.g. an encoder) itself, through here.
    An error says which config group it came from (`config_group`), so that a sweep that
    does not vary that group can stop at its first job.
    """
    try:
        return _build(cfg, where, **kwargs)
    except BenchError as e:
        tag_group(e, where)
        raise


def tag_group(error: BaseException, where: str) -> BaseException:
    """Mark `error` as caused by the config group of `where` (its first key), unless marked."""
    if getattr(error, "config_group", None) is None:
        error.config_group = where.split(".")[0].split("[")[0]
    return error


def _build(cfg: DictConfig | dict, where: str, **kwargs: Any) -> Any:
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    plain = without_cards(plain)  # documentation: never a constructor's argument, at any depth
    if not isinstance(plain, dict) or "_target_" not in plain:
        keys = sorted(plain) if isinstance(plain, dict) else type(plain).__name__
        raise BenchError(f"{where}: no _target_ to build from (keys: {keys})")
    check_targets(plain, where)
    cls = resolve_target(plain["_target_"], where)
    params = {k: v for k, v in plain.items() if not (k.startswith("_") and k.endswith("_"))}
    params.update(kwargs)
    try:
        return cls(**params)
    except BenchError:
        raise
    except TypeError as e:  # an unknown or missing key: name the component and its keys
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "kwargs")]
        raise BenchError(f"{where}: cannot build {plain['_target_']}: {e}; its keys are "
                         f"{accepted}") from e
    except Exception as e:
        raise BenchError(f"{where}: cannot build {plain['_target_']}: {e}") from e
