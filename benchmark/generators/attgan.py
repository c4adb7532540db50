"""AttGAN's CelebA attribute editor.

He, Zuo, Kan, Shan and Chen, "AttGAN: Facial Attribute Editing by Only Changing What
You Want", IEEE TIP 28(11), 2019. Architecture, checkpoint layout and test protocol
from github.com/elvisyjlin/AttGAN-PyTorch (the implementation CMUA-Watermark attacks):

- attgan.py `Generator`: 5 encoder blocks (4x4 stride-2 conv, BatchNorm, LeakyReLU;
  widths 64 * 2**i capped at 1024), the attribute vector tiled at the bottleneck,
  5 decoder blocks (4x4 stride-2 transposed conv, BatchNorm, ReLU; the last without norm,
  with bias and tanh), `shortcut_layers=1` (the first decoder output concatenated with
  the matching encoder feature), `inject_layers=0`. Blocks are nn.py's `Conv2dBlock` /
  `ConvTranspose2dBlock` (`layers` = conv, norm, activation; conv bias only without
  norm), so the state-dict names are theirs (`enc_layers.0.layers.0.weight`,
  `dec_layers.4.layers.0.bias`, ...); the checkpoint is a dict whose `G` entry is the
  generator (`AttGAN.save`), as in `output/<experiment>/checkpoint/weights.<epoch>.pth`.
- train.py `attrs_default` / setting.txt: the 13 attributes below; test.py runs the
  model in eval() mode (BatchNorm running statistics).
- test.py: a target flips one attribute of the source (`1 - att`), data.py
  `check_attribute_conflict` resolves exclusive ones (one hair colour, bald vs bangs,
  mustache vs no beard); the vector is `(att * 2 - 1) * thres_int` with `thres_int=0.5`,
  the edited attribute scaled by `test_int / thres_int` (`test_int=1.0`).
- image size 128 by default, 256 in the `256_shortcut1_inject0_none` checkpoint that
  CMUA-Watermark attacks (setting.json `img_size: 256`, CenterCrop(170) then Resize).
"""

import torch
from torch import nn

from benchmark.errors import check
from benchmark.generators.gan import GanEditor

ATTGAN_ATTRIBUTES = ("Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair",
                     "Bushy_Eyebrows", "Eyeglasses", "Male", "Mouth_Slightly_Open", "Mustache",
                     "No_Beard", "Pale_Skin", "Young")
MAX_DIM = 1024
EXCLUSIVE = (("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"),
             ("Straight_Hair", "Wavy_Hair"), ("Mustache", "No_Beard"))


class ConvBlock(nn.Module):
    def __init__(self, conv: nn.Module, channels: int, norm: bool, activation: nn.Module):
        super().__init__()
        layers = [conv] + ([nn.BatchNorm2d(channels)] if norm else []) + [activation]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AttGANNetwork(nn.Module):
    def __init__(self, enc_dim: int = 64, dec_dim: int = 64, layers: int = 5, n_attrs: int = 13,
                 shortcut_layers: int = 1, inject_layers: int = 0, img_size: int = 128):
        super().__init__()
        self.shortcut_layers = min(shortcut_layers, layers - 1)
        self.inject_layers = min(inject_layers, layers - 1)
        self.f_size = img_size // 2 ** layers
        encoder, n_in = [], 3
        for i in range(layers):
            n_out = min(enc_dim * 2 ** i, MAX_DIM)
            encoder.append(ConvBlock(nn.Conv2d(n_in, n_out, 4, 2, 1, bias=False), n_out, True,
                                     nn.LeakyReLU()))
            n_in = n_out
        self.enc_layers = nn.ModuleList(encoder)
        decoder, n_in = [], n_in + n_attrs
        for i in range(layers):
            if i < layers - 1:
                n_out = min(dec_dim * 2 ** (layers - i - 1), MAX_DIM)
                decoder.append(ConvBlock(nn.ConvTranspose2d(n_in, n_out, 4, 2, 1, bias=False),
                                         n_out, True, nn.ReLU()))
                n_in = n_out + (n_out // 2 if self.shortcut_layers > i else 0)
                n_in += n_attrs if self.inject_layers > i else 0
            else:
                decoder.append(ConvBlock(nn.ConvTranspose2d(n_in, 3, 4, 2, 1, bias=True), 3,
                                         False, nn.Tanh()))
        self.dec_layers = nn.ModuleList(decoder)

    def _tile(self, a: torch.Tensor, size: int) -> torch.Tensor:
        return a.view(a.shape[0], -1, 1, 1).expand(-1, -1, size, size)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        features = []
        for layer in self.enc_layers:
            x = layer(x)
            features.append(x)
        z = torch.cat([features[-1], self._tile(a, features[-1].shape[-1]).to(x)], dim=1)
        for i, layer in enumerate(self.dec_layers):
            z = layer(z)
            if self.shortcut_layers > i:
                z = torch.cat([z, features[len(self.dec_layers) - 2 - i]], dim=1)
            if self.inject_layers > i:
                z = torch.cat([z, self._tile(a, z.shape[-1]).to(z)], dim=1)
        return z


class AttGAN(GanEditor):
    name = "attgan"
    version = "1"
    state_key = "G"
    weights_how_to_get = ("download an AttGAN-PyTorch checkpoint (elvisyjlin/AttGAN-PyTorch "
                          "README: output/<experiment>/checkpoint/weights.<epoch>.pth, e.g. "
                          "CMUA-Watermark's 256_shortcut1_inject0_none) where there is internet "
                          "access, or set BENCH_ATTGAN_WEIGHTS to it")

    def __init__(self, weights: str | None = None, resolution: int = 128,
                 attributes: list[str] = ATTGAN_ATTRIBUTES, target="seed", source="dataset",
                 enc_dim: int = 64, dec_dim: int = 64, layers: int = 5, shortcut_layers: int = 1,
                 inject_layers: int = 0, thres_int: float = 0.5, test_int: float = 1.0,
                 device: str = "auto", max_batch: int = 16):
        for key, value, low in (("enc_dim", enc_dim, 1), ("dec_dim", dec_dim, 1),
                                ("layers", layers, 1), ("shortcut_layers", shortcut_layers, 0),
                                ("inject_layers", inject_layers, 0)):
            check(self.name, key, value, isinstance(value, int) and value >= low,
                  f"an integer >= {low}")
        check(self.name, "resolution", resolution, isinstance(resolution, int)
              and resolution % 2 ** layers == 0, f"a multiple of 2**layers = {2 ** layers}")
        check(self.name, "thres_int", thres_int, isinstance(thres_int, (int, float))
              and thres_int > 0, "a number > 0 (0.5 in AttGAN-PyTorch)")
        check(self.name, "test_int", test_int, isinstance(test_int, (int, float)),
              "a number (1.0 in AttGAN-PyTorch's test.py)")
        self.enc_dim, self.dec_dim, self.layers = enc_dim, dec_dim, layers
        self.shortcut_layers, self.inject_layers = shortcut_layers, inject_layers
        self.thres_int, self.test_int = float(thres_int), float(test_int)
        super().__init__(weights, resolution, attributes, target, source, device, max_batch)

    def build_network(self) -> nn.Module:
        return AttGANNetwork(self.enc_dim, self.dec_dim, self.layers, len(self.attributes),
                             self.shortcut_layers, self.inject_layers, self.resolution)

    def network_key(self) -> tuple:
        return (self.enc_dim, self.dec_dim, self.layers, len(self.attributes),
                self.shortcut_layers, self.inject_layers, self.resolution)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.network(x, c)

    def calibrate_random(self, network: nn.Module) -> None:
        # Untrained BatchNorm running statistics (mean 0, variance 1) leave a random network's
        # activations unnormalised and its output constant; one pass over seeded noise sets
        # them, so the random-weight editor responds to its input as a trained one would.
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = None
        network.train()
        with torch.no_grad():
            network(torch.rand(8, 3, self.resolution, self.resolution) * 2 - 1,
                    (torch.rand(8, len(self.attributes)) * 2 - 1) * self.thres_int)
        network.eval()

    def _resolve_conflicts(self, att: torch.Tensor, name: str) -> None:
        """data.py check_attribute_conflict, for an edit that switched `name` on."""
        index = {a: i for i, a in enumerate(self.attributes)}
        i = index[name]
        on = att[:, i] != 0
        partners = []
        if name in ("Bald", "Receding_Hairline"):
            partners = ["Bangs"]
        elif name == "Bangs":
            partners = ["Bald", "Receding_Hairline"]
        else:
            partners = next((list(g) for g in EXCLUSIVE if name in g), [])
        for other in partners:
            if other != name and other in index:
                j = index[other]
                att[:, j] = torch.where(on & (att[:, j] != 0), 1 - att[:, i], att[:, j])

    def target_vector(self, source: torch.Tensor, names) -> torch.Tensor:
        att = source.clone()
        for name in names:
            i = self.attributes.index(name)
            att[:, i] = 1 - att[:, i]
            self._resolve_conflicts(att, name)
        scaled = (att * 2 - 1) * self.thres_int
        for name in names:
            i = self.attributes.index(name)
            scaled[:, i] = scaled[:, i] * self.test_int / self.thres_int
        return scaled
