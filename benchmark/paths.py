"""Where the config tree, the packaged data and the cache live."""

import hashlib
import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent

# `${run_id:}`: a short random part in every run and sweep directory (configs/hydra/bench.yaml),
# so that two runs started in the same second never share one. Cached like Hydra's `now` (Hydra
# copies the cache into each sweep job's config); registered on import, next to the config
# tree, because every process that composes or resolves the tree (a SLURM job too) needs it.
if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)


def folder_name(text: str) -> str:
    """`text` as one folder name: override values holding paths (dataset.root=/data/x) must not
    make nested sweep folders, and a name stays under the 255-byte limit of filesystems."""
    name = str(text).replace("/", "_").replace("\\", "_") or "_"
    if len(name.encode()) > 200:
        name = f"{name.encode()[:180].decode(errors='ignore')}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


if not OmegaConf.has_resolver("folder_name"):
    OmegaConf.register_new_resolver("folder_name", folder_name)


def config_dir() -> Path:
    """The config tree: inside the installed wheel, or at the top of a source checkout."""
    for candidate in (PACKAGE_DIR / "configs", PACKAGE_DIR.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no config tree found next to {PACKAGE_DIR}")


def portraits_dir() -> Path:
    return PACKAGE_DIR / "data" / "portraits"


def default_cache_dir() -> Path:
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bench"
