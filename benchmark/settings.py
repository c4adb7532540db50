"""The root config's own keys (configs/config.yaml), checked on every composition.

A typo at the top level (`+bach_size=4`) would otherwise run silently with the default,
and `strict=no` is the string "no", which is true. The keys and their kinds are read from
configs/config.yaml itself (one home per fact): its defaults list names the groups, its
other keys are the settings, and a setting whose default is a boolean must be a boolean.
"""

import difflib
import functools

from omegaconf import DictConfig, OmegaConf

from benchmark.errors import BenchError
from benchmark.paths import config_dir


@functools.cache
def root_keys() -> tuple[frozenset[str], frozenset[str]]:
    """(every key the root config may hold, the keys that must be booleans)."""
    root = OmegaConf.to_container(OmegaConf.load(config_dir() / "config.yaml"), resolve=False)
    groups = set()
    for entry in root.pop("defaults", []):
        name = next(iter(entry)) if isinstance(entry, dict) else entry
        groups.add(str(name).split("@")[0].split("/")[-1])
    booleans = frozenset(k for k, v in root.items() if isinstance(v, bool))
    return frozenset(root) | groups | {"hydra"}, booleans


def check_settings(cfg: DictConfig) -> None:
    """Refuse an unknown top-level key (naming the closest one) and a boolean that is not."""
    known, booleans = root_keys()
    for key in cfg:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise BenchError(f"{key}: not a key of bench's config{hint} (the top-level keys are "
                             f"{', '.join(sorted(known - {'hydra', '_self_'}))})")
    for key in sorted(booleans & set(cfg)):
        if not isinstance(cfg[key], bool):  # resolved: an interpolation counts by its value
            raise BenchError(f"{key}={cfg[key]!r} is invalid; expected true or false")
