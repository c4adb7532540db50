"""The one place where a config's `_target_` becomes an object.

Only classes inside the `benchmark` package (and the explicit allow-list below)
may be named, so a config file cannot call arbitrary code.
"""

from typing import Any

import hydra.utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from benchmark.errors import BenchError

ALLOWED_TARGETS: frozenset[str] = frozenset()


def _check_targets(node: Any, where: str) -> None:
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None:
            target = str(target)
            if not (target.startswith("benchmark.") or target in ALLOWED_TARGETS):
                raise BenchError(
                    f"{where}: _target_ '{target}' is not allowed; components must be classes "
                    f"inside the benchmark package (or listed in benchmark.build.ALLOWED_TARGETS)"
                )
        for k, v in node.items():
            _check_targets(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_targets(v, f"{where}[{i}]")


def build(cfg: DictConfig | dict, where: str = "config", **kwargs: Any) -> Any:
    """Instantiate `cfg` after checking every nested `_target_`.

    Nested configs reach the constructor as plain dicts: a component checks its own
    parameters first and builds its children (e.g. an encoder) itself.
    """
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    _check_targets(plain, where)
    if "_target_" not in plain:
        raise BenchError(f"{where}: no _target_ to build from (keys: {sorted(plain)})")
    try:
        return hydra.utils.instantiate(plain, _convert_="all", _recursive_=False, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, BenchError):
            raise cause from None
        raise BenchError(f"{where}: cannot build {plain['_target_']}: {cause or e}") from e
