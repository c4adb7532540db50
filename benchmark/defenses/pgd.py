"""Projected gradient descent: the engine every optimisation-based defense shares.

One loop, configured by:

- `norm`: `linf` (sign steps, box projection), `l2` (steps along the per-image
  normalised gradient, projection onto the L2 ball, as PhotoGuard's L2 attack)
  or `none` (no budget; only the [0, 1] range is enforced, as EditShield).
- `optimizer`: `pgd` (the steps above) or `adam` (Adam on the pixels with
  learning rate `step`, then the same projection; `adam_eps` is Adam's epsilon,
  torch's 1e-8 by default).
- `schedule` of the step size: `constant`; `linear` decay from `step` to
  `step * final_step_fraction` over the iterations (PhotoGuard's schedule, with
  fraction 1/100); `cosine` decay between the same two values.
- `random_start`: uniform in the L-inf box, or uniform radius along a Gaussian
  direction in the L2 ball; seeded per image. `clip_start`: the start is clipped to
  [0, 1] before the first gradient (advertorch's LinfPGDAttack, which Mist and AdvDM
  run; FaceLock's `facelock`); false takes the first gradient at the unclipped x + delta_0,
  as Disrupting Deepfakes, DF-RAP, CMUA, Silencer and PhotoGuard do (the first step's
  projection clips it).
- `grad_samples`: gradients averaged over this many evaluations of a stochastic
  loss per step (PhotoGuard's `grad_reps`, EOT's samples).
- `transforms` (expectation over transformation): each gradient sample applies
  one of these differentiable callables `t(x, seeds) -> x`, drawn per sample
  with a seeded generator, before the loss.
- `early_stop`: an image whose loss reaches this value stops moving; the loop
  ends when every image has.
- `mask` (per call): pixels where the mask is 0 are never changed.
- `penalty` (per call): a cost on the untransformed image (EditShield's
  perceptual constraint next to its EOT objective); `minimize` minimises
  loss + penalty and `maximize` maximises loss - penalty, so the penalty is
  always kept small.
- `start` (per call): continue from this perturbed image instead of a fresh start, still
  projected around x (ASPL's rounds of PGD on one perturbation).
- `on_step` (per call): called with the iteration index before each step, for
  objectives whose terms switch on during the run (FaceLock).
- `step_filter`, `delta_filter` (per call): reshape each step and then the whole
  perturbation before the projection (FaceShield's blur of the step and low-pass of
  the perturbation). The step filter sees `step_size * update` (for sign steps
  `+step * sign(grad)`, what FaceShield's attack.py blurs) and its output is
  subtracted: a filter that is not odd (FaceShield's edge mask) gives another
  result on the negated step.

Budgets and steps are in pixel units out of 255 (for `l2`, the L2 norm of the
whole per-image perturbation in those units: PhotoGuard's 16 in [-1, 1] units
is 2040). Everything random is drawn from generators seeded by the per-image
seeds, so a protection is reproducible.
"""

import math
from collections.abc import Callable, Sequence
from contextvars import ContextVar

import torch

from benchmark.defenses.base import check_budget
from benchmark.errors import check
from benchmark.images import derive_seed, generator_for

SCHEDULES = ("constant", "linear", "cosine")
NORMS = ("linf", "l2", "none")
OPTIMIZERS = ("pgd", "adam")

Loss = Callable[[torch.Tensor], torch.Tensor]
EotTransform = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]
Filter = Callable[[torch.Tensor], torch.Tensor]


# Set by the runner to a callable (iteration, iterations) -> None, so that a progress bar can
# show where a long attack is inside one batch.
iteration_progress: ContextVar[Callable[[int, int], None] | None] = ContextVar(
    "iteration_progress", default=None)


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


class PGD:
    def __init__(self, eps: float | None, step: float, iterations: int, norm: str = "linf",
                 random_start: bool = True, schedule: str = "constant",
                 final_step_fraction: float = 0.01, grad_samples: int = 1,
                 optimizer: str = "pgd", early_stop: float | None = None,
                 transforms: Sequence[EotTransform] = (), component: str = "pgd",
                 clip_start: bool = True, adam_eps: float = 1e-8):
        check(component, "norm", norm, norm in NORMS, f"one of {NORMS}")
        if norm == "none":
            check(component, "eps", eps, eps is None, "null when norm=none (no budget)")
            self.eps = None
        elif norm == "l2":
            check(component, "eps", eps, isinstance(eps, (int, float)) and eps >= 0,
                  "an L2 budget >= 0 in pixel units out of 255")
            self.eps = eps / 255
        else:
            self.eps = check_budget(component, eps)
        check(component, "step", step, isinstance(step, (int, float)) and step > 0,
              "a step size > 0 in pixel units out of 255")
        check(component, "iterations", iterations, isinstance(iterations, int) and iterations >= 0,
              "an integer >= 0")
        check(component, "schedule", schedule, schedule in SCHEDULES, f"one of {SCHEDULES}")
        check(component, "final_step_fraction", final_step_fraction,
              isinstance(final_step_fraction, (int, float)) and 0 < final_step_fraction <= 1,
              "a fraction in (0, 1]")
        check(component, "grad_samples", grad_samples,
              isinstance(grad_samples, int) and grad_samples >= 1, "an integer >= 1")
        check(component, "optimizer", optimizer, optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}")
        check(component, "early_stop", early_stop,
              early_stop is None or isinstance(early_stop, (int, float)), "null or a loss value")
        for key, value in (("random_start", random_start), ("clip_start", clip_start)):
            check(component, key, value, isinstance(value, bool), "true or false")
        check(component, "adam_eps", adam_eps,
              isinstance(adam_eps, (int, float)) and adam_eps > 0, "Adam's epsilon, > 0")
        check(component, "transforms", transforms, all(callable(t) for t in transforms),
              "a list of callables t(x, seeds) -> x")
        self.norm = norm
        self.step = step / 255
        self.iterations = iterations
        self.random_start = random_start and norm != "none"
        self.clip_start = clip_start
        self.adam_eps = float(adam_eps)
        self.schedule = schedule
        self.final_step_fraction = final_step_fraction
        self.grad_samples = grad_samples
        self.optimizer = optimizer
        self.early_stop = early_stop
        self.transforms = list(transforms)
        self.history: list[float] = []  # mean loss per iteration of the last call

    # -- pieces -------------------------------------------------------------------------------

    def step_size(self, i: int) -> float:
        if self.iterations == 0 or self.schedule == "constant":
            return self.step
        final = self.step * self.final_step_fraction
        progress = i / self.iterations
        if self.schedule == "linear":
            return self.step - (self.step - final) * progress
        return final + (self.step - final) * 0.5 * (1 + math.cos(math.pi * progress))

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps)
        elif self.norm == "l2":
            delta = x_adv - x
            norms = delta.flatten(1).norm(dim=1)
            scale = torch.clamp(self.eps / (norms + 1e-12), max=1.0)
            x_adv = x + delta * _per_image(scale, delta)
        return x_adv.clamp(0, 1)

    def start(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        if not self.random_start or not self.eps:
            return x.clone()
        gens = [generator_for(s) for s in seeds]
        if self.norm == "linf":
            u = torch.stack([torch.rand(x.shape[1:], generator=g) for g in gens]).to(x)
            x_start = x + (u * 2 - 1) * self.eps
        else:
            direction = torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens]).to(x)
            radius = torch.stack([torch.rand((), generator=g) for g in gens]).to(x) * self.eps
            direction = direction / _per_image(direction.flatten(1).norm(dim=1) + 1e-12,
                                               direction)
            x_start = x + direction * _per_image(radius, direction)
        # inside the budget by construction; clip_start=false leaves it outside [0, 1]
        return self.project(x_start, x) if self.clip_start else x_start

    def _transform(self, x_adv: torch.Tensor, seeds: Sequence[int], i: int, k: int) -> torch.Tensor:
        if not self.transforms:
            return x_adv
        # Drawn per image, so that an image's protection does not depend on its batch mates.
        sample_seeds = [derive_seed(s, f"{i}/{k}", "eot") for s in seeds]
        picks = [int(torch.randint(len(self.transforms), (), generator=generator_for(s)))
                 for s in sample_seeds]
        out = [None] * len(picks)
        for t in set(picks):
            rows = [j for j, p in enumerate(picks) if p == t]
            y = self.transforms[t](x_adv[rows], [sample_seeds[j] for j in rows])
            for r, j in enumerate(rows):
                out[j] = y[r]
        return torch.stack(out)

    def _gradient(self, x_adv: torch.Tensor, loss: Loss, seeds: Sequence[int], i: int,
                  penalty: Loss | None) -> tuple[torch.Tensor, torch.Tensor]:
        grad = torch.zeros_like(x_adv)
        total = torch.zeros(x_adv.shape[0], device=x_adv.device)
        for k in range(self.grad_samples):
            x_var = x_adv.detach().requires_grad_(True)
            values = loss(self._transform(x_var, seeds, i, k))
            if penalty is not None:
                values = values + penalty(x_var)
            (g,) = torch.autograd.grad(values.sum(), x_var)
            grad += g.detach()
            total += values.detach().float()
        return grad / self.grad_samples, total / self.grad_samples

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "l2":
            return grad / _per_image(grad.flatten(1).norm(dim=1) + 1e-10, grad)
        return grad.sign()

    # -- the loop -----------------------------------------------------------------------------

    def minimize(self, x: torch.Tensor, loss: Loss, seeds: Sequence[int],
                 mask: torch.Tensor | None = None, penalty: Loss | None = None,
                 on_step: Callable[[int], None] | None = None,
                 step_filter: Filter | None = None,
                 delta_filter: Filter | None = None,
                 start: torch.Tensor | None = None) -> torch.Tensor:
        """Minimise `loss(x_adv)` (one value per image) inside the budget."""
        x = x.detach()
        x_adv = self.start(x, seeds) if start is None else self.project(start.detach().to(x), x)
        if mask is not None:
            mask = mask.to(x)
            x_adv = x + (x_adv - x) * mask
        moving = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        adam = _Adam(x_adv, eps=self.adam_eps) if self.optimizer == "adam" else None
        self.history = []
        report = iteration_progress.get()
        for i in range(self.iterations):
            if report is not None:
                report(i, self.iterations)
            if on_step is not None:
                on_step(i)
            grad, values = self._gradient(x_adv, loss, seeds, i, penalty)
            self.history.append(values.mean().item())
            if self.early_stop is not None:
                moving &= values > self.early_stop
                if not moving.any():
                    break
            if mask is not None:
                grad = grad * mask
            with torch.no_grad():
                update = adam.update(grad) if adam else self._direction(grad)
                update = update * _per_image(moving.to(x), update)
                if step_filter is None and delta_filter is None:
                    x_new = self.project(x_adv - self.step_size(i) * update, x)
                else:
                    x_new = self.project(x + self._filtered(x_adv - x, self.step_size(i) * update,
                                                            step_filter, delta_filter), x)
                x_adv = x + (x_new - x) * mask if mask is not None else x_new
        return x_adv.detach()

    @staticmethod
    def _filtered(delta: torch.Tensor, step: torch.Tensor, step_filter: Filter | None,
                  delta_filter: Filter | None) -> torch.Tensor:
        """delta - filter(step) (FaceShield: `delta -= blur(step * sign(grad))`), then the
        perturbation's filter."""
        delta = delta - (step if step_filter is None else step_filter(step))
        return delta if delta_filter is None else delta_filter(delta)

    def maximize(self, x: torch.Tensor, loss: Loss, seeds: Sequence[int],
                 mask: torch.Tensor | None = None, penalty: Loss | None = None,
                 on_step: Callable[[int], None] | None = None,
                 step_filter: Filter | None = None,
                 delta_filter: Filter | None = None,
                 start: torch.Tensor | None = None) -> torch.Tensor:
        """Maximise `loss(x_adv) - penalty(x_adv)`; `early_stop` is then the value to reach."""
        threshold = self.early_stop
        self.early_stop = None if threshold is None else -threshold
        try:  # minimising -loss + penalty is maximising loss - penalty
            return self.minimize(x, lambda v: -loss(v), seeds, mask, penalty, on_step,
                                 step_filter, delta_filter, start)
        finally:
            self.early_stop = threshold
            self.history = [-h for h in self.history]


class _Adam:
    """Adam's moment estimates for a pixel tensor (torch.optim.Adam's defaults)."""

    def __init__(self, like: torch.Tensor, betas=(0.9, 0.999), eps: float = 1e-8):
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.betas, self.eps, self.t = betas, eps, 0

    def update(self, grad: torch.Tensor) -> torch.Tensor:
        b1, b2 = self.betas
        self.t += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        m_hat = self.m / (1 - b1 ** self.t)
        v_hat = self.v / (1 - b2 ** self.t)
        return m_hat / (v_hat.sqrt() + self.eps)


class LinfPGD(PGD):
    """L-infinity PGD with sign steps (the original engine's signature, kept for its callers)."""

    def __init__(self, eps: float, step: float, iterations: int, random_start: bool = True,
                 schedule: str = "constant", final_step_fraction: float = 0.01,
                 component: str = "pgd", **options):
        super().__init__(eps, step, iterations, "linf", random_start, schedule,
                         final_step_fraction, component=component, **options)
