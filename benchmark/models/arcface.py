"""ArcFace face embeddings (Deng et al., CVPR 2019) for the `ism` metric: detection, five-point
alignment, InsightFace's IResNet.

Per image: dlib's face detector (benchmark.models.face_detection.FaceDetector, the same
options as FDFR's), dlib's 68-point landmarks on the most confident face, reduced
to ArcFace's five points and warped onto the 112x112 template
(benchmark.models.face_align), then the IResNet (benchmark.models.iresnet) on the
crop normalised as arcface_torch's inference.py does: RGB, (x/255 - 0.5) / 0.5.

Weights are not shipped and never downloaded: `weights` is a local arcface_torch
checkpoint (`backbone.pth`, a plain state dict, read with
torch.load(weights_only=True); or a `.safetensors` conversion of it), or
`owner/repo/path/in/repo.pth` of a Hugging Face repository already in the local
cache. `resolve_weights` says what is missing and how to provide it; the metric
then reports itself unavailable.

`ArcFaceEmbedder(x)` returns, per image, 513 numbers: the number of faces found,
then the 512-d embedding of the most confident face (NaN when there is none).
"""

import hashlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import nn

from benchmark.errors import BenchError, ConfigValueError, check
from benchmark.images import to_uint8
from benchmark.models import resolve_device, shared
from benchmark.models.face_align import CROP_SIZE, align_crop, detected_five_points
from benchmark.models.face_detection import FaceDetector
from benchmark.models.hub import find_file, hub_cache_dir, is_path, load_checkpoint
from benchmark.models.iresnet import ARCHS, EMBEDDING_DIM, IResNet, arch_of

HOW_TO_GET = ("InsightFace's arcface_torch model zoo (github.com/deepinsight/insightface, "
              "recognition/arcface_torch, e.g. ms1mv3_arcface_r100_fp16/backbone.pth for "
              "arch r100)")


def resolve_weights(spec: str | None, arch: str) -> tuple[Path | None, str]:
    """The local file that `spec` names, or None and what is missing and how to provide it."""
    if not spec:
        return None, (f"backbone=arcface needs IResNet-{arch[1:]} weights and "
                      f"metric.ism.weights is not set: download a backbone.pth from {HOW_TO_GET} "
                      f"where there is internet access and set metric.ism.weights=/path/to/"
                      f"backbone.pth (or a safetensors conversion of it)")
    found = find_file(spec)
    if found is not None:
        return found, ""
    path = Path(spec).expanduser()
    parts = PurePosixPath(spec).parts
    if not is_path(spec) and len(parts) >= 3:  # owner/repo/file of the Hugging Face cache
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        return None, (f"ArcFace weights '{filename}' of Hugging Face repository '{repo}' are not "
                      f"in the local cache {hub_cache_dir()} (nor is {path} a local file): "
                      f"download them where there is internet access (`hf download {repo} "
                      f"{filename}`), point HF_HOME at a cache that holds them, or set "
                      f"metric.ism.weights to a local backbone.pth from {HOW_TO_GET}")
    return None, (f"ArcFace weights file {path} does not exist: download a backbone.pth from "
                  f"{HOW_TO_GET} where there is internet access and set metric.ism.weights to "
                  f"its path")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(path: Path) -> str:
    """sha256 of the weights file (its identity in cache keys), hashed once per process."""
    st = path.stat()
    return shared(("sha256", str(path.resolve()), st.st_size, st.st_mtime_ns),
                  lambda: _file_digest(path))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, without the `module.` prefix a DDP save adds."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"{path}: not a state dict of tensors (expected arcface_torch's "
                         f"backbone.pth)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def check_arch(path: Path, arch: str, component: str = "ism") -> None:
    """Refuse, before any compute, weights whose layout is not `arch`'s."""
    found = shared(("arcface-arch", str(path.resolve()), weights_digest(path)),
                   lambda: arch_of(load_state(path)))
    if found is None:
        raise BenchError(f"{component}: {path} is not an arcface_torch IResNet checkpoint (its "
                         f"keys match no arch: expected conv1.weight, layer1.0.bn1.weight, ..., "
                         f"fc.weight, features.weight)")
    if found != arch:
        raise ConfigValueError(component, "arch", arch, f"'{found}', the layout of the weights "
                               f"in {path}")


def load_iresnet(path: Path, arch: str, device: torch.device) -> IResNet:
    net = IResNet(arch)
    try:
        net.load_state_dict(load_state(path), strict=True)
    except RuntimeError as e:
        raise BenchError(f"{path} does not fit IResNet {arch}: {str(e).splitlines()[0]}") from None
    return net.eval().requires_grad_(False).to(device)


def shared_iresnet(weights: Path, arch: str, device) -> IResNet:
    """The IResNet of a weights file, loaded once per process (the metric and FaceShield share
    it)."""
    return shared(("arcface", str(weights.resolve()), weights_digest(weights), arch, str(device)),
                  lambda: load_iresnet(weights, arch, device))


class ArcFaceEmbedder(nn.Module):
    """Images (NCHW in [0, 1]) -> (N, 513): [faces found, 512-d ArcFace embedding or NaN]."""

    version = "1"

    def __init__(self, weights: str | Path, arch: str = "r100", detector: str = "cnn",
                 detect_size: int = 256, upsample: int = 0, device: str = "auto"):
        super().__init__()
        self.detector = FaceDetector(detector, detect_size, upsample, component="ism")
        self.weights, self.arch, self.device = Path(weights), arch, resolve_device(device)

    @property
    def net(self) -> IResNet:
        return shared_iresnet(self.weights, self.arch, self.device)

    def five_points(self, image: np.ndarray, box) -> np.ndarray:
        return detected_five_points(image, box)

    def crops(self, x: torch.Tensor) -> tuple[list[int], list[int], np.ndarray]:
        """Faces found per image, the images with a face, and their aligned 112x112 crops."""
        found, rows, crops = [], [], []
        for i, xi in enumerate(x):
            image = np.ascontiguousarray(to_uint8(xi))
            boxes = self.detector.detect(image)
            found.append(len(boxes))
            if boxes:
                rows.append(i)
                crops.append(align_crop(image, self.five_points(image, boxes[0])))
        return found, rows, np.stack(crops) if crops else np.zeros((0, CROP_SIZE, CROP_SIZE, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        found, rows, crops = self.crops(x)
        out = torch.full((len(x), EMBEDDING_DIM + 1), float("nan"))
        out[:, 0] = torch.tensor(found, dtype=torch.float32)
        if rows:
            faces = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255)
            faces = (faces - 0.5) / 0.5
            with torch.no_grad():
                out[rows, 1:] = self.net(faces.to(self.device)).float().cpu()
        return out


ARCFACE_ZOO = ("InsightFace's arcface_torch model zoo (github.com/deepinsight/insightface, "
               "recognition/arcface_torch: ms1mv3_arcface_r50_fp16/backbone.pth, "
               "ms1mv3_arcface_r100_fp16/backbone.pth)")


class ArcFaceRecogniser(nn.Module):
    """ArcFace IResNet (arcface_torch's backbone.pth) on aligned 112x112 faces in [0, 1],
    normalised (x - 0.5) / 0.5 as arcface_torch's inference.py; differentiable (FaceShield's
    identity term)."""

    name = "arcface"

    def __init__(self, weights: str | None = None, arch: str = "r100", device: str = "auto"):
        super().__init__()
        check(self.name, "arch", arch, arch in ARCHS, f"one of {tuple(ARCHS)}")
        path, missing = resolve_weights(weights, arch) if weights else (None, "")
        if path is None:
            raise BenchError(
                f"{self.name}: ArcFace IResNet-{arch[1:]} weights {weights!r} are not available "
                f"locally. Download a backbone.pth from {ARCFACE_ZOO} where there is internet "
                f"access and set its path as the recogniser's `weights` "
                f"(FaceShield: defense.recognisers.N.weights=/path/backbone.pth). "
                f"{missing}".strip())
        check_arch(path, arch, component=self.name)
        self.weights, self.arch, self.device = Path(path), arch, resolve_device(device)

    @property
    def net(self):
        return shared_iresnet(self.weights, self.arch, self.device)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.net((faces.to(self.device, torch.float32) - 0.5) / 0.5)
