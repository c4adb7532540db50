"""Where the config tree, the packaged data and the cache live."""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


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
