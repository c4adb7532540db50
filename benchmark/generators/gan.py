"""What the GAN attribute editors (StarGAN, AttGAN) share: weights, source attributes, targets.

An editor maps an image and a target attribute vector to the edited image in one
forward pass (no noise). The target vector is built from the *source* attributes
of the image, as the reference test scripts do: the dataset's row of a CelebA-format
attribute file (`source: dataset`, needs `dataset.attributes`), or one fixed set of
source attributes for every image (`source: {Male: 1, Young: 1}`, absent names = 0).

`target` says which edit each image gets:
- `seed`: one of the editor's attributes per image, chosen from the image's seed
  (the same for its clean, protected and transformed versions); over a dataset
  every attribute is edited about equally often.
- a list of attribute names, e.g. `[Blond_Hair]`: that edit for every image (several
  names: all of them at once).
- `all`: one edit per attribute in one job, each with its own row label
  (`stargan(target=[Male])`, the label a sweep over `generator.target` gives). The
  defenses then attack all targets jointly (`condition: all`, one protected image per
  photo, as a publisher who does not know the edit); the references' per-target
  protection is the sweep `bench run -m 'generator.target=[Black_Hair],...,[Young]'`.

Weights: `weights` is a local checkpoint file (read with torch.load(weights_only=True),
or a `.safetensors` conversion), `owner/repo/path/in/repo` of a Hugging Face
repository already in the local cache, or `random` (a random-weight network, drawn
from a fixed seed: plumbing and tests only). `bench run` never downloads them.
Networks are loaded once per process and shared by a generator and the defenses
that attack it.

Images enter in [0, 1]; they are resized to `resolution` (bilinear, antialiased,
as torchvision's Resize in the reference loaders) and mapped to [-1, 1] as the
reference loaders' Normalize(0.5, 0.5) does; outputs are mapped back to [0, 1].
"""

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import BenchError, check
from benchmark.generators.base import Generator
from benchmark.images import derive_seed
from benchmark.models import resolve_device, shared
from benchmark.models.checkpoints import RANDOM, load_network, resolve_weights


def choose_index(seed: int, count: int) -> int:
    return derive_seed(seed, "", "target") % count


class GanEditor(Generator):
    """Base of the attribute editors: subclasses build the network and the target vectors."""

    attribute_editor = True
    weights_how_to_get = ""
    default_attributes: tuple[str, ...] = ()

    def __init__(self, weights: str | None, resolution: int, attributes: Sequence[str],
                 target: str | Sequence[str] = "seed", source: str | dict = "dataset",
                 device: str = "auto", max_batch: int = 16):
        name = self.name
        check(name, "resolution", resolution, isinstance(resolution, int) and resolution >= 8,
              "an integer >= 8 (pixels)")
        check(name, "attributes", attributes,
              isinstance(attributes, (list, tuple)) and len(attributes) > 0
              and all(isinstance(a, str) for a in attributes),
              "the non-empty list of attribute names the network was trained on")
        self.attributes = list(attributes)
        check(name, "target", target,
              target in ("seed", "all") or (isinstance(target, (list, tuple)) and len(target) > 0
                                            and all(t in self.attributes for t in target)),
              f"'seed', 'all' (one edit per attribute, each its own row label) or a list of "
              f"names from {self.attributes}")
        check(name, "source", source,
              source == "dataset" or (isinstance(source, dict) and all(
                  k in self.attributes and v in (0, 1) for k, v in source.items())),
              f"'dataset' (dataset.attributes) or a mapping of names from {self.attributes} "
              f"to 0 or 1 (absent names are 0)")
        check(name, "max_batch", max_batch, isinstance(max_batch, int) and max_batch >= 1,
              "an integer >= 1")
        self.resolution = resolution
        self.target = target if target in ("seed", "all") else list(target)
        self.source = source
        self.max_batch = max_batch
        self.device = resolve_device(device)
        self.weights = weights
        # a missing checkpoint stops the job before any compute
        self.weights_path = resolve_weights(weights, f"{name}.weights", self.weights_how_to_get)

    @property
    def needs_attributes(self) -> bool:
        return self.source == "dataset"

    # -- the network ----------------------------------------------------------------------------

    def build_network(self) -> nn.Module:
        raise NotImplementedError

    def network_key(self) -> tuple:
        raise NotImplementedError

    state_key: str | None = None  # the entry of a checkpoint dict that holds the generator

    @property
    def network(self) -> nn.Module:
        key = (self.name, str(self.weights_path or RANDOM), *self.network_key(), str(self.device))
        return shared(key, lambda: load_network(self.build_network, self.weights_path,
                                                self.state_key, self.calibrate_random)
                      .to(self.device))

    def calibrate_random(self, network: nn.Module) -> None:
        """Random weights only: make the untrained network usable for plumbing (no-op here)."""

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The network on [-1, 1] images and target vectors: [-1, 1] output."""
        raise NotImplementedError

    # -- attribute vectors ----------------------------------------------------------------------

    def source_vectors(self, n: int, attributes: list[dict] | None) -> torch.Tensor:
        """(n, K) source attributes in {0, 1}: the dataset's rows, or the fixed `source`."""
        if self.source != "dataset":
            row = [float(self.source.get(a, 0)) for a in self.attributes]
            return torch.tensor([row] * n)
        if attributes is None or len(attributes) != n:
            raise BenchError(f"{self.name}: source=dataset needs each image's attributes "
                             f"(dataset.attributes=/path/to/list_attr_celeba.txt), or give "
                             f"fixed ones: {self.name}.source={{Male: 1, Young: 1}}")
        missing = [a for a in self.attributes if a not in attributes[0]]
        if missing:
            raise BenchError(f"{self.name}: the dataset's attribute file has no column(s) "
                             f"{missing}; it needs {self.attributes}")
        return torch.tensor([[float(row[a]) for a in self.attributes] for row in attributes])

    def target_vector(self, source: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """(n, K) network input that edits `names` relative to the source attributes."""
        raise NotImplementedError

    def variants(self) -> list[tuple[str, "GanEditor", dict]] | None:
        """target=all: one editor per attribute, as (label setting, editor, config change); the
        runner makes each edit and labels its rows `<name>(target=[<attribute>])`."""
        if self.target != "all":
            return None
        out = []
        for attribute in self.attributes:
            editor = copy.copy(self)
            editor.target = [attribute]
            out.append((f"target=[{attribute}]", editor, {"target": [attribute]}))
        return out

    def edit_targets(self, seeds: Sequence[int]) -> list[list[str]]:
        """Per image, the attribute names its edit changes."""
        if self.target == "all":
            raise BenchError(f"{self.name}: target=all is a set of editors (variants()); the "
                             f"runner edits with each of them")
        if self.target == "seed":
            return [[self.attributes[choose_index(s, len(self.attributes))]] for s in seeds]
        return [list(self.target)] * len(seeds)

    def all_target_vectors(self, source: torch.Tensor) -> list[torch.Tensor]:
        """One target vector batch per single-attribute edit (the reference test loops)."""
        return [self.target_vector(source, [a]) for a in self.attributes]

    # -- editing --------------------------------------------------------------------------------

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              antialias=True, align_corners=False)
        return x

    def translate(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Differentiable edit of [0, 1] images with target vectors c: [0, 1] output."""
        y = self.forward(self.prepare(x.float()) * 2 - 1, c.to(x.device, torch.float32))
        return (y + 1) / 2

    def edit(self, x: torch.Tensor, seeds: Sequence[int],
             attributes: list[dict] | None = None) -> torch.Tensor:
        if len(seeds) != len(x):
            raise BenchError(f"{self.name}: {len(x)} images but {len(seeds)} seeds")
        source = self.source_vectors(len(x), attributes)
        targets = self.edit_targets(seeds)
        c = torch.cat([self.target_vector(source[i:i + 1], names)
                       for i, names in enumerate(targets)])
        out = []
        with torch.no_grad():
            for start in range(0, len(x), self.max_batch):
                chunk = slice(start, start + self.max_batch)
                out.append(self.translate(x[chunk].to(self.device), c[chunk]).clamp(0, 1).cpu())
        return torch.cat(out)
