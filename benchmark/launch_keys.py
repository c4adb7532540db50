"""What identifies a job of a sweep before Hydra composes it: its launch key.

Re-running a finished sweep in its own directory must cost almost nothing, yet Hydra composes
every job's config (about 0.1 s each, twice: to validate the batch and to launch it) before the
job can tell that it is finished. Composition is a pure function of the job's overrides, the
config name, the files of the search path and the environment variables those files read, so a
digest of exactly these (the launch key) names the composed config without composing it. A job
records its launch key in its status.json; bench's sweeper (hydra_plugins/bench_plugins) skips
a job whose directory holds a finished record with the same key, and composes the others once.

A key that differs only makes the sweeper compose the job as before, where `is_finished`
compares the composed config itself: the key can make a skip cheaper, never wrong.
"""

import functools
import hashlib
import json
import os
import re
from importlib import resources
from pathlib import Path

from benchmark.results.job_files import read_status

CONFIG_SUFFIXES = (".yaml", ".yml")
ENV_NAME = re.compile(r"oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)")
RESULT_FILES = ("samples.csv", "summary.csv", "stats.json")


def _source_files(path: str) -> list[tuple[str, bytes]]:
    """(relative name, content) of every config file of one search-path entry."""
    provider, _, where = path.partition("://")
    if provider == "file":
        root = Path(where)
        files = [p for p in root.rglob("*") if p.suffix in CONFIG_SUFFIXES and p.is_file()]
        return sorted((str(p.relative_to(root)), p.read_bytes()) for p in files)
    if provider == "pkg":
        try:
            root = resources.files(where.replace("/", "."))
        except (ModuleNotFoundError, TypeError):
            return []
        out, todo = [], [(root, "")]
        while todo:
            node, prefix = todo.pop()
            for child in node.iterdir():
                name = f"{prefix}{child.name}"
                if child.is_dir():
                    todo.append((child, f"{name}/"))
                elif child.name.endswith(CONFIG_SUFFIXES):
                    out.append((name, child.read_bytes()))
        return sorted(out)
    return []  # structured:// configs are code: the package versions below stand for them


@functools.lru_cache(maxsize=8)
def sources_digest(paths: tuple[str, ...]) -> str:
    """Digest of the search path's config files, the environment variables they read (oc.env),
    and the versions of the code that composes them."""
    import hydra
    import omegaconf

    from benchmark import __version__

    digest, names = hashlib.sha256(), set()
    for path in paths:
        digest.update(f"\0source {path}\0".encode())
        for name, content in _source_files(path):
            digest.update(f"\0{name}\0".encode() + content)
            names.update(ENV_NAME.findall(content.decode("utf-8", "replace")))
    env = {n: os.environ.get(n) for n in sorted(names)}
    versions = [__version__, hydra.__version__, omegaconf.__version__]
    digest.update(json.dumps([env, versions]).encode())
    return digest.hexdigest()


def launch_key(overrides, config_name: str | None, source_paths) -> str:
    """The launch key of a job: its task overrides as the sweeper lists them, the primary
    config's name, and the digest of what composition reads."""
    plain = [list(map(str, overrides)), str(config_name), sources_digest(tuple(source_paths))]
    return hashlib.sha256(json.dumps(plain).encode()).hexdigest()


def source_paths(hydra_cfg) -> tuple[str, ...]:
    """The search path a config was composed from (its `hydra.runtime.config_sources`)."""
    return tuple(f"{s['schema']}://{s['path']}" for s in hydra_cfg.runtime.config_sources)


def finished_launches(sweep_dir: Path) -> dict[str, Path]:
    """launch key -> job directory, for the finished jobs of a sweep directory."""
    found = {}
    try:
        records = sorted(Path(sweep_dir).glob("*/status.json"))
    except OSError:
        return {}
    for path in records:
        status = read_status(path.parent)
        key = status.get("launch_key")
        if (status.get("status") == "done" and isinstance(key, str)
                and all((path.parent / f).is_file() for f in RESULT_FILES)):
            found[key] = path.parent
    return found
