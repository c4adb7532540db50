"""DreamBooth: fine-tune Stable Diffusion on one identity's photos, then generate that person.

Ruiz, Li, Jampani, Pritch, Rubinstein, Aberman. "DreamBooth: Fine Tuning Text-to-Image
Diffusion Models for Subject-Driven Generation." CVPR 2023. arXiv:2208.12242. Run as
Anti-DreamBooth (Van Le et al., ICCV 2023) evaluates its protections: the threat is a model
personalised on the (protected) photos of a subject.

The generator *fits on a set* (benchmark.fitting): the images of a job are one identity (one
dataset folder; run one job per subject), the whole set is one batch, and one model is
fine-tuned per set, G(x) on the clean photos, G(x_adv) on the protected ones, G(T(x_adv)) on
the transformed protected ones; each fit is cached by the keys of the whole set. Slot i of a
set (the dataset's image i) then gets one generated image with prompt `prompts[i % len(prompts)]`
and the seed of clean image i, so the images of the model trained on protected photos are
paired, prompt and noise, with those of the model trained on clean photos. With P prompts and
a set of N photos each prompt gets N / P images (Anti-DreamBooth generates 16 per prompt from
4 training photos: a deviation to state with the numbers; sweep `generator.prompts` one prompt
per job for N per prompt from the same, cached, fit).

Defaults (VinAIResearch/Anti-DreamBooth at c97e891, scripts/attack_with_aspl.sh, the final
"Train DreamBooth on perturbed examples" call; see benchmark.models.dreambooth for the training
loop's sources): SD 2.1 base at 512 px, UNet and text encoder trained, learning rate 5e-7
constant, batch 2, 1000 steps, prior preservation with 200 class images of "a photo of
person" (weight 1.0), instance prompt "a photo of sks person"; evaluation prompts
"a photo of sks person" and "a dslr portrait of sks person" (its `--inference_prompt`);
sampling as infer.py: 100 steps, guidance 7.5, the model's own scheduler.

What a real run needs: the SD 2.1 base weights (`bench weights pull
stabilityai/stable-diffusion-2-1-base`, or a local diffusers folder as `generator.model`) and a
folder of class images (`generator.class_data_dir`, 200 samples of the base model for "a photo
of person", as the reference generates them); with `class_data_dir: null` prior preservation is
off and the job's notice says so.
"""

import logging
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.errors import BenchError, check
from benchmark.generators.base import Generator
from benchmark.images import generator_for
from benchmark.models import DTYPES, resolve_device
from benchmark.models.diffusion import SCHEDULERS
from benchmark.models.dreambooth import FineTuning, Personalised, load_class_images, prepare
from benchmark.models.hub import require_parts

log = logging.getLogger(__name__)

# config keys that change only what a fitted model makes, not the fit (benchmark.fitting)
GENERATION_KEYS = ("prompts", "inference_steps", "guidance", "scheduler", "negative_prompt",
                   "max_batch", "device")


class DreamBooth(Generator):
    name = "dreambooth"
    version = "1"
    fits_on_set = True
    contract_exemptions: ClassVar[dict[str, str]] = {
        "batch": "fits one model on the whole batch (the set of one identity): an image's "
                 "generation depends on the other images of its set, as DreamBooth's does"}

    def __init__(self, model: str = "stabilityai/stable-diffusion-2-1-base",
                 resolution: int = 512, instance_prompt: str = "a photo of sks person",
                 class_prompt: str = "a photo of person", class_data_dir: str | None = None,
                 num_class_images: int = 200, prior_loss_weight: float = 1.0,
                 train_steps: int = 1000, learning_rate: float = 5e-7,
                 train_batch_size: int = 2, train_text_encoder: bool = True,
                 max_grad_norm: float | None = 1.0,
                 prompts: Sequence[str] = ("a photo of sks person",
                                           "a dslr portrait of sks person"),
                 inference_steps: int = 100, guidance: float = 7.5, scheduler: str = "default",
                 negative_prompt: str = "", dtype: str = "fp32", max_batch: int = 8,
                 lora_rank: int | None = None, device: str = "auto"):
        name = self.name
        check(name, "lora_rank", lora_rank, lora_rank is None or (
              isinstance(lora_rank, int) and not isinstance(lora_rank, bool) and lora_rank >= 1),
              "null (fine-tune every weight, as Anti-DreamBooth) or a LoRA rank >= 1")
        check(name, "model", model, isinstance(model, str) and model.strip() != "",
              "a Hugging Face id, a local diffusers folder or a tiny/* model")
        check(name, "resolution", resolution,
              isinstance(resolution, int) and resolution >= 8 and resolution % 8 == 0,
              "a multiple of 8 (pixels)")
        check(name, "prompts", prompts, isinstance(prompts, (list, tuple)) and len(prompts) > 0
              and all(isinstance(p, str) and p.strip() for p in prompts),
              "a non-empty list of prompts")
        check(name, "inference_steps", inference_steps,
              isinstance(inference_steps, int) and inference_steps >= 1, "an integer >= 1")
        check(name, "guidance", guidance, isinstance(guidance, (int, float)) and guidance >= 0,
              "a number >= 0")
        check(name, "scheduler", scheduler, scheduler in SCHEDULERS, f"one of {list(SCHEDULERS)}")
        check(name, "negative_prompt", negative_prompt, isinstance(negative_prompt, str),
              "a string ('' for none)")
        check(name, "dtype", dtype, dtype in DTYPES, f"one of {list(DTYPES)}")
        check(name, "max_batch", max_batch, isinstance(max_batch, int) and max_batch >= 1,
              "an integer >= 1")
        self.tuning = FineTuning(train_steps, learning_rate, train_batch_size, prior_loss_weight,
                                 train_text_encoder, max_grad_norm,
                                 instance_prompt=instance_prompt,
                                 class_prompt=class_prompt).checked(name)
        self.class_images = load_class_images(name, class_data_dir, num_class_images, resolution)
        if self.class_images is None:
            self.notice = ("dreambooth: no class images (generator.class_data_dir=null), so "
                           "DreamBooth trains without prior preservation (Anti-DreamBooth uses "
                           "200 class images of 'a photo of person')")
        self.model, self.resolution, self.prompts = model, resolution, list(prompts)
        self.inference_steps, self.guidance, self.scheduler = inference_steps, guidance, scheduler
        self.negative_prompt, self.dtype, self.max_batch = negative_prompt, dtype, max_batch
        self.lora_rank = lora_rank
        self.device = resolve_device(device)
        require_parts(model)  # a missing model stops the job before any compute

    def fit_config(self, config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in GENERATION_KEYS}

    def _base(self, seed: int = 0) -> Personalised:
        from benchmark.models.diffusion import load_sd_components

        parts = load_sd_components(self.model, self.dtype, self.device)
        return Personalised(parts, self.tuning.train_text_encoder, self.lora_rank, seed)

    def fit(self, x: torch.Tensor, seed: int) -> np.ndarray:
        """Fine-tune on the set x; the trained weights as one float32 vector."""
        model = self._base(seed)
        losses = model.finetune(prepare(x, self.resolution), self.tuning, generator_for(seed),
                                self.class_images)
        if losses:
            log.info("dreambooth: %d steps on %d image(s), loss %.4f -> %.4f", len(losses),
                     len(x), losses[0], losses[-1])
        return model.state()

    def generate(self, state: np.ndarray, seeds: Sequence[int], slots: Sequence[int],
                 size: tuple[int, int] | None = None) -> torch.Tensor:
        """One image per slot of the set: its prompt by slot, its noise by seed; resized to
        `size` when the set's images are not at the model's resolution."""
        if len(seeds) != len(slots):
            raise BenchError(f"{self.name}: {len(slots)} slots but {len(seeds)} seeds")
        model = self._base().load_state(state)
        prompts = [self.prompts[i % len(self.prompts)] for i in slots]
        y = model.sample(prompts, list(seeds), self.inference_steps, self.guidance,
                         self.resolution, self.scheduler, self.negative_prompt, self.max_batch)
        if size is not None and tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="bicubic", antialias=True,
                              align_corners=False).clamp(0, 1)
        return y

    def edit(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Fit on x and generate one image per input, uncached (the runner caches the fit)."""
        from benchmark.fitting import set_seed

        if len(seeds) != len(x):
            raise BenchError(f"{self.name}: {len(x)} images but {len(seeds)} seeds")
        state = self.fit(x, set_seed(0, [str(s) for s in seeds], "generate"))
        return self.generate(state, seeds, range(len(x)), tuple(x.shape[-2:]))
