"""GrIDPure: iterative DiffPure on overlapping 256 px grid patches.

Zhao, Duan, Chen, Wang, Yang, Zhou, Liu, Zhang. "Can Protective Perturbation
Safeguard Personal Data from Being Exploited by Stable Diffusion?" CVPR 2024.
arXiv:2312.00084. DiffPure at a small timestep removes the perturbation while
keeping the structure when it works on 256 px patches of the full-size image.
Each iteration (ZhengyueZhao/GrIDPure, gridpure.py):

1. cut the image into `patch` x `patch` squares at stride `stride` (the last row
   and column aligned with the border), plus one square made of the four
   `patch`/2 corners (which the grid covers once only);
2. purify every square with DiffPure at timestep `t`;
3. put them back, averaging where they overlap;
4. blend: x <- (1 - gamma) * purified + gamma * x.

Defaults from the paper and its code: patch 256, stride 128, t = 10, 20
iterations, gamma = 0.1. An image smaller than `patch` is one patch. The diffusion
model is Stable Diffusion through DiffPure (benchmark/transforms/diffpure.py).

Strength: iterations 0 -> 20 (the default is strength 1).
"""

import torch

from benchmark.errors import check
from benchmark.images import derive_seed, release
from benchmark.transforms.base import Transform, check_number, lerp
from benchmark.transforms.diffpure import SD15, DiffPure


def grid_starts(size: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


class GrIDPure(Transform):
    name = "gridpure"
    cpu_batch = None  # batches go to the model as they are
    random = True

    def __init__(self, model: str = SD15, t: int = 10, iterations: int = 20,
                 gamma: float = 0.1, patch: int = 256, stride: int = 128, steps: int = 1000,
                 scheduler: str = "ddpm", prompt: str = "", guidance: float = 1.0,
                 dtype: str = "fp32", device: str = "auto", max_batch: int = 8,
                 strength: float | None = None):
        strength = self._strength(strength)
        if strength is not None:
            iterations = round(lerp(strength, 0, 20))
        self.iterations = check_number(self.name, "iterations", iterations, 0, 1000,
                                       "an integer in 0..1000", integer=True)
        self.gamma = float(check_number(self.name, "gamma", gamma, 0, 1, "a blend weight in [0, 1]"))
        check_number(self.name, "patch", patch, 16, 4096, "a multiple of 16 in 16..4096",
                     integer=True)
        check(self.name, "patch", patch, patch % 16 == 0, "a multiple of 16 in 16..4096")
        check_number(self.name, "stride", stride, 1, patch, f"an integer in 1..patch ({patch})",
                     integer=True)
        self.patch, self.stride = patch, stride
        self.pure = DiffPure(model=model, t=t, steps=steps, scheduler=scheduler, resolution=None,
                             prompt=prompt, guidance=guidance, dtype=dtype, device=device,
                             max_batch=max_batch)
        if self.iterations == 0:
            self.is_identity = True

    def boxes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(top, left, side) of every grid square."""
        side = min(self.patch, height, width)
        return [(top, left, side) for top in grid_starts(height, side, self.stride)
                for left in grid_starts(width, side, self.stride)]

    def iterate(self, img: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """One GrIDPure iteration on one CHW image; `seeds` has one seed per square."""
        _, height, width = img.shape
        boxes = self.boxes(height, width)
        side = boxes[0][2]
        half = side // 2
        squares = [img[:, t:t + side, l:l + side] for t, l, _ in boxes]
        corners = [(0, 0), (0, width - half), (height - half, 0), (height - half, width - half)]
        mosaic = torch.zeros(3, side, side, dtype=img.dtype, device=img.device)
        for k, (t, l) in enumerate(corners):
            r, c = divmod(k, 2)
            mosaic[:, r * half:(r + 1) * half, c * half:(c + 1) * half] = img[:, t:t + half,
                                                                              l:l + half]
        purified = self.pure.purify(torch.stack(squares + [mosaic]), seeds)
        total = torch.zeros_like(img)
        count = torch.zeros_like(img[:1])
        for (t, l, _), square in zip(boxes, purified):
            total[:, t:t + side, l:l + side] += square
            count[:, t:t + side, l:l + side] += 1
        for k, (t, l) in enumerate(corners):
            r, c = divmod(k, 2)
            total[:, t:t + half, l:l + half] += purified[-1][:, r * half:(r + 1) * half,
                                                            c * half:(c + 1) * half]
            count[:, t:t + half, l:l + half] += 1
        return (1 - self.gamma) * total / count + self.gamma * img

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        out = []
        for img, seed in zip(x, seeds):
            n = len(self.boxes(*img.shape[-2:])) + 1
            for i in range(self.iterations):
                # Each iteration hands an 8-bit image to the next, as the original does.
                img = release(self.iterate(img, [derive_seed(seed, f"{i}/{j}", "gridpure")
                                                 for j in range(n)]))
            out.append(img)
        return torch.stack(out)
