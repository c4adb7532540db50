"""Projected gradient descent under an L-infinity budget: the engine the attacks share.

Sign steps, optional uniform random start, projection onto the eps-ball around
the clean image and onto [0, 1] after every step, and a step schedule:
`constant`, or `linear` decay from `step` to `step * final_step_fraction`
over the iterations (PhotoGuard's schedule, with fraction 1/100).
"""

from collections.abc import Callable, Sequence

import torch

from benchmark.defenses.base import check_budget
from benchmark.errors import check
from benchmark.images import generator_for

SCHEDULES = ("constant", "linear")


class LinfPGD:
    def __init__(self, eps: float, step: float, iterations: int, random_start: bool = True,
                 schedule: str = "constant", final_step_fraction: float = 0.01,
                 component: str = "pgd"):
        self.eps = check_budget(component, eps)
        check(component, "step", step, step > 0, "a step size > 0 in pixel units out of 255")
        check(component, "iterations", iterations, isinstance(iterations, int) and iterations >= 0,
              "an integer >= 0")
        check(component, "schedule", schedule, schedule in SCHEDULES, f"one of {SCHEDULES}")
        check(component, "final_step_fraction", final_step_fraction,
              0 < final_step_fraction <= 1, "a fraction in (0, 1]")
        self.step = step / 255
        self.iterations = iterations
        self.random_start = random_start
        self.schedule = schedule
        self.final_step_fraction = final_step_fraction

    def step_size(self, i: int) -> float:
        if self.schedule == "linear" and self.iterations > 0:
            final = self.step * self.final_step_fraction
            return self.step - (self.step - final) * i / self.iterations
        return self.step

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)

    def minimize(self, x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor],
                 seeds: Sequence[int]) -> torch.Tensor:
        """Minimise `loss(x_adv)` (one value per image) inside the budget."""
        x = x.detach()
        x_adv = x.clone()
        if self.random_start:
            start = torch.stack([torch.rand(x.shape[1:], generator=generator_for(s)) for s in seeds])
            x_adv = self.project(x + (start.to(x.device) * 2 - 1) * self.eps, x)
        for i in range(self.iterations):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(loss(x_adv).sum(), x_adv)
            with torch.no_grad():
                x_adv = self.project(x_adv - self.step_size(i) * grad.sign(), x)
        return x_adv.detach()
