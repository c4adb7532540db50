"""DreamBooth fine-tuning and sampling on the shared Stable Diffusion parts.

Ruiz, Li, Jampani, Pritch, Rubinstein, Aberman. "DreamBooth: Fine Tuning Text-to-Image
Diffusion Models for Subject-Driven Generation." CVPR 2023. arXiv:2208.12242.

What the DreamBooth generator fits (benchmark.generators.dreambooth) and what Anti-DreamBooth's
ASPL and FSMG fine-tune their surrogates with (benchmark.defenses.anti_dreambooth). Written from
reading Anti-DreamBooth's scripts (VinAIResearch/Anti-DreamBooth at c97e891, read, not copied):

- the UNet and the text encoder are both trained (`--train_text_encoder`), the VAE is frozen;
- AdamW, betas (0.9, 0.999), weight decay 1e-2, eps 1e-8 (train_dreambooth.py:295, :770-781),
  learning rate 5e-7, constant, no warm-up (scripts/attack_with_aspl.sh: `--learning_rate=5e-7
  --lr_scheduler=constant --lr_warmup_steps=0`), gradient norm clipped to 1.0
  (train_dreambooth.py:302, :992);
- per step a batch of instance images (`--train_batch_size=2`) with the instance prompt
  "a photo of sks person", and with prior preservation as many class images with the class
  prompt "a photo of person" (`--num_class_images=200`, `--prior_loss_weight=1.0`); the loss is
  MSE(instance) + prior_loss_weight * MSE(class) (train_dreambooth.py:971-981);
- a timestep t ~ U[0, T) and noise eps ~ N(0, I) per image, z_t = q(z_t | z_0) with z_0 a
  sample of the VAE posterior, the target eps (or v for a v-prediction model; :943-953);
- images resized (bilinear) and centre-cropped to the resolution, in [-1, 1] (:451-456);
- 1000 steps (`--max_train_steps=1000`) for the DreamBooth run that is evaluated.

The reference trains in bf16 mixed precision (`--mixed_precision=bf16`); here the weights'
dtype is the config's `dtype` (fp32 by default) and the loss is computed in float32.

Class images: the reference samples the missing ones with the base model into
`--class_data_dir` before training; here `class_data_dir` names a folder that holds them
(a missing folder or too few images is a one-line error saying how many are needed), and
`null` turns prior preservation off (stated in the component's notice).

All randomness (the order of the instance and class images, t, eps, the posterior samples)
comes from one seeded torch.Generator, so a fit is reproducible.
"""

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import BenchError, check
from benchmark.images import from_pil, generator_for, read_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class FineTuning:
    """One DreamBooth fine-tuning run's settings (Anti-DreamBooth's values by default)."""

    steps: int = 1000
    learning_rate: float = 5e-7
    batch: int = 2
    prior_loss_weight: float = 1.0
    train_text_encoder: bool = True
    max_grad_norm: float | None = 1.0
    weight_decay: float = 1e-2
    instance_prompt: str = "a photo of sks person"
    class_prompt: str = "a photo of person"

    def checked(self, component: str, key: str = "") -> "FineTuning":
        p = f"{key}." if key else ""
        check(component, f"{p}steps", self.steps,
              isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps >= 0,
              "an integer >= 0")
        check(component, f"{p}learning_rate", self.learning_rate,
              isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0, "> 0")
        check(component, f"{p}batch", self.batch,
              isinstance(self.batch, int) and self.batch >= 1, "an integer >= 1")
        check(component, f"{p}prior_loss_weight", self.prior_loss_weight,
              isinstance(self.prior_loss_weight, (int, float)) and self.prior_loss_weight >= 0,
              "a number >= 0")
        check(component, f"{p}train_text_encoder", self.train_text_encoder,
              isinstance(self.train_text_encoder, bool), "true or false")
        check(component, f"{p}max_grad_norm", self.max_grad_norm,
              self.max_grad_norm is None
              or (isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0),
              "null (no clipping) or a norm > 0")
        check(component, f"{p}weight_decay", self.weight_decay,
              isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, ">= 0")
        for name in ("instance_prompt", "class_prompt"):
            value = getattr(self, name)
            check(component, f"{p}{name}", value, isinstance(value, str) and value.strip() != "",
                  "a non-empty string")
        return self


def load_class_images(component: str, folder: str | None, count: int,
                      resolution: int) -> torch.Tensor | None:
    """The first `count` images of `folder` (sorted by name), resized and centre-cropped; None
    for no folder (prior preservation off)."""
    check(component, "num_class_images", count, isinstance(count, int) and count >= 1,
          "an integer >= 1")
    if folder is None:
        return None
    root = Path(str(folder)).expanduser()
    if not root.is_dir():
        raise BenchError(f"{component}: class_data_dir={str(folder)!r} is not a folder; it holds "
                         f"the prior-preservation class images (Anti-DreamBooth samples 200 with "
                         f"the base model for 'a photo of person'), or set class_data_dir=null")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < count:
        raise BenchError(f"{component}: class_data_dir={str(root)!r} holds {len(files)} image(s), "
                         f"num_class_images={count} needs {count}: add class images (samples of "
                         f"the base model for the class prompt) or lower num_class_images")
    return torch.stack([prepare(from_pil(read_image(p))[None], resolution)[0]
                        for p in files[:count]])


def prepare(x: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Resize the shorter side to `resolution` (bilinear) and centre-crop it, in [0, 1]."""
    if resolution is None or x.shape[-2:] == (resolution, resolution):
        return x.float()
    h, w = x.shape[-2:]
    scale = resolution / min(h, w)
    size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
    x = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return x[..., top:top + resolution, left:left + resolution].clamp(0, 1)


# diffusers' examples/dreambooth/train_dreambooth_lora.py: the attention projections of the UNet
# (add_*_proj: the added-KV attention some UNets have) and of the CLIP text encoder
UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trained low-rank update (Hu et al., "LoRA", ICLR 2022):
    W x + (alpha / r) B A x, with alpha = r (scale 1), A ~ N(0, 1/r^2) and B = 0 at the start,
    as the LoRA DreamBooth script initialises peft's adapters (`init_lora_weights="gaussian"`,
    `lora_alpha=rank`), so that training starts from the base model itself."""

    def __init__(self, base: nn.Linear, rank: int, generator: torch.Generator):
        super().__init__()
        self.base = base.requires_grad_(False)
        down = torch.randn(rank, base.in_features, generator=generator) / rank
        self.down = nn.Parameter(down.to(base.weight))
        self.up = nn.Parameter(torch.zeros(base.out_features, rank).to(base.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.down.to(x.dtype)), self.up.to(x.dtype))


def add_lora(module: nn.Module, targets: Sequence[str], rank: int,
             generator: torch.Generator) -> int:
    """Wrap every linear layer of `module` whose name ends with a target (in module order, so
    the same seed gives the same adapters); returns how many were wrapped."""
    names = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)
             and any(name == t or name.endswith(f".{t}") for t in targets)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, generator))
    return len(names)


def _trainable(module: nn.Module, train: bool) -> nn.Module:
    module = copy.deepcopy(module)
    for p in module.parameters():
        p.requires_grad_(train)
    return module.train(train)


class Personalised:
    """A UNet and text encoder to fine-tune (copies of the shared, frozen ones) with the frozen
    VAE, tokenizer and noise schedule of their model. `state()` / `load_state()` move the
    trained weights as one float32 vector (what benchmark.fitting caches)."""

    def __init__(self, parts, train_text_encoder: bool = True, lora_rank: int | None = None,
                 lora_seed: int = 0):
        """`lora_rank`: train rank-r adapters of the attention projections (LoRA DreamBooth)
        instead of every weight; they are then the state, drawn from `lora_seed`."""
        from benchmark.models.sd_ops import alphas_cumprod

        self.parts = parts
        self.vae, self.tokenizer = parts.vae, parts.tokenizer
        self.lora_rank = lora_rank
        self.unet = _trainable(parts.unet, lora_rank is None)
        self.text_encoder = _trainable(parts.text_encoder,
                                       train_text_encoder and lora_rank is None)
        if lora_rank is not None:
            generator = torch.Generator().manual_seed(lora_seed)
            wrapped = add_lora(self.unet, UNET_LORA_TARGETS, lora_rank, generator)
            if train_text_encoder:
                wrapped += add_lora(self.text_encoder, TEXT_LORA_TARGETS, lora_rank, generator)
            if not wrapped:
                raise BenchError(f"{parts.model}: no attention projection to adapt with LoRA "
                                 f"(looked for {', '.join(UNET_LORA_TARGETS)})")
            self.unet.train()
            self.text_encoder.train(train_text_encoder)
        self.train_text_encoder = train_text_encoder
        self.acp = alphas_cumprod(parts)
        self.prediction_type = parts.scheduler_config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise BenchError(f"{parts.model}: prediction_type={self.prediction_type!r} is not "
                             f"supported (epsilon or v_prediction)")

    def copy(self) -> "Personalised":
        clone = copy.copy(self)
        clone.unet = copy.deepcopy(self.unet)
        clone.text_encoder = copy.deepcopy(self.text_encoder)
        return clone

    def _trained(self) -> list[nn.Parameter]:
        modules = [self.unet, *([self.text_encoder] if self.train_text_encoder else [])]
        if self.lora_rank is not None:
            return [p for m in modules for lora in m.modules() if isinstance(lora, LoRALinear)
                    for p in (lora.down, lora.up)]
        return [p for m in modules for p in m.parameters()]

    def state(self) -> np.ndarray:
        vector = nn.utils.parameters_to_vector([p.detach().float() for p in self._trained()])
        return vector.cpu().numpy().astype(np.float32)

    def load_state(self, state: np.ndarray) -> "Personalised":
        params = self._trained()
        expected = sum(p.numel() for p in params)
        if state.shape != (expected,):
            raise BenchError(f"a fitted state of {state.shape} does not fit {self.parts.model} "
                             f"({expected} trained values)")
        with torch.no_grad():
            nn.utils.vector_to_parameters(torch.from_numpy(state).to(params[0]), params)
        return self

    # -- the pieces of the denoising objective ---------------------------------------------------

    def condition(self, prompt: str, n: int, grad: bool = False) -> torch.Tensor:
        ids = self.tokenizer([prompt], padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length,
                             return_tensors="pt").input_ids
        device = next(self.text_encoder.parameters()).device
        with torch.set_grad_enabled(grad):
            return self.text_encoder(ids.to(device))[0].expand(n, -1, -1)

    def denoising_error(self, z: torch.Tensor, cond: torch.Tensor, t: torch.Tensor,
                        eps: torch.Tensor) -> torch.Tensor:
        """Per image: mean squared error of the UNet's prediction against its target."""
        from benchmark.models.sd_ops import add_noise, predict_noise

        pred = predict_noise(self.unet, add_noise(self.acp, z, eps, t), t, cond)
        if self.prediction_type == "epsilon":
            target = eps
        else:  # v = sqrt(a_t) eps - sqrt(1 - a_t) z_0
            a = self.acp.to(z.device)[t].float().view(-1, 1, 1, 1)
            target = a.sqrt() * eps - (1 - a).sqrt() * z
        return (pred - target.float()).pow(2).flatten(1).mean(1)

    def latents(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A sample of the VAE posterior of images in [0, 1], scaled (the UNet's input)."""
        from benchmark.models.sd_ops import latent_moments

        mean, std = latent_moments(self.vae, x)
        draw = torch.randn(mean.shape, generator=generator).to(mean)
        return (mean + std * draw) * self.vae.config.scaling_factor

    def draws(self, z: torch.Tensor, generator: torch.Generator):
        t = torch.randint(len(self.acp), (len(z),), generator=generator).to(z.device)
        return t, torch.randn(z.shape, generator=generator).to(z)

    # -- fine-tuning ------------------------------------------------------------------------------

    def finetune(self, images: torch.Tensor, tuning: FineTuning, generator: torch.Generator,
                 class_images: torch.Tensor | None = None,
                 done: Callable[[int], None] | None = None) -> list[float]:
        """DreamBooth steps on `images` (in [0, 1], at the training resolution); returns the
        loss of each step. A new AdamW each call, as the reference's train_one_epoch.
        `done(k)` is called with the number of steps done, before each step and after the
        last (MetaCloak's snapshots of one run)."""
        params = self._trained()
        optimizer = torch.optim.AdamW(params, lr=tuning.learning_rate, betas=(0.9, 0.999),
                                      weight_decay=tuning.weight_decay, eps=1e-8)
        device = next(self.unet.parameters()).device
        order = torch.randperm(len(images), generator=generator)
        class_order = (None if class_images is None
                       else torch.randperm(len(class_images), generator=generator))
        self.unet.train()
        self.text_encoder.train(self.train_text_encoder)
        losses = []
        for step in range(tuning.steps):
            if done is not None:
                done(step)
            pick = order[[(step * tuning.batch + j) % len(images) for j in range(tuning.batch)]]
            x = images[pick].to(device)
            with torch.no_grad():
                z = self.latents(x, generator)
            t, eps = self.draws(z, generator)
            cond = self.condition(tuning.instance_prompt, len(z), grad=self.train_text_encoder)
            loss = self.denoising_error(z, cond, t, eps).mean()
            if class_images is not None and tuning.prior_loss_weight > 0:
                cpick = class_order[[(step * tuning.batch + j) % len(class_images)
                                     for j in range(tuning.batch)]]
                with torch.no_grad():
                    zc = self.latents(class_images[cpick].to(device), generator)
                tc, epsc = self.draws(zc, generator)
                ccond = self.condition(tuning.class_prompt, len(zc), grad=self.train_text_encoder)
                loss = loss + tuning.prior_loss_weight * self.denoising_error(
                    zc, ccond, tc, epsc).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tuning.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, tuning.max_grad_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
        if done is not None:
            done(tuning.steps)
        self.unet.eval()
        self.text_encoder.eval()
        return losses

    # -- sampling ---------------------------------------------------------------------------------

    def sample(self, prompts: Sequence[str], seeds: Sequence[int], steps: int, guidance: float,
               resolution: int, scheduler: str = "default", negative_prompt: str = "",
               max_batch: int = 8) -> torch.Tensor:
        """Text-to-image with the fine-tuned model: one image per (prompt, seed), each from its
        own seeded CPU generator (float32 draws), in [0, 1]."""
        import diffusers

        from benchmark.models.diffusers_noise import float32_noise

        pipe = diffusers.StableDiffusionPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
            unet=self.unet, scheduler=self.parts.make_scheduler(scheduler), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        out = []
        for start in range(0, len(seeds), max_batch):
            chunk = slice(start, start + max_batch)
            pipe.scheduler = self.parts.make_scheduler(scheduler)  # fresh state per call
            negative = ([negative_prompt] * len(seeds[chunk])) if negative_prompt else None
            with torch.no_grad(), float32_noise():
                y = pipe(prompt=list(prompts[chunk]), negative_prompt=negative,
                         num_inference_steps=steps, guidance_scale=guidance, height=resolution,
                         width=resolution, generator=[generator_for(s) for s in seeds[chunk]],
                         output_type="pt").images
            out.append(y.float().clamp(0, 1).cpu())
        return torch.cat(out)
