"""Disrupting Deepfakes: PGD that maximises the distortion of a GAN editor's output.

Ruiz, Bargal and Sclaroff, "Disrupting Deepfakes: Adversarial Attacks Against
Conditional Image Translation Networks and Facial Manipulation Systems", ECCV
Workshops 2020. arXiv:2003.01279. Defaults from github.com/natanielruiz/disrupting-deepfakes,
stargan/attacks.py `LinfPGDAttack(epsilon=0.05, k=10, a=0.01)` and stargan/solver.py
`test_attack`, in the [-1, 1] units of its images:

- eps, step and iterations: configs/defense/disrupting_deepfakes.yaml's card (the
  reference's values, units and lines); sign steps (`X + a * grad.sign()`), constant; the
  ECCV-W text reports other iteration counts for some experiments, the code's default is
  the one taken here.
- random start: `self.rand = True`, uniform in [-eps, eps] (PGD, not I-FGSM), the first
  gradient taken at X_nat + delta_0 before any clipping (`clip_start: false`; the first
  step's projection clips to [-1, 1]).
- loss: `nn.MSELoss()(G(x_adv, c), G(x, c))`, maximised; the target c is the one the
  edit uses (`test_attack` attacks each of the five targets separately), the joint
  sum over all targets (`perturb_joint_class`, `condition: all`) or one target per
  iteration in turn (`perturb_iter_class`, `condition: cycle`), see gan_editors.py.
  DEVIATION there: the reference's `perturb_joint_class` / `perturb_iter_class` compare
  every target's output with one `y`, the clean edit for target 0 (`gen_noattack` at
  `idx == 0` in solver.py `test_attack_cond`); ours compares each target's output with
  its own clean edit G(x, c_k).
- the blur-EOT variants (`perturb_blur_eot`) are this defense with
  `eot: [{_target_: benchmark.transforms.filters.GaussianBlur, library: kornia, ...}]`.

Reference model: StarGAN's CelebA generator (stargan/solver.py, 200000-G.ckpt), the
`editor`. Reference precision: fp32.
"""

from collections.abc import Sequence

import torch

from benchmark.defenses.eot import build_eot
from benchmark.defenses.gan_editors import GanEditorDefense
from benchmark.defenses.pgd import LinfPGD
from benchmark.defenses.precision import FP32


class DisruptingDeepfakes(GanEditorDefense):
    name = "disrupting_deepfakes"
    version = "2"  # 2: the first gradient at the unclipped random start (clip_start)
    reference_precision = FP32

    def __init__(self, editor: dict, condition="all", eps: float = 6.375, step: float = 1.275,
                 iterations: int = 10, random_start: bool = True, eot: list | None = None,
                 clip_start: bool = False):
        self.pgd = LinfPGD(eps, step, iterations, random_start, component=self.name,
                           transforms=build_eot(eot, self.name), clip_start=clip_start)
        super().__init__(editor, condition)

    def protect(self, x: torch.Tensor, seeds: Sequence[int],
                attributes: list[dict] | None = None) -> torch.Tensor:
        distance, on_step = self.edit_distance(x, attributes)
        return self.pgd.maximize(x, distance, seeds, on_step=on_step)
