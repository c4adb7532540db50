"""The base class of the defenses that attack a Stable Diffusion model.

The arithmetic they share (seeded noise streams, encode / decode, prompt
embedding, noise prediction, the denoising loss) and the model handle live in
`benchmark.models.sd_ops`, where the purifiers use them too.
"""

import torch

from benchmark.defenses.base import Defense
from benchmark.defenses.precision import FP32, ReferencePrecision, autocast_at, resolve_precision
from benchmark.models import resolve_device
from benchmark.models.sd_ops import DiffusionModel, embed_prompts


class DiffusionDefense(Defense):
    """Base of the defenses that attack a Stable Diffusion model.

    `precision` runs the attack's forward passes under autocast (fp16 / bf16) while
    the perturbation and its gradient stay in float32; `dtype` is the precision the
    weights are loaded in (shared with any generator that uses the same model);
    `precision: reference` takes both from `reference_precision`, the format the
    defense's reference code ran in (benchmark.defenses.precision).
    """

    model_parts: tuple[str, ...] = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")
    reference_precision: ReferencePrecision = FP32

    def _setup_model(self, model: str, dtype: str, device: str, precision: str) -> None:
        resolved = resolve_precision(self.name, precision, dtype, self.reference_precision,
                                     resolve_device(device))
        self.diffusion = DiffusionModel(self.name, model, resolved.weights, device,
                                        self.model_parts)
        resolved.adopt(self)  # self.precision: what autocast() runs at

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
        return autocast_at(self.device, self.precision)
