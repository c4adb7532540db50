"""The floating-point format a defense's attack runs in, and the one its reference code used.

`precision` (a defense's key; the job's top-level `precision` by default):

- `fp32`: weights and arithmetic in float32 (the default, on every device).
- `fp16` / `bf16`: the attack's forward passes under torch.autocast at that dtype; the
  perturbation and its gradient stay float32. `dtype` loads the weights in another dtype.
- `reference`: as the defense's reference code ran it on a GPU (its `reference_precision`:
  the dtype its networks were loaded in, and the autocast it ran under, if any). The
  perturbation, the PGD arithmetic and the losses between the networks stay float32 (the
  fp16 references keep x_adv in fp16 too). fp16 is taken only on a CUDA device; elsewhere
  it is replaced by fp32 and the job's notice says so (bf16 runs anywhere). The resolved
  format joins the defense's `version`, so a cached result is never served across formats.
"""

import logging
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from benchmark.errors import check
from benchmark.models import DTYPES

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "reference")


@dataclass(frozen=True)
class ReferencePrecision:
    """How a defense's reference code ran its networks on a GPU."""

    weights: str = "fp32"         # the dtype it loads the attacked networks in
    autocast: str | None = None   # the dtype of the torch.autocast around its attack, or none

    def __str__(self) -> str:
        if self.autocast is None:
            return "fp32" if self.weights == "fp32" else f"{self.weights} weights"
        return f"{self.weights} weights, {self.autocast} autocast"


FP32 = ReferencePrecision()


@dataclass(frozen=True)
class Resolved:
    weights: str     # the dtype to load the attacked networks in
    autocast: str    # the autocast dtype, fp32 = none
    tag: str | None  # precision=reference: the resolved format, for the defense's version
    notice: str | None = None

    def __str__(self) -> str:
        return str(ReferencePrecision(self.weights,
                                      None if self.autocast == "fp32" else self.autocast))

    def adopt(self, defense) -> None:
        """Set the defense's autocast (`precision`), and with precision=reference its version
        (cache keys follow the format it resolved to) and its notice."""
        defense.precision = self.autocast
        if self.tag:
            defense.version = f"{type(defense).version}+precision:{self.tag}"
        if self.notice:
            defense.notice = self.notice


def resolve_precision(component: str, precision: str, dtype: str,
                      reference: ReferencePrecision, device: torch.device) -> Resolved:
    """The weights' dtype and the autocast a defense runs with on `device`."""
    check(component, "precision", precision, precision in PRECISIONS,
          f"one of {PRECISIONS} (reference: {reference}, as its reference code ran)")
    if precision != "reference":
        return Resolved(dtype, precision, None)
    check(component, "dtype", dtype, dtype in ("fp32", reference.weights),
          f"fp32 or {reference.weights} with precision=reference, which loads the weights in "
          f"the reference's {reference.weights} (or choose precision=fp32|fp16|bf16)")
    weights, autocast = reference.weights, reference.autocast or "fp32"
    notice = None
    if device.type != "cuda" and "fp16" in (weights, autocast):
        weights, autocast = (("fp32" if v == "fp16" else v) for v in (weights, autocast))
        notice = (f"{component}: precision=reference runs {Resolved(weights, autocast, None)} "
                  f"on {device.type}; its reference ran {reference}, which needs a CUDA device")
        log.warning(notice)
    return Resolved(weights, autocast, f"{weights}/{autocast}", notice)



def autocast_at(device: torch.device, precision: str):
    """torch.autocast at `precision` on the device's type; fp32: no autocast."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])
