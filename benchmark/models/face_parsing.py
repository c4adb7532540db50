"""BiSeNet face parsing (19 CelebAMask-HQ classes), written for the checkpoints of face-parsing.PyTorch.

Yu et al., "BiSeNet: Bilateral Segmentation Network for Real-time Semantic
Segmentation", ECCV 2018. The face-parsing variant trained on CelebAMask-HQ
(zllrunning/face-parsing.PyTorch, checkpoint `79999_iter.pth`; facexlib ships the
same file as `parsing_bisenet.pth`, sha256 468e13ca...b26567, 53,289,463 bytes) is
the parser of TIP-RSR (benchmark.transforms.tip_rsr). No maintained PyPI package
loads it (spandrel has no BiSeNet), so the network is written here; its layout and
parameter names follow that checkpoint, so `load_state_dict(strict=True)` reads it:

- `cp.resnet`: a ResNet-18 trunk (7x7 stem, max-pool, four stages of two basic
  blocks; `downsample.0/1` projection where the shape changes); the 1/8, 1/16 and
  1/32 feature maps go on;
- `cp`: the context path. The 1/32 map is refined by `arm32` (conv-BN-ReLU, then a
  channel attention from its global average: 1x1 conv, BN, sigmoid) and added to
  `conv_avg` of its global average; upsampled (nearest) to 1/16 and passed through
  `conv_head32`; added to `arm16` of the 1/16 map, upsampled (nearest) to 1/8 and
  passed through `conv_head16`;
- `ffm`: feature fusion of the 1/8 ResNet map (in place of a spatial path) with the
  context path: concatenation, conv-BN-ReLU, x + x * attention (1x1 conv to a
  quarter of the channels, ReLU, 1x1 conv back, sigmoid, from the global average);
- `conv_out`: 3x3 conv-BN-ReLU and a 1x1 conv to the classes, upsampled to the input
  size (bilinear, align_corners=True). `conv_out16` / `conv_out32` are the auxiliary
  training heads: kept so that the checkpoint loads strictly, not run at inference
  (the reference's inference returns the main head only).

Convolutions carry no bias (batch norm follows); BN at eval uses the checkpoint's
running statistics. `width` is the stem width (64 in the checkpoint); every other
channel count scales with it, so a small width gives a tiny network of the same
architecture for tests.

Class order (CelebAMask-HQ as face-parsing.PyTorch trains it): 0 background,
1 skin, 2/3 left/right brow, 4/5 left/right eye, 6 eyeglasses, 7/8 left/right ear,
9 earring, 10 nose, 11 mouth, 12/13 upper/lower lip, 14 neck, 15 necklace, 16 cloth,
17 hair, 18 hat. Input: RGB in [0, 1] normalised with ImageNet's mean and std.
"""

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 19
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class ResNet18Trunk(nn.Module):
    """ResNet-18 without its classifier: the 1/8, 1/16 and 1/32 feature maps."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(width, width, 1)
        self.layer2 = self._stage(width, 2 * width, 2)
        self.layer3 = self._stage(2 * width, 4 * width, 2)
        self.layer4 = self._stage(4 * width, 8 * width, 2)

    @staticmethod
    def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout))

    def forward(self, x: torch.Tensor):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


def _global_average(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True)


class AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(_global_average(feat))))


class ContextPath(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        head = 2 * width
        self.resnet = ResNet18Trunk(width)
        self.arm16 = AttentionRefinement(4 * width, head)
        self.arm32 = AttentionRefinement(8 * width, head)
        self.conv_head32 = ConvBNReLU(head, head)
        self.conv_head16 = ConvBNReLU(head, head)
        self.conv_avg = ConvBNReLU(8 * width, head, kernel=1)

    def forward(self, x: torch.Tensor):
        feat8, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(_global_average(feat32))  # broadcast = nearest upsampling of 1x1
        up32 = F.interpolate(self.arm32(feat32) + context, feat16.shape[2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, feat8.shape[2:], mode="nearest")
        return feat8, self.conv_head16(up16)


class FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, kernel=1)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(_global_average(feat)))))
        return feat + feat * attention


class ParsingHead(nn.Module):
    def __init__(self, cin: int, mid: int, classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNetFaceParser(nn.Module):
    """ImageNet-normalised RGB (N, 3, H, W) -> class logits (N, 19, H, W)."""

    def __init__(self, width: int = 64, classes: int = NUM_CLASSES):
        super().__init__()
        self.cp = ContextPath(width)
        self.ffm = FeatureFusion(4 * width, 4 * width)
        self.conv_out = ParsingHead(4 * width, 4 * width, classes)
        self.conv_out16 = ParsingHead(2 * width, width, classes)
        self.conv_out32 = ParsingHead(2 * width, width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, context8 = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))
        return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
