"""What the defenses against GAN attribute editors share: the editor they attack and its targets.

Each such defense attacks `editor`, a StarGAN / AttGAN generator config (by default
`configs/generator/stargan.yaml` at the job's scale, so the same weights, from
BENCH_STARGAN_WEIGHTS, as `generator=stargan`). Its targets (`condition`):

- a list of attribute names, e.g. `[Blond_Hair]`: the edit with those names, as the
  reference test loops attack each target separately. The configs default to the job
  generator's `target`, so `-m 'generator.target=[Black_Hair],[Blond_Hair],...'`
  protects each image against exactly the edit that is evaluated.
- `all`: every single-attribute edit at once, the sum of their losses (Ruiz et al.'s
  "joint class" attack), so one published image is protected against every target;
  `seed` (a generator choosing its target per image, which a defense cannot know)
  means the same.
- `cycle`: one target per iteration in turn (Ruiz et al.'s "iterative class" attack,
  Anti-Forgery's loop).

Edit distances are the references' MSE on [-1, 1] images.

DEVIATION in `all` and `cycle`: natanielruiz/disrupting-deepfakes stargan/attacks.py
`perturb_joint_class` and `perturb_iter_class` take one clean output `y` and compare the
output of EVERY target with it: solver.py `test_attack_cond` (where their calls stand,
commented out) passes `gen_noattack` of `idx == 0`, i.e. G(x, c_0), the clean edit for
target 0. Here each target's output is compared with its own clean edit G(x, c_k), the
distance the metrics measure for that edit (`edit_l2` of G(x_adv, c_k) vs G(x, c_k)).
"""

from collections.abc import Callable

import torch

from benchmark.build import build
from benchmark.defenses.base import Defense
from benchmark.errors import check
from benchmark.generators.base import Generator

MODES = ("all", "cycle", "seed")


def is_attribute_editor(component) -> bool:
    """A GAN attribute editor (StarGAN, AttGAN), known by the generator contract's flag."""
    return isinstance(component, Generator) and component.attribute_editor


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error of [0, 1] images, in the references' [-1, 1] units."""
    return ((a - b) * 2).pow(2).flatten(1).mean(dim=1)


class GanEditorDefense(Defense):

    def __init__(self, editor: dict, condition="all"):
        self.editor = build(editor, where=f"{self.name}.editor")
        check(self.name, "editor", type(self.editor).__name__, is_attribute_editor(self.editor),
              "a GAN attribute editor config (benchmark.generators.stargan.StarGAN, "
              "benchmark.generators.attgan.AttGAN)")
        names = self.editor.attributes
        check(self.name, "condition", condition,
              condition in MODES or (isinstance(condition, (list, tuple)) and len(condition) > 0
                                     and all(c in names for c in condition)),
              f"all, cycle, seed (= all) or a list of names from {names}")
        self.condition = "all" if condition == "seed" else condition

    @property
    def needs_attributes(self) -> bool:
        return self.editor.needs_attributes

    def target_vectors(self, n: int, attributes: list[dict] | None) -> list[torch.Tensor]:
        source = self.editor.source_vectors(n, attributes)
        if isinstance(self.condition, (list, tuple)):
            return [self.editor.target_vector(source, self.condition)]
        return self.editor.all_target_vectors(source)

    def clean_edits(self, x: torch.Tensor, vectors: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return [self.editor.translate(x, c) for c in vectors]

    def edit_distance(self, x: torch.Tensor, attributes: list[dict] | None
                      ) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[int], None]]:
        """The loss to maximise, MSE(G(x_adv, c), G(x, c)) summed over the targets in play, and
        the per-iteration hook that picks the target of `cycle`."""
        vectors = self.target_vectors(len(x), attributes)
        references = self.clean_edits(x, vectors)
        active = {"index": None}

        def on_step(i: int) -> None:
            if self.condition == "cycle":
                active["index"] = i % len(vectors)

        def distance(x_adv: torch.Tensor) -> torch.Tensor:
            chosen = range(len(vectors)) if active["index"] is None else [active["index"]]
            return sum(mse(self.editor.translate(x_adv, vectors[k]), references[k])
                       for k in chosen)

        return distance, on_step
