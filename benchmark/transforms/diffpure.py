"""DiffPure: diffuse the input to a small timestep t, then denoise it with a diffusion model.

Nie, Guo, Huang, Xiao, Vahdat, Anandkumar. "Diffusion Models for Adversarial
Purification." ICML 2022. arXiv:2205.07460. The forward diffusion to t* drowns
the adversarial perturbation in Gaussian noise; the reverse process brings the
image back to the data manifold. The study and the portrait-protection papers
run it at t* = 0.1 (t = 100 of 1000) on 256 px inputs (design doc; GrIDPure's
diffpure.py uses 256 px and t = 100 by default).

Here the diffusion model is a Stable Diffusion model through diffusers'
img2img pipeline (SDEdit, Meng et al. 2022, is the same operation in latent
space): the image, resized to `resolution`, is encoded, noised to timestep t
with the image's own seeded noise, denoised with an empty prompt and no
classifier-free guidance, decoded, and resized back to the input size
(PyTorch bicubic, antialiased). With the DDPM scheduler over `steps` = 1000
timesteps every one of the t reverse steps runs, as in DiffPure; fewer steps
or `scheduler: ddim` trade fidelity to the method for speed.

Strength: t 0 -> 300.
"""

import torch

from benchmark.errors import check
from benchmark.models.sd_pipeline import Img2ImgEditor
from benchmark.transforms.base import Transform, check_number, lerp
from benchmark.transforms.resize import resize_tensor

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


class DiffPure(Transform):
    name = "diffpure"
    cpu_batch = None  # batches go to the model as they are
    random = True

    def __init__(self, model: str = SD15, t: int = 100, steps: int = 1000,
                 scheduler: str = "ddpm", resolution: int | None = 256, prompt: str = "",
                 guidance: float = 1.0, dtype: str = "fp32", device: str = "auto",
                 max_batch: int = 8, strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            t = max(1, round(lerp(strength, 0, 300)))
        check_number(self.name, "t", t, 1, 1000, "an integer timestep in 1..1000", integer=True)
        if self.is_identity:  # strength 0: the untouched image, no model and no step
            self.t, self.editor = 0, None
            return
        check(self.name, "steps", steps,
              isinstance(steps, int) and steps >= 1 and int(steps * t / 1000) >= 1,
              f"an integer with int(steps * t / 1000) >= 1 (t={t})")
        check(self.name, "prompt", prompt, isinstance(prompt, str), "a string ('' = unconditional)")
        self.t = t
        self.editor = Img2ImgEditor(model=model, prompts=[prompt], strength=t / 1000,
                                    steps=steps, guidance=guidance, scheduler=scheduler,
                                    resolution=resolution, dtype=dtype, device=device,
                                    max_batch=max_batch)
        self.editor.name = self.name

    def purify(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Purified images at the input's size."""
        y = self.editor.edit(x, seeds).to(x.device, x.dtype)
        return resize_tensor(y, (x.shape[-1], x.shape[-2]), "bicubic", antialias=True)

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        return self.purify(x, seeds)
