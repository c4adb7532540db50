"""CMUA-Watermark: one cross-model universal perturbation against several GAN editors.

Huang, Wang, Guo, Xie, Cheng, Qian, Chen and Zheng, "CMUA-Watermark: A Cross-Model
Universal Adversarial Watermark for Combating Deepfakes", AAAI 2022. arXiv:2105.10872.
Defaults from github.com/VDIGPKU/CMUA-Watermark (setting.json, attacks.py,
universal_attack.py), in the [-1, 1] units of its images:

- `epsilon`, `a`, `k` (iterations per (batch, model, target)), `momentum` and the
  training set's size: configs/defense/cmua.yaml's card; `star_factor`, `att_factor`:
  the per-model step factors of setting.json, here `factors`, one per editor.
- training set: `batch_size` (here `watermark_batch`: the cache drops keys named
  `batch_size` as runtime-only, but this one changes the watermark, which is a mean over
  each batch and gets one momentum update per batch), `num_test` (one pass) of CelebA's
  test split in file order; images at `img_size: 256`.
- per batch, per editor (StarGAN's 5 targets, then AttGAN's source vector and its 13
  single-attribute flips), per target: clean edit y = G(x, c); x' = x + U(-eps, eps);
  10 times: g = sign(grad MSE(G(x', c), y)) (the first at the unclipped x + U(-eps, eps):
  `clip_start: false`, as attacks.py; true clips it to the image range first), eta = mean
  over the batch of
  clamp(factor * (x' + a g - x), -eps, eps), up = eta (the first time) else
  momentum * up + (1 - momentum) * eta, x' = clamp(x + up) (`universal_perturb_stargan`,
  `universal_perturb_attgan`). The watermark `up` is added to every image.

The watermark is one artifact in the job's cache (stage `universal`), keyed by the
training images' contents, their attribute rows (when an editor reads them), the editors'
configs and these values: a sweep computes it once and every protected image reuses it.
The defense's `version` carries that key (`2+watermark:<key>`), so a protected image's
cache key (and the job's) changes whenever the watermark would: new files or a new
attribute file under the same training path are never served stale. A training set whose
editors read attributes but that has no attribute file (or no row for an image) stops the
build, before any model runs. Images of another size get the watermark resized
(bilinear). The reference also attacks AttentionGAN and HiSD; `editors` takes the
GAN editors bench has (StarGAN, AttGAN).

`watermark_file` uses the watermark the authors trained against all four editors instead
(`perturbation.pt`, setting.json's `universal_perturbation_path`, offered in the README's
Baidu-disk link): a tensor of shape (3, H, W) in the [-1, 1] units of the reference's images,
which universal_attack_inference.py adds to each image (`img_a + pgd_attack.up`). It is
checked against `eps` and halved to [0, 1] units; nothing is trained and the editors are not
built. The file's sha256 takes the place of the training key in `version`.

Reference model: the CelebA StarGAN, AttGAN, AttentionGAN and HiSD generators of the
reference (setting.json), the `editors`. Reference precision: fp32.
"""

import json
import logging
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.build import build
from benchmark.cache import ArtifactCache, cache_key
from benchmark.defenses.base import Defense, check_budget
from benchmark.defenses.gan_editors import is_attribute_editor, mse
from benchmark.defenses.precision import FP32
from benchmark.errors import BenchError, check
from benchmark.generators.base import Generator
from benchmark.images import content_key, derive_seed, generator_for
from benchmark.models.hub import file_sha256, find_file, load_checkpoint

log = logging.getLogger(__name__)

ALGORITHM = "3"  # bump when the algorithm changes; `CMUA.version` adds the watermark's key


class CMUA(Defense):
    name = "cmua"
    reference_precision = FP32
    contract_exemptions: ClassVar[dict[str, str]] = {
        "seeds": "one universal watermark for every image: an image's seed does not change it "
                 "(the training set's seed does)"}

    def __init__(self, editors: dict, training_set: dict, training_images: int = 128,
                 watermark_batch: int = 64, eps: float = 6.375, step: float = 1.275,
                 iterations: int = 10, momentum: float = 0.5, factors: dict | None = None,
                 seed: int = 0, cache_dir: str | None = None, watermark_file: str | None = None,
                 clip_start: bool = False):
        self.eps = check_budget(self.name, eps)
        self._watermark: torch.Tensor | None = None
        self._watermark_key: str | None = None
        self._training_inputs: list[str] = []
        if watermark_file is not None:
            self._watermark, self._watermark_key = self._released(watermark_file)
            self.editors, self.reads_attributes = {}, False
            return
        check(self.name, "step", step, isinstance(step, (int, float)) and step > 0,
              "a step size > 0 in pixel units out of 255")
        for key, value in (("training_images", training_images),
                           ("watermark_batch", watermark_batch),
                           ("iterations", iterations)):
            check(self.name, key, value, isinstance(value, int) and value >= 1, "an integer >= 1")
        check(self.name, "momentum", momentum, isinstance(momentum, (int, float))
              and 0 <= momentum < 1, "a number in [0, 1)")
        check(self.name, "clip_start", clip_start, isinstance(clip_start, bool), "true or false")
        check(self.name, "editors", editors, isinstance(editors, dict) and len(editors) > 0,
              "a mapping of names to GAN editor configs (stargan, attgan)")
        factors = dict(factors or {})
        check(self.name, "factors", factors, set(factors) <= set(editors)
              and all(isinstance(v, (int, float)) and v > 0 for v in factors.values()),
              f"a mapping from editor names {sorted(editors)} to step factors > 0")
        self.editors = {}
        for label, config in editors.items():
            editor = build(config, where=f"{self.name}.editors.{label}")
            check(self.name, f"editors.{label}", type(editor).__name__,
                  is_attribute_editor(editor), "a GAN attribute editor config")
            self.editors[label] = editor
        self.factors = {label: float(factors.get(label, 1.0)) for label in self.editors}
        self.training_set = build(training_set, where=f"{self.name}.training_set")
        self.reads_attributes = any(e.needs_attributes for e in self.editors.values())
        if self.reads_attributes:
            self._check_training_attributes(training_images)
        self.step, self.iterations, self.momentum = step / 255, iterations, float(momentum)
        self.training_images, self.watermark_batch = training_images, watermark_batch
        self.seed, self.clip_start = seed, clip_start
        self.cache = ArtifactCache(cache_dir) if cache_dir else None
        self.identity = {"editors": editors, "training_set": training_set,
                         "training_images": training_images, "watermark_batch": watermark_batch,
                         "eps": eps, "step": step, "iterations": iterations,
                         "momentum": momentum, "factors": self.factors, "seed": seed,
                         "clip_start": clip_start}

    def _released(self, spec) -> tuple[torch.Tensor, str]:
        """The authors' trained watermark from `spec`, in [0, 1] units, and its file key."""
        where = f"{self.name}.watermark_file"
        path = find_file(str(spec)) if isinstance(spec, str) and spec else None
        if path is None:
            raise BenchError(f"{where}={spec!r}: no such file (the authors' trained watermark is "
                             f"perturbation.pt, in the Baidu-disk link of the README of "
                             f"github.com/VDIGPKU/CMUA-Watermark)")
        up = load_checkpoint(path)
        if isinstance(up, torch.Tensor) and up.dim() == 4 and up.shape[0] == 1:
            up = up[0]
        if not (isinstance(up, torch.Tensor) and up.dim() == 3 and up.shape[0] == 3
                and up.is_floating_point() and bool(torch.isfinite(up).all())):
            found = tuple(up.shape) if isinstance(up, torch.Tensor) else type(up).__name__
            raise BenchError(f"{where}: {path} holds {found}; expected one finite float tensor "
                             f"of shape (3, H, W), the watermark in [-1, 1] image units")
        largest = float(up.abs().max()) * 127.5
        if largest > self.eps * 255 + 1e-3:
            raise BenchError(f"{where}: {path} reaches {largest:.3f}/255, above eps "
                             f"{self.eps * 255:g}/255 (set defense.eps to the budget it was "
                             f"trained with)")
        return (up.float() / 2).cpu(), f"file-{file_sha256(path)[:16]}"

    def _check_training_attributes(self, training_images: int) -> None:
        data = self.training_set
        readers = [f"editors.{label}" for label, e in self.editors.items() if e.needs_attributes]
        table = getattr(data, "attribute_table", None)
        if table is None:
            raise BenchError(f"{self.name}: {readers[0]} edits relative to each training image's "
                             f"attributes (source=dataset), but the training set has no "
                             f"attribute file: add dataset.attributes=/path/to/"
                             f"list_attr_celeba.txt (the training set is the job's dataset by "
                             f"default; else defense.training_set.attributes=...), or give the "
                             f"editors fixed source attributes "
                             f"(defense.{readers[0]}.source={{Male: 1, Young: 1}})")
        table.check(data.paths[:training_images])

    @property
    def version(self) -> str:
        """The algorithm's version plus the watermark's key: the runner keys every protected
        image by `version`, so a new watermark means new protected images."""
        return f"{ALGORITHM}+watermark:{self.watermark_key()}"

    def training_inputs(self) -> list[str]:
        """What the watermark is trained on: each training image's content key and, when an
        editor reads them, its attribute row."""
        data = self.training_set
        inputs = []
        for i in range(min(self.training_images, len(data))):
            sample = data.load(i)
            inputs.append(content_key(sample.x))
            if self.reads_attributes:
                inputs.append("attributes:" + json.dumps(data.attributes_of(sample.image_id),
                                                         sort_keys=True))
        return inputs

    def watermark_key(self) -> str:
        if self._watermark_key is None:
            self._training_inputs = self.training_inputs()
            self._watermark_key = cache_key("universal", self.identity, ALGORITHM,
                                            self._training_inputs, self.seed)
        return self._watermark_key

    # -- training -------------------------------------------------------------------------------

    def _training_batches(self):
        data = self.training_set
        count = min(self.training_images, len(data))
        if count == 0:
            raise BenchError(f"{self.name}.training_set: no images")
        samples = [data.load(i) for i in range(count)]
        needs = self.reads_attributes
        for start in range(0, count, self.watermark_batch):
            chunk = samples[start:start + self.watermark_batch]
            attributes = ([data.attributes_of(s.image_id) for s in chunk] if needs else None)
            yield torch.stack([s.x for s in chunk]), attributes

    def _targets(self, editor: Generator, n: int, attributes) -> list[torch.Tensor]:
        source = editor.source_vectors(n, attributes)
        vectors = editor.all_target_vectors(source)
        if editor.name == "attgan":  # universal_attack.py: att_b_list = [att_a] + 13 flips
            vectors = [editor.target_vector(source, [])] + vectors
        return vectors

    def train(self) -> torch.Tensor:
        watermark = None
        device = next(iter(self.editors.values())).device
        for b, (x, attributes) in enumerate(self._training_batches()):
            x = x.to(device)
            for label, editor in self.editors.items():
                factor = self.factors[label]
                for t, c in enumerate(self._targets(editor, len(x), attributes)):
                    with torch.no_grad():
                        clean = editor.translate(x, c)
                    g = generator_for(derive_seed(self.seed, f"{b}/{label}/{t}", "cmua"))
                    start = (torch.rand(x.shape, generator=g) * 2 - 1).to(x) * self.eps
                    x_adv = (x + start).clamp(0, 1) if self.clip_start else x + start
                    for _ in range(self.iterations):
                        x_var = x_adv.detach().requires_grad_(True)
                        (grad,) = torch.autograd.grad(mse(editor.translate(x_var, c), clean).sum(),
                                                      x_var)
                        moved = x_adv + self.step * grad.sign() - x
                        eta = (factor * moved).clamp(-self.eps, self.eps).mean(dim=0)
                        watermark = eta if watermark is None else (
                            self.momentum * watermark + (1 - self.momentum) * eta)
                        x_adv = (x + watermark).clamp(0, 1).detach()
        return watermark.detach().cpu()

    def watermark(self) -> torch.Tensor:
        if self._watermark is not None:
            return self._watermark
        key = self.watermark_key()
        stored = self.cache.load_array("universal", key) if self.cache else None
        if stored is not None:
            self._watermark = torch.from_numpy(stored)
            return self._watermark
        log.info("cmua: training the universal watermark on %d image(s)",
                 min(self.training_images, len(self.training_set)))
        self._watermark = self.train()
        if self.cache:
            self.cache.save_array("universal", key, self._watermark.numpy().astype(np.float32),
                                  {"config": self.identity, "version": ALGORITHM,
                                   "inputs": self._training_inputs})
        return self._watermark

    def protect(self, x: torch.Tensor, seeds: Sequence[int],
                attributes: list[dict] | None = None) -> torch.Tensor:
        up = self.watermark().to(x)
        if up.shape[-2:] != x.shape[-2:]:
            up = F.interpolate(up[None], size=x.shape[-2:], mode="bilinear",
                               align_corners=False)[0].clamp(-self.eps, self.eps)
        return (x + up).clamp(0, 1)
