"""LPIPS networks (Zhang, Isola, Efros, Shechtman & Wang, CVPR 2018) through the authors'
`lpips` package: one loader for the metric, FaceLock's loss and IMPRESS's constraint.

Version 0.1 linear heads (shipped inside the package) on an ImageNet backbone
(`alex`, `vgg` or `squeeze`) whose weights are torchvision's checkpoints in torch's
hub cache (`backbone_checkpoint`). `random_backbone` builds an untrained backbone
(plumbing tests only: the numbers mean nothing). The network expects [-1, 1].
"""

import warnings
from pathlib import Path

import torch

from benchmark.models import shared

# backbone name -> the torchvision weights enum that holds its ImageNet checkpoint
LPIPS_NETS = {"vgg": "VGG16_Weights", "alex": "AlexNet_Weights", "squeeze": "SqueezeNet1_1_Weights"}


def backbone_weights_name(net: str) -> str:
    """torchvision's name of the backbone's ImageNet weights, e.g. `VGG16_Weights.IMAGENET1K_V1`."""
    return f"{LPIPS_NETS[net]}.IMAGENET1K_V1"


def backbone_checkpoint(net: str) -> Path:
    """Where torchvision keeps (and looks for) the ImageNet weights of `net`."""
    import torchvision.models as tvm

    url = getattr(tvm, LPIPS_NETS[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def load_lpips(net: str, device: torch.device, random_backbone: bool = False) -> torch.nn.Module:
    """The LPIPS network, frozen and in eval mode, loaded once per process and device."""

    def load():
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation, prints
            model = lpips.LPIPS(net=net, version="0.1", pnet_rand=random_backbone, verbose=False)
        model.eval().requires_grad_(False)
        return model.to(device)

    return shared(("lpips", net, bool(random_backbone), str(device)), load)
