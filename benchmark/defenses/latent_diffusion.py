"""The base class of the defenses that attack a Stable Diffusion model.

The arithmetic they share (seeded noise streams, encode / decode, prompt
embedding, noise prediction, the denoising loss) and the model handle live in
`benchmark.models.sd_ops`, where the purifiers use them too.
"""

from contextlib import nullcontext

import torch

from benchmark.defenses.base import Defense
from benchmark.errors import check
from benchmark.models import DTYPES
from benchmark.models.sd_ops import DiffusionModel, embed_prompts

PRECISIONS = ("fp32", "fp16", "bf16")


class DiffusionDefense(Defense):
    """Base of the defenses that attack a Stable Diffusion model.

    `precision` runs the attack's forward passes under autocast (fp16 / bf16) while
    the perturbation and its gradient stay in float32; `dtype` is the precision the
    weights are loaded in (shared with any generator that uses the same model).
    """

    model_parts: tuple[str, ...] = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")

    def _setup_model(self, model: str, dtype: str, device: str, precision: str) -> None:
        check(self.name, "precision", precision, precision in PRECISIONS, f"one of {PRECISIONS}")
        self.diffusion = DiffusionModel(self.name, model, dtype, device, self.model_parts)
        self.precision = precision

    @property
    def parts(self):
        return self.diffusion.load()

    @property
    def device(self) -> torch.device:
        return self.diffusion.device

    def prompt_condition(self, n: int) -> torch.Tensor:
        """The text embedding of `self.prompt`, once per image of a batch of n."""
        return embed_prompts(self.parts, [self.prompt]).expand(n, -1, -1)

    def autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])
