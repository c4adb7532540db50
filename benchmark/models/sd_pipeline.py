"""The core of every diffusers-based editor: model loading, prompts, paired noise, batching.

`PipelineEditor` runs a diffusers pipeline over a batch with paired noise; the
generators (`benchmark.generators.diffusion.DiffusionEditor` and its subclasses)
and the diffusion purifiers (`benchmark.transforms.diffpure`) are built on it.

Paired noise: each image's noise comes from its own `torch.Generator`, seeded
with that image's seed (one per image, derived from the clean image), so G(x),
G(x_adv) and G(T(x_adv)) of one subject start from the same latent noise, take
the same scheduler randomness and get the same prompt; their difference comes
from the input alone. The generators live on the CPU and every draw is made in
float32 (`diffusers_noise.float32_noise`), so the noise is the same on any device and in
any precision. An image's result does not depend on the other images of its
batch beyond floating-point rounding.

Prompts (or instructions) are a config list; each image gets one, chosen from
its seed, so the clean and the protected image of a subject get the same one.

The safety checker is not loaded: the benchmark scores edits, and a checker
that blacks out some of them would confound the comparison.
"""

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from benchmark.errors import BenchError, check
from benchmark.images import derive_seed, generator_for
from benchmark.models import DTYPES, resolve_device, shared
from benchmark.models.diffusers_noise import float32_noise
from benchmark.models.diffusion import SCHEDULERS, SDComponents, load_sd_components
from benchmark.models.hub import require_parts

log = logging.getLogger(__name__)


def choose(items: Sequence[str], seed: int) -> str:
    """One item per seed, uniform over the list, independent of the noise drawn from the seed."""
    return items[derive_seed(seed, "", "prompt") % len(items)]


class PipelineEditor:
    """Runs a Stable Diffusion pipeline with paired noise: subclasses name a pipeline and call it.

    `name` (the component's name, set by the subclass) labels the error messages.
    """

    pipeline_class = "StableDiffusionImg2ImgPipeline"  # a diffusers class name
    prompts_key = "prompts"  # what the config calls the text list

    def __init__(self, model: str, prompts: Sequence[str], steps: int = 50,
                 guidance: float = 7.5, scheduler: str = "default", negative_prompt: str = "",
                 resolution: int | None = 512, dtype: str = "fp32", device: str = "auto",
                 compile: bool = False, max_batch: int = 8):
        name = self.name
        check(name, "model", model, isinstance(model, str) and model.strip() != "",
              "a Hugging Face id, a local diffusers folder or a tiny/* model")
        check(name, self.prompts_key, prompts,
              isinstance(prompts, (list, tuple)) and len(prompts) > 0
              and all(isinstance(p, str) for p in prompts), "a non-empty list of strings")
        check(name, "steps", steps, isinstance(steps, int) and steps >= 1, "an integer >= 1")
        check(name, "guidance", guidance,
              isinstance(guidance, (int, float)) and guidance >= 0, "a number >= 0")
        check(name, "scheduler", scheduler, scheduler in SCHEDULERS, f"one of {list(SCHEDULERS)}")
        check(name, "negative_prompt", negative_prompt, isinstance(negative_prompt, str),
              "a string ('' for none)")
        check(name, "resolution", resolution,
              resolution is None
              or (isinstance(resolution, int) and resolution >= 8 and resolution % 8 == 0),
              "null (the input's size) or a multiple of 8 (pixels)")
        check(name, "dtype", dtype, dtype in DTYPES, f"one of {list(DTYPES)}")
        check(name, "compile", compile, isinstance(compile, bool), "true or false")
        check(name, "max_batch", max_batch, isinstance(max_batch, int) and max_batch >= 1,
              "an integer >= 1")
        self.model, self.prompts, self.steps, self.guidance = model, list(prompts), steps, guidance
        self.scheduler, self.negative_prompt = scheduler, negative_prompt
        self.resolution = resolution
        self.dtype, self.compile, self.max_batch = dtype, compile, max_batch
        self.device = resolve_device(device)
        require_parts(model)  # a missing model stops the job before any compute

    # -- models, loaded on first use so that a job served from the cache loads none ------------

    @property
    def components(self) -> SDComponents:
        return load_sd_components(self.model, self.dtype, self.device)

    def _unet(self):
        unet = self.components.unet
        if not self.compile:
            return unet
        key = ("compiled-unet", self.model, self.dtype, str(self.device))
        return shared(key, lambda: torch.compile(unet))

    @property
    def pipeline(self):
        key = ("pipeline", type(self).pipeline_class, self.model, self.dtype, str(self.device),
               self.compile)
        return shared(key, self._build_pipeline)

    def _build_pipeline(self):
        import diffusers

        parts = self.components
        cls = getattr(diffusers, self.pipeline_class)
        pipe = cls(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                   unet=self._unet(), scheduler=parts.scheduler, safety_checker=None,
                   feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -- editing ------------------------------------------------------------------------------

    def prompt_for(self, seed: int) -> str:
        return choose(self.prompts, seed)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input at the editing resolution (bicubic, antialiased), float in [0, 1]."""
        x = x.float()
        if self.resolution is not None and x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bicubic",
                              antialias=True, align_corners=False).clamp(0, 1)
        return x

    def edit(self, x: torch.Tensor, seeds: Sequence[int],
             masks: torch.Tensor | None = None) -> torch.Tensor:
        if len(seeds) != len(x):
            raise BenchError(f"{self.name}: {len(x)} images but {len(seeds)} seeds")
        if masks is not None and len(masks) != len(x):
            raise BenchError(f"{self.name}: {len(x)} images but {len(masks)} masks")
        out = []
        for start in range(0, len(x), self.max_batch):
            chunk = slice(start, start + self.max_batch)
            out.append(self._edit_batch(x[chunk], list(seeds[chunk]),
                                        None if masks is None else masks[chunk]))
        return torch.cat(out)

    def _edit_batch(self, x: torch.Tensor, seeds: list[int],
                    masks: torch.Tensor | None = None) -> torch.Tensor:
        x = self.prepare(x).cpu()
        pipe = self.pipeline
        pipe.scheduler = self.components.make_scheduler(self.scheduler)  # fresh state per call
        negative = [self.negative_prompt] * len(seeds) if self.negative_prompt else None
        common = {
            "prompt": [self.prompt_for(s) for s in seeds], "negative_prompt": negative,
            "num_inference_steps": self.steps, "guidance_scale": self.guidance,
            "generator": [generator_for(s) for s in seeds], "output_type": "pt"}
        with torch.no_grad(), float32_noise():
            # only editors that take the dataset's masks (needs_masks) are given them
            extra = {} if masks is None else {"masks": masks.cpu()}
            y = self.call_pipeline(pipe, x, seeds, common, **extra)
        return y.float().clamp(0, 1).cpu()

    def call_pipeline(self, pipe, x: torch.Tensor, seeds: list[int], common: dict) -> torch.Tensor:
        raise NotImplementedError


class Img2ImgEditor(PipelineEditor):
    """SDEdit / img2img: noise the input to `strength` of the schedule, denoise it toward a prompt.

    Only int(steps * strength) denoising steps run.
    """

    name = "img2img"
    pipeline_class = "StableDiffusionImg2ImgPipeline"

    def __init__(self, model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
                 prompts=("a photo of a person",), strength: float = 0.5, steps: int = 50,
                 guidance: float = 7.5, scheduler: str = "default", **kwargs):
        check(self.name, "strength", strength,
              isinstance(strength, (int, float)) and 0 < strength <= 1, "a number in (0, 1]")
        check(self.name, "steps", steps,
              isinstance(steps, int) and steps >= 1 and int(steps * strength) >= 1,
              f"an integer with int(steps * strength) >= 1 (strength={strength})")
        super().__init__(model, prompts, steps, guidance, scheduler, **kwargs)
        self.strength = float(strength)

    def call_pipeline(self, pipe, x, seeds, common):
        return pipe(image=x, strength=self.strength, **common).images
