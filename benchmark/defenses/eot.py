"""Expectation over transformation: the differentiable transforms a defense optimises through.

A defense's `eot` key is a list of transform configs; each must build a callable
`t(x, seeds) -> x` whose `differentiable` attribute is true (the transforms'
differentiable twins: `GaussianBlur` with `library: kornia`, `Rescale` with
`library: torch`, `DifferentiableJpeg`, `benchmark.transforms.diff_geometry`'s
`DiffRotate` and `DiffCenterCrop`, ...). The PGD engine draws one of them per image
and gradient sample, with a seed derived from the image's.
"""

from collections.abc import Callable

from benchmark.build import build
from benchmark.errors import check


def build_eot(configs, component: str) -> list[Callable]:
    check(component, "eot", configs, configs is None or isinstance(configs, (list, tuple)),
          "a list of differentiable transform configs")
    transforms = [build(c, where=f"{component}.eot[{i}]") for i, c in enumerate(configs or [])]
    for i, t in enumerate(transforms):
        check(component, f"eot[{i}]", getattr(t, "name", type(t).__name__),
              callable(t) and getattr(t, "differentiable", False),
              "a differentiable transform (e.g. blur with library=kornia, diff_jpeg, "
              "benchmark.transforms.diff_geometry.DiffRotate)")
    return transforms
