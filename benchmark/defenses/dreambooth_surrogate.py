"""What the defenses against DreamBooth personalisation share (Anti-DreamBooth's ASPL and FSMG,
MetaCloak): a surrogate fine-tuned with DreamBooth on the subject's photos, whose denoising loss
L-inf PGD maximises on the protected images, and the class images of its prior preservation.
Each paper's own loop, defaults and sources are in its file (anti_dreambooth.py, metacloak.py).
"""

from collections.abc import Sequence
from typing import ClassVar

import torch

from benchmark.defenses.latent_diffusion import DiffusionDefense
from benchmark.defenses.pgd import LinfPGD
from benchmark.errors import check
from benchmark.images import derive_seed, generator_for
from benchmark.models.dreambooth import FineTuning, Personalised, load_class_images
from benchmark.models.sd_ops import NoiseStreams, encode


class DreamBoothSurrogate(DiffusionDefense):
    """The shared parts of the defenses that attack a DreamBooth-fine-tuned surrogate (ASPL,
    FSMG, MetaCloak): the surrogate's objective and its class images."""

    name = "dreambooth_surrogate"
    contract_exemptions: ClassVar[dict[str, str]] = {
        "batch": "perturbs the batch as one set (one identity): its surrogate is fine-tuned on "
                 "the whole batch, as the references' on the subject's folder"}

    def _setup(self, model: str, eps: float, step: float, iterations: int,
               tuning: FineTuning, class_data_dir: str | None, num_class_images: int,
               dtype: str, precision: str, device: str) -> None:
        self.pgd = LinfPGD(eps, step, iterations, random_start=False, component=self.name)
        self.tuning = tuning.checked(self.name)
        check(self.name, "num_class_images", num_class_images,
              isinstance(num_class_images, int) and num_class_images >= 1, "an integer >= 1")
        self.class_data_dir, self.num_class_images = class_data_dir, num_class_images
        if class_data_dir is not None:  # a missing folder stops the job before any compute
            load_class_images(self.name, class_data_dir, num_class_images, 8)
        else:
            self.notice = (f"{self.name}: no class images (defense.class_data_dir=null), so its "
                           f"surrogate fine-tunes without prior preservation")
        self._class_images: dict[int, torch.Tensor | None] = {}
        self.surrogate: Personalised | None = None  # the model the last PGD run attacked
        self._setup_model(model, dtype, device, precision)

    def class_images(self, x: torch.Tensor) -> torch.Tensor | None:
        size = x.shape[-1]
        if size not in self._class_images:
            self._class_images[size] = load_class_images(self.name, self.class_data_dir,
                                                         self.num_class_images, size)
        return self._class_images[size]

    def surrogate_loss(self, model: Personalised, x: torch.Tensor, noise: NoiseStreams,
                       cond: torch.Tensor) -> torch.Tensor:
        """The surrogate's denoising loss of x per image (one draw of z, t and eps)."""
        noise.begin()
        with self.autocast():
            z = encode(model.vae, x, noise)
            t = noise.randint(len(model.acp))
            return model.denoising_error(z, cond, t, noise.randn_like(z))

    def _attack(self, model: Personalised, x: torch.Tensor, seeds: Sequence[int],
                noise: NoiseStreams, start: torch.Tensor | None = None) -> torch.Tensor:
        self.surrogate = model
        cond = model.condition(self.tuning.instance_prompt, len(x))
        return self.pgd.maximize(x, lambda v: self.surrogate_loss(model, v, noise, cond), seeds,
                                 start=start)

    @staticmethod
    def _set_generator(seeds: Sequence[int], stage: str) -> torch.Generator:
        return generator_for(derive_seed(0, ",".join(map(str, seeds)), stage))
