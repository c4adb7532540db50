"""CLIP scores (Radford et al., ICML 2021): CLIP-I (image-image) and CLIP-S (text-image).

- `mode: image`, CLIP-I as DreamBooth (Ruiz et al., CVPR 2023) reports subject
  fidelity: cosine similarity of the CLIP image embeddings of the two images of
  the pair, in [-1, 1]; high = the edit kept the subject (the protection failed).
- `mode: text`, CLIP-S, the CLIPScore of Hessel et al. (EMNLP 2021) in
  torchmetrics' scaling: `scale * max(cos(E_img(a), E_txt(prompt)), 0)` with
  scale 100 (Hessel et al. use 2.5); how well the first image of the pair
  follows the edit prompt. The second image is not used.

Model: a transformers CLIP (default `openai/clip-vit-large-patch14`, torchmetrics'
default) from the local Hugging Face cache or a local directory; it is never
downloaded at run time. Where it is missing the metric is reported unavailable
(one warning, no rows). Preprocessing follows CLIP's: bicubic resize of the
shorter side to the model's input size (antialiased, as Pillow does), centre
crop, the model's mean/std normalisation; done in torch, batched, on `device`.
Image embeddings are cached per image by the runner.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import check
from benchmark.metrics.base import Metric
from benchmark.models import resolve_device, shared

MODES = ("image", "text")
# OpenAI CLIP's normalisation (used where a model folder has no preprocessor_config.json)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def local_model_file(model: str, filename: str) -> str | None:
    """`filename` of `model` (a local directory or a Hugging Face id in the local cache)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path / filename) if (path / filename).is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, filename)
    return found if isinstance(found, str) else None


def _features(output) -> torch.Tensor:
    """transformers 4 returns the projected embedding; 5 wraps it in `pooler_output`."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_clip(model: str, device: torch.device):
    from transformers import CLIPModel

    net = CLIPModel.from_pretrained(model, local_files_only=True)
    return net.eval().requires_grad_(False).to(device)


class CLIPImageEmbedder(nn.Module):
    """Images (NCHW in [0, 1]) -> L2-normalised CLIP image embeddings."""

    version = "1"

    def __init__(self, model: str, device: str = "auto"):
        super().__init__()
        self.model_id, self.device = model, resolve_device(device)
        mean, std = CLIP_MEAN, CLIP_STD
        preprocessor = local_model_file(model, "preprocessor_config.json")
        if preprocessor:
            spec = json.loads(Path(preprocessor).read_text())
            mean, std = spec.get("image_mean", mean), spec.get("image_std", std)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @property
    def net(self):
        return shared(("clip", self.model_id, str(self.device)),
                      lambda: load_clip(self.model_id, self.device))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        size = self.net.config.vision_config.image_size
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))),
                          mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top:top + size, left:left + size]
        return (x - self.mean.to(x)) / self.std.to(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x.to(self.device, torch.float32))
        return F.normalize(_features(self.net.get_image_features(pixel_values=x)), dim=-1)


class CLIPScore(Metric):
    name = "clip_score"
    higher_is_better = True

    def __init__(self, mode: str = "image", model: str = "openai/clip-vit-large-patch14",
                 prompt: str | None = None, scale: float = 100.0, device: str = "auto"):
        check(self.name, "mode", mode, mode in MODES, f"one of {MODES}")
        check(self.name, "prompt", prompt, mode == "image" or (isinstance(prompt, str) and prompt),
              "the edit prompt (a non-empty string) with mode: text")
        check(self.name, "scale", scale, isinstance(scale, (int, float)) and scale > 0,
              "a number > 0")
        self.mode, self.model, self.prompt, self.scale = mode, model, prompt, float(scale)
        self.device = resolve_device(device)
        if local_model_file(model, "config.json") is None:
            self.unavailable(f"CLIP model '{model}' is neither a local directory nor in the "
                             f"Hugging Face cache; download it where there is internet access "
                             f"(`hf download {model}`), point HF_HOME at a cache that holds it, "
                             f"or set metric.{self.name}.model to a local directory")
            return
        self.embedder = CLIPImageEmbedder(model, device)
        self.embedder_config = {"clip_image_embedding": model}
        self._text: torch.Tensor | None = None

    def text_embedding(self) -> torch.Tensor:
        if self._text is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model, local_files_only=True)
            tokens = tokenizer([self.prompt], padding=True, truncation=True, return_tensors="pt")
            with torch.no_grad():
                out = self.embedder.net.get_text_features(**tokens.to(self.device))
            self._text = F.normalize(_features(out), dim=-1).double().cpu()
        return self._text

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = F.normalize(a.double(), dim=-1)
        if self.mode == "image":
            return (a * F.normalize(b.double(), dim=-1)).sum(-1)
        return self.scale * (a @ self.text_embedding().T).squeeze(-1).clamp_min(0)
