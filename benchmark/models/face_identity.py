"""Face-recognition networks that identity-targeted defenses (FaceLock) optimise against.

An embedder maps images (N, 3, H, W) in [0, 1] to identity features (N, D),
differentiably; the defense compares them by cosine similarity. Pluggable by
config (`face_model: {_target_: ..., ...}`):

- `CVLFaceEmbedder`: FaceLock's own pair from the CVLFace model zoo, the AdaFace
  ViT-base KP-RPE recogniser trained on WebFace4M
  (`minchul/cvlface_adaface_vit_base_kprpe_webface4m`) with the DFA MobileNet
  aligner (`minchul/cvlface_DFA_mobilenet`). Both repositories ship their own
  Python code, so loading them needs `trust_remote_code: true` (off by default)
  and a local copy (`bench weights pull ID`); not available offline, and not
  exercised by the offline tests.
- `TorchScriptFaceEmbedder`: any recogniser exported with torch.jit (e.g. an
  ArcFace IResNet), given by file, with its input size and normalisation.
- `RandomFaceEmbedder`: a small randomly initialised CNN. A TEST DOUBLE: it
  makes the FaceLock code path run offline (tests, `experiment=tiny`); its
  "identity" means nothing.
"""

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import BenchError, MissingModelError, check
from benchmark.models import resolve_device, shared


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class RandomFaceEmbedder(nn.Module):
    """TEST DOUBLE: four random strided convolutions and a linear head (seeded)."""

    name = "random_face"

    def __init__(self, dim: int = 64, seed: int = 0, device: str = "auto"):
        super().__init__()
        check(self.name, "dim", dim, isinstance(dim, int) and dim >= 2, "an integer >= 2")
        self.dim, self.seed, self.device = dim, seed, resolve_device(device)

    @property
    def net(self) -> nn.Module:
        return shared(("random-face-embedder", self.dim, self.seed, str(self.device)), self._build)

    def _build(self) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            layers, width = [], 3
            for out in (16, 32, 32, 64):
                layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.GELU()]
                width = out
            net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                nn.Linear(64 * 16, self.dim))
        return _frozen(net.to(self.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device, torch.float32) * 2 - 1)


class TorchScriptFaceEmbedder(nn.Module):
    """A TorchScript recogniser: resize to `size`, normalise with mean/std, embed."""

    name = "torchscript_face"

    def __init__(self, path: str, size: int = 112, mean: float = 0.5, std: float = 0.5,
                 device: str = "auto"):
        super().__init__()
        check(self.name, "size", size, isinstance(size, int) and size >= 16, "an integer >= 16")
        check(self.name, "std", std, isinstance(std, (int, float)) and std > 0, "a number > 0")
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise MissingModelError(str(path), str(self.path.parent), "no such file")
        self.size, self.mean, self.std = size, mean, std
        self.device = resolve_device(device)

    @property
    def net(self) -> nn.Module:
        return shared(("torchscript-face", str(self.path), str(self.device)),
                      lambda: _frozen(torch.jit.load(str(self.path), map_location=self.device)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.to(self.device, torch.float32), size=(self.size, self.size),
                          mode="bilinear", antialias=True, align_corners=False)
        return self.net((x - self.mean) / self.std)


def _snapshot(repo: str) -> Path:
    from benchmark.models.hub import hub_cache_dir, is_path

    if is_path(repo):
        return Path(repo).expanduser()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - any "not in the cache" error of huggingface_hub
        raise MissingModelError(repo, hub_cache_dir(), type(e).__name__) from None


def _load_remote_model(repo: str) -> nn.Module:
    """A CVLFace repository's model, whose wrapper imports modules from its own folder."""
    from transformers import AutoModel

    path = _snapshot(repo)
    cwd = os.getcwd()
    sys.path.insert(0, str(path))
    try:
        os.chdir(path)
        model = AutoModel.from_pretrained(str(path), trust_remote_code=True,
                                          local_files_only=True)
    finally:
        os.chdir(cwd)
        sys.path.remove(str(path))
    return _frozen(model)


class CVLFaceEmbedder(nn.Module):
    """FaceLock's recogniser: align with the DFA aligner, embed with AdaFace (KP-RPE)."""

    name = "cvlface"

    def __init__(self, model: str = "minchul/cvlface_adaface_vit_base_kprpe_webface4m",
                 aligner: str = "minchul/cvlface_DFA_mobilenet",
                 trust_remote_code: bool = False, device: str = "auto"):
        super().__init__()
        check(self.name, "trust_remote_code", trust_remote_code, trust_remote_code is True,
              "true: these repositories run their own Python code when loaded; allow it only "
              "for a copy you trust")
        from benchmark.models.hub import require_local

        for repo in (model, aligner):
            require_local(repo, "config.json")
        self.model, self.aligner, self.device = model, aligner, resolve_device(device)

    def _nets(self) -> tuple[nn.Module, nn.Module]:
        fr = shared(("cvlface", self.model, str(self.device)),
                    lambda: _load_remote_model(self.model).to(self.device))
        al = shared(("cvlface", self.aligner, str(self.device)),
                    lambda: _load_remote_model(self.aligner).to(self.device))
        return fr, al

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import inspect

        fr, aligner = self._nets()
        aligned, _, landmarks, *_ = aligner(x.to(self.device, torch.float32) * 2 - 1)
        try:
            wants_keypoints = "keypoints" in inspect.signature(fr.model.net.forward).parameters
        except AttributeError as e:
            raise BenchError(f"{self.model}: not a CVLFace recogniser ({e})") from None
        return fr(aligned, landmarks) if wants_keypoints else fr(aligned)
