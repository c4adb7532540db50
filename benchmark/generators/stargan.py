"""StarGAN's CelebA attribute editor.

Choi, Choi, Kim, Ha, Kim and Choo, "StarGAN: Unified Generative Adversarial
Networks for Multi-Domain Image-to-Image Translation", CVPR 2018. Architecture,
checkpoint layout and test protocol from the official code, github.com/yunjey/stargan:

- model.py `Generator(conv_dim=64, c_dim=5, repeat_num=6)`: the target vector tiled
  over the image and concatenated to it; `main` = 7x7 conv, 2 stride-2 4x4 convs,
  `repeat_num` residual blocks, 2 stride-2 4x4 transposed convs, 7x7 conv, tanh; every
  conv without bias and followed by InstanceNorm2d(affine=True,
  track_running_stats=True) and ReLU. The state-dict names are theirs (`main.0.weight`,
  `main.1.running_mean`, `main.9.main.0.weight`, ...), so `200000-G.ckpt` of
  `download.sh pretrained-celeba-256x256` (or -128x128) loads as it is.
- solver.py never calls `G.eval()`, so its instance norms normalise with each image's
  own statistics (PyTorch's train-mode behaviour); the stored running statistics are
  loaded but not used, here as there.
- main.py: `selected_attrs` Black_Hair, Blond_Hair, Brown_Hair, Male, Young (c_dim 5).
- solver.py `create_labels`: a hair-colour target sets that colour to 1 and the other
  hair colours to 0; any other target flips the source value.
- data_loader.py: CenterCrop(178) of the aligned 178x218 CelebA photo, Resize(image_size),
  Normalize(0.5, 0.5) to [-1, 1]; the 256 px checkpoint is the one Disrupting Deepfakes,
  Anti-Forgery (main.py image_size 256) and DF-RAP attack. `dataset=folder` centre-crops
  to a square (178x178 for CelebA) and resizes with Lanczos instead of bilinear.
"""

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import check
from benchmark.generators.gan import GanEditor

STARGAN_ATTRIBUTES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")
HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")


class InstanceStatsNorm(nn.InstanceNorm2d):
    """InstanceNorm2d with running-stat buffers (for the checkpoint) that always normalises
    with the input's own statistics, as the never-eval()'d reference generator does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def _norm(channels: int) -> nn.Module:
    return InstanceStatsNorm(channels, affine=True, track_running_stats=True)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), _norm(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), _norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class StarGANNetwork(nn.Module):
    def __init__(self, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6):
        super().__init__()
        layers = [nn.Conv2d(3 + c_dim, conv_dim, 7, 1, 3, bias=False), _norm(conv_dim),
                  nn.ReLU(inplace=True)]
        dim = conv_dim
        for _ in range(2):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=False), _norm(dim * 2),
                       nn.ReLU(inplace=True)]
            dim *= 2
        layers += [ResidualBlock(dim) for _ in range(repeat_num)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=False), _norm(dim // 2),
                       nn.ReLU(inplace=True)]
            dim //= 2
        layers += [nn.Conv2d(dim, 3, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        tiled = c.view(c.shape[0], c.shape[1], 1, 1).expand(-1, -1, x.shape[2], x.shape[3])
        return self.main(torch.cat([x, tiled.to(x.dtype)], dim=1))


class StarGAN(GanEditor):
    name = "stargan"
    version = "1"
    weights_how_to_get = ("download the official CelebA generator (yunjey/stargan: `bash "
                          "download.sh pretrained-celeba-256x256`, file 200000-G.ckpt of "
                          "celeba-256x256-5attrs.zip) where there is internet access, or set "
                          "BENCH_STARGAN_WEIGHTS to it")

    def __init__(self, weights: str | None = None, resolution: int = 256,
                 attributes: list[str] = STARGAN_ATTRIBUTES, target="seed", source="dataset",
                 conv_dim: int = 64, repeat_num: int = 6, device: str = "auto",
                 max_batch: int = 16):
        check(self.name, "conv_dim", conv_dim, isinstance(conv_dim, int) and conv_dim >= 1,
              "an integer >= 1 (64 in the official checkpoints)")
        check(self.name, "repeat_num", repeat_num, isinstance(repeat_num, int) and repeat_num >= 0,
              "an integer >= 0 (6 in the official checkpoints)")
        check(self.name, "resolution", resolution, isinstance(resolution, int)
              and resolution % 4 == 0, "a multiple of 4 (two stride-2 stages)")
        self.conv_dim, self.repeat_num = conv_dim, repeat_num
        super().__init__(weights, resolution, attributes, target, source, device, max_batch)

    def build_network(self) -> nn.Module:
        return StarGANNetwork(self.conv_dim, len(self.attributes), self.repeat_num)

    def network_key(self) -> tuple:
        return (self.conv_dim, len(self.attributes), self.repeat_num)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.network(x, c)

    def target_vector(self, source: torch.Tensor, names) -> torch.Tensor:
        c = source.clone()
        hair = [i for i, a in enumerate(self.attributes) if a in HAIR_COLOURS]
        for name in names:
            i = self.attributes.index(name)
            if i in hair:
                c[:, hair] = 0
                c[:, i] = 1
            else:
                c[:, i] = 1 - c[:, i]
        return c
