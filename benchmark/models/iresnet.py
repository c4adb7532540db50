"""IResNet, the ArcFace face-recognition backbone (Deng, Guo, Xue & Zafeiriou, "ArcFace:
Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019).

The layout is the one of InsightFace's PyTorch training code, arcface_torch
(github.com/deepinsight/insightface, recognition/arcface_torch/backbones/iresnet.py),
read there and written anew here so that its released checkpoints
(e.g. `ms1mv3_arcface_r100_fp16/backbone.pth`, `glint360k_cosface_r50_fp16_0.1/backbone.pth`)
load with `load_state_dict` under the same parameter names:

- stem: 3x3 conv (64, stride 1, no bias) -> BatchNorm -> PReLU, at 112x112;
- four stages of "improved residual" blocks (the ArcFace paper's IR block:
  BN -> 3x3 conv -> BN -> PReLU -> 3x3 conv (carrying the stride) -> BN, plus the
  shortcut, a 1x1 strided conv + BN in each stage's first block), 64/128/256/512
  channels, each stage halving the resolution: 112 -> 56 -> 28 -> 14 -> 7;
  blocks per stage r18 (2,2,2,2), r34 (3,4,6,3), r50 (3,4,14,3), r100 (3,13,30,3);
- head ("BN-Dropout-FC-BN" of the paper): BatchNorm2d -> flatten (512*7*7) ->
  dropout (0 at inference) -> Linear to 512 -> BatchNorm1d (`features`).

Input: RGB faces aligned to 112x112, normalised as arcface_torch's inference.py
does, (x - 0.5) / 0.5 for x in [0, 1]. Output: the 512-d embedding, not
normalised (compare with cosine similarity).
"""

import torch
from torch import nn

ARCHS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3),
         "r100": (3, 13, 30, 3)}
WIDTHS = (64, 128, 256, 512)
INPUT_SIZE = 112
EMBEDDING_DIM = 512
BN_EPS = 1e-5


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """BN -> conv -> BN -> PReLU -> conv(stride) -> BN, plus the (projected) input."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout, eps=BN_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """(N, 3, 112, 112) normalised RGB faces -> (N, 512) embeddings."""

    def __init__(self, arch: str = "r100"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r}: expected one of {tuple(ARCHS)}")
        self.arch = arch
        self.conv1 = _conv3x3(3, WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(WIDTHS[0], eps=BN_EPS)
        self.prelu = nn.PReLU(WIDTHS[0])
        cin = WIDTHS[0]
        for index, (blocks, width) in enumerate(zip(ARCHS[arch], WIDTHS), start=1):
            stage = [IRBlock(cin, width, 2)] + [IRBlock(width, width, 1) for _ in range(blocks - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*stage))
            cin = width
        side = INPUT_SIZE // 2 ** len(WIDTHS)
        self.bn2 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(cin * side * side, EMBEDDING_DIM)
        self.features = nn.BatchNorm1d(EMBEDDING_DIM, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x).flatten(1))
        return self.features(self.fc(x))


def arch_of(state_dict: dict) -> str | None:
    """The arch whose blocks per stage match a state dict's keys, or None."""
    counts = []
    for stage in range(1, len(WIDTHS) + 1):
        blocks = {key.split(".")[1] for key in state_dict if key.startswith(f"layer{stage}.")}
        counts.append(len(blocks))
    return next((name for name, layout in ARCHS.items() if tuple(counts) == layout), None)
