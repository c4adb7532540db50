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


def confined(root: str | Path, name: str | Path, key: str, follow_links: bool = True) -> Path:
    """`root / name`, refused unless it stays inside `root`: the one check every path that bench
    writes under a run, sweep or cache directory passes (`..`, absolute paths, and symlinks
    that lead out are refused with the key that asked for them; `follow_links=False` checks
    the name alone, for a directory that does not exist yet)."""
    from benchmark.errors import BenchError

    text = str(name)
    parts = Path(text).parts
    if not text or Path(text).is_absolute() or ".." in parts or text.startswith("~"):
        inside = "" if str(root) == "." else f" inside {root}"
        raise BenchError(f"{key}={text!r} is refused; expected a relative path{inside} (no "
                         f"'..', no absolute path, no '~')")
    if not follow_links:
        return Path(root) / text
    base = Path(root).resolve()
    target = (Path(root) / text).resolve()  # follows links, also of parts not yet created
    if target != base and base not in target.parents:
        raise BenchError(f"{key}={text!r} is refused: {Path(root) / text} leads to {target}, "
                         f"outside {base} (a symbolic link)")
    return Path(root) / text


def config_description(path: Path) -> str:
    """A config file's first comment line (not `# @package`): what `bench ls` and the docs show."""
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("# ").strip()
    return ""
