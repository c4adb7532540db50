"""Anti-Forgery: a perceptual-aware perturbation on the Lab colour channels against GAN editors.

Wang, Huang, Chen, Liu, Chen and Wang, "Anti-Forgery: Towards a Stealthy and Robust
DeepFake Disruption Attack via Adversarial Perceptual-aware Perturbations", IJCAI
2022. arXiv:2206.00477. Defaults from github.com/AbstractTeen/AntiForgery:

- color_space.py `rgb2lab`: L -> (L - 50) / 100, a and b -> a / 110, b / 110; the
  perturbation is added to the scaled a/b channels only (utils.py `lab_attack`), so
  lightness is untouched; here through kornia's `rgb_to_lab` / `lab_to_rgb` (the same
  sRGB/D65 formulas; kornia clips the linear RGB of out-of-gamut colours to [0, 1]).
- `epsilon` on the scaled a/b, the perturbation clamped to it (`torch.clamp(pert_a,
  -epsilon, epsilon)`), starting at 0; Adam; values and lines:
  configs/defense/anti_forgery.yaml's card.
- loss `-MSELoss(G(x_adv, c_i), G(x, c_i))` with `c_i = c_trg[i % 5]`: one of StarGAN's
  five targets per iteration in turn (`condition: cycle`).

Adam moves each value by about lr per step, so after 100 steps the perturbation stays
within about 100 x 1e-4 = 0.01 (1.1 a/b units) and the 0.05 clamp never binds at
these defaults. The reference optimises an unclamped variable and clamps where it is
used; here the PGD engine's Adam projects the variable onto the bound after each step
(the same result while the bound does not bind).

The engine optimises v = ab / 2 + 1/2 (a [0, 1] variable), whose gradient is twice the
reference's, so Adam's epsilon is doubled too (`adam_eps` 2e-8 for torch's 1e-8): the
iterates are the reference's up to float rounding (with 1e-8 Adam's epsilon would act at
half strength, which matters where gradients are near 1e-8, as on the random test
editors).

Two differences from utils.py `lab_attack`, kept on purpose:
- it returns X_new, the image built before its last `optimizer.step()` (the perturbation
  of iteration 99); here the image of the perturbation after all 100 steps is returned.
- its xyz2rgb takes `rgb ** (1 / 2.4)` also where rgb is exactly 0 (masked out afterwards),
  whose gradient is NaN there: a black pixel gives NaN gradients and, through Adam, NaN
  perturbations; kornia's conversion has finite gradients there.

Reference model: StarGAN's CelebA generator, the `editor`. Reference precision: fp32.
"""

from collections.abc import Sequence
from typing import ClassVar

import torch

from benchmark.defenses.gan_editors import GanEditorDefense
from benchmark.defenses.pgd import PGD
from benchmark.defenses.precision import FP32
from benchmark.errors import check

AB_SCALE = 110.0  # color_space.py: ab_rs = lab[:, 1:] / 110
ADAM_EPS = 1e-8  # torch.optim.Adam's default, which lab_attack keeps


def _rgb(lightness: torch.Tensor, ab_scaled: torch.Tensor) -> torch.Tensor:
    from kornia.color import lab_to_rgb

    return lab_to_rgb(torch.cat([lightness, ab_scaled * AB_SCALE], dim=1), clip=True)


class AntiForgery(GanEditorDefense):
    name = "anti_forgery"
    version = "2"  # 2: Adam's epsilon scaled with the variable (the reference's iterates)
    reference_precision = FP32
    contract_exemptions: ClassVar[dict[str, str]] = {
        "budget": "its budget bounds the Lab a/b channels (eps on a/110), not RGB pixels",
        "seeds": "it starts at zero and draws nothing (the reference's pert_a = 0)",
        "batch": "at the tiny scale the random StarGAN's gradients (~1e-8) sit at Adam's "
                 "epsilon, where the float noise of a batched convolution decides each step, "
                 "and the Lab->RGB return amplifies it near black (1.6 % of values over 1e-3)",
    }

    def __init__(self, editor: dict, condition="cycle", eps: float = 0.05, lr: float = 1e-4,
                 iterations: int = 100):
        check(self.name, "eps", eps, isinstance(eps, (int, float)) and 0 <= eps <= 1,
              "a bound on the a/b channels in Anti-Forgery's units (a / 110), in [0, 1]")
        check(self.name, "lr", lr, isinstance(lr, (int, float)) and lr > 0, "Adam's learning "
              "rate on the scaled a/b channels, > 0")
        self.eps, self.lr = float(eps), float(lr)
        # The engine works on a [0, 1] variable: v = ab / 110 / 2 + 1/2, so a budget or step
        # of s on the scaled a/b is s / 2 on v, i.e. s / 2 * 255 in the engine's pixel units;
        # d/dv = 2 d/d(ab), so Adam's epsilon doubles to keep the reference's iterates.
        self.pgd = PGD(self.eps / 2 * 255, self.lr / 2 * 255, iterations, norm="linf",
                       random_start=False, optimizer="adam", component=self.name,
                       adam_eps=2 * ADAM_EPS)
        super().__init__(editor, condition)

    def protect(self, x: torch.Tensor, seeds: Sequence[int],
                attributes: list[dict] | None = None) -> torch.Tensor:
        from kornia.color import rgb_to_lab

        lab = rgb_to_lab(x.float())
        lightness, v = lab[:, :1], lab[:, 1:] / AB_SCALE / 2 + 0.5
        distance, on_step = self.edit_distance(x, attributes)
        v_adv = self.pgd.maximize(v, lambda w: distance(_rgb(lightness, (w - 0.5) * 2)), seeds,
                                  on_step=on_step)
        return _rgb(lightness, (v_adv - 0.5) * 2)
