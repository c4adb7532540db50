"""The import rule: stages import only downward (issue 12).

Every module under benchmark/ is parsed with `ast`; every `import` counts, at module
level or inside a function. A module's layer is its package under benchmark
(`benchmark/defenses/mist.py` -> `defenses`) or, for a top-level file, its name
(`benchmark/images.py` -> `images`). The rule enforced:

- foundation: `errors`, `images`, `paths`, `schema` import only each other.
- `data` imports only the foundation.
- `models` imports only the foundation and `data` (the audio type of talking heads).
- `transforms` import only the foundation, `models` and `build` (chain.py builds its
  steps): no defense, generator, metric, runner or result.
- `generators` import only the foundation, `models`, `build`, `video` (film strips) and
  `fitting` (the contract of a generator that fits on a set: DreamBooth).
- `metrics` import only the foundation, `models` and `build`: no defense, generator or
  transform.
- `defenses` import only the foundation, `models`, `transforms` (EOT's differentiable
  twins, DF-RAP's social-network qualities), `build`, `cache` (CMUA's universal
  perturbation) and, of the generators, only the contract `generators.base` (the
  GAN-editor defenses check that their editor is one). The networks and arithmetic they
  share with the generators (Stable Diffusion, the GAN checkpoints, the talking heads)
  come from `models`.
- `build` imports only `errors`, `plugins` (whose modules count as component packages),
  `cards` (the torch-free reader of the configs' `_card_` blocks, which build strips) and
  the five stage base modules (`*.base`); `plugins` imports only `errors`.
- `results` import only the foundation, `cache` and `provenance` (the records of what made a
  number, read back torch-free); no module of results/ but plots.py imports torch at module
  level.
- One paper's defense file imports no other paper's (`DEFENSE_PAPERS`).
"""

import ast
from pathlib import Path

import pytest
import yaml

from benchmark.paths import config_dir

PACKAGE = Path(__file__).resolve().parents[1] / "benchmark"
FOUNDATION = {"errors", "images", "paths", "schema"}
ALLOWED = {
    **{name: FOUNDATION for name in FOUNDATION},
    "data": FOUNDATION,
    "models": FOUNDATION | {"data"},
    "transforms": FOUNDATION | {"models", "build"},
    "generators": FOUNDATION | {"models", "build", "video", "fitting"},
    "metrics": FOUNDATION | {"models", "build"},
    "defenses": FOUNDATION | {"models", "transforms", "build", "cache"},
    "results": FOUNDATION | {"cache", "provenance"},
    "plugins": {"errors"},
}
BASES = {f"benchmark.{kind}.base" for kind in
         ("data", "defenses", "generators", "metrics", "transforms")}
DEFENSE_MAY_IMPORT = {"benchmark.generators.base"}  # the generator contract


def defense_papers() -> set[str]:
    """The defense modules the config group names, one paper each (the group is the registry;
    base, pgd, masks, eot, ... are the shared modules no config names)."""
    found = set()
    for path in (config_dir() / "defense").glob("*.yaml"):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_", "")
        parts = target.split(".")
        if parts[:2] == ["benchmark", "defenses"] and parts[2] != "base":
            found.add(parts[2])
    return found


DEFENSE_PAPERS = defense_papers()
TORCH_AT_MODULE_LEVEL_OK = {"benchmark.results.plots"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "benchmark"


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import of the tree."""
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == "benchmark":  # from benchmark import side_inputs
                out += [(f"benchmark.{a.name}", id(node) in top) for a in node.names]
            else:
                out.append((base, id(node) in top))
    return out


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    found = []
    src = layer(module)
    for target, top_level in imported(ast.parse(source), module, is_package):
        if src == "results" and (target == "torch" or target.startswith("torch.")) \
                and top_level and module not in TORCH_AT_MODULE_LEVEL_OK:
            found.append(f"{module} imports torch at module level")
        if not target.startswith("benchmark.") or target == "benchmark.__version__":
            continue
        dst = layer(target)
        if dst == src:
            if src == "defenses":
                mine, theirs = module.split(".")[2:3], target.split(".")[2:3]
                if mine != theirs and set(mine) & DEFENSE_PAPERS and set(theirs) & DEFENSE_PAPERS:
                    found.append(f"{module} imports another paper's file, {target}")
            continue
        if src == "build":
            if dst not in ("errors", "plugins", "cards") and not any(
                    target == b or target.startswith(b + ".") for b in BASES):
                found.append(f"{module} imports {target} (build: errors, plugins, cards and "
                             f"*.base only)")
            continue
        if src == "defenses" and target in DEFENSE_MAY_IMPORT:
            continue
        if src in ALLOWED and dst not in ALLOWED[src]:
            found.append(f"{module} imports {target} ({src} may import only "
                         f"{sorted(ALLOWED[src])})")
    return found


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_imports_only_downward():
    found = []
    for path in modules():
        found += violations(module_name(path), path.read_text(), path.name == "__init__.py")
    assert not found, "\n".join(found)


def test_every_defense_paper_is_a_file():
    assert {p.stem for p in (PACKAGE / "defenses").glob("*.py")} >= DEFENSE_PAPERS


@pytest.mark.parametrize("module, source", [
    ("benchmark.transforms.diffpure", "from benchmark.generators.sd_img2img import SDImg2Img\n"),
    ("benchmark.transforms.impress", "def f():\n    import benchmark.defenses.facelock\n"),
    ("benchmark.transforms.chain", "from benchmark import runner\n"),
    ("benchmark.metrics.face", "from benchmark.defenses.face_id import X\n"),
    ("benchmark.models.sd_ops", "from benchmark.defenses.base import Defense\n"),
    ("benchmark.data.base", "from benchmark.models import shared\n"),
    ("benchmark.defenses.photoguard", "from benchmark.generators.diffusion import choose\n"),
    ("benchmark.defenses.sds", "from benchmark.defenses.mist import load_pattern\n"),
    ("benchmark.generators.gan", "from benchmark.metrics.base import Metric\n"),
    ("benchmark.defenses.df_rap", "from benchmark.generators.gan import load_network\n"),
    ("benchmark.defenses.silencer", "from benchmark.generators.talking_head import check_model\n"),
    ("benchmark.results.tables", "import torch\n"),
    ("benchmark.build", "from benchmark.defenses.mist import Mist\n"),
])
def test_the_rule_catches(module, source):
    assert violations(module, source)


@pytest.mark.parametrize("module, source", [
    ("benchmark.transforms.diffpure", "from benchmark.models.sd_pipeline import Img2ImgEditor\n"),
    ("benchmark.defenses.sds", "from benchmark.defenses.texture_target import load_pattern\n"),
    ("benchmark.results.plots", "import torch\n"),
    ("benchmark.results.tables", "def f():\n    import torch\n"),
    ("benchmark.build", "from benchmark.defenses.base import Defense\n"),
    ("benchmark.defenses.cmua", "from benchmark.generators.base import Generator\n"),
])
def test_the_rule_allows(module, source):
    assert not violations(module, source)


def private_imports(source: str) -> list[str]:
    """Names starting with one underscore imported from another benchmark module."""
    return [f"{node.module}.{a.name}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benchmark")
            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]


def test_no_module_imports_another_modules_private_names():
    assert private_imports("from benchmark.models.arcface import _load_landmarks68\n")
    assert not private_imports("from benchmark.models.diffusion import frozen as _frozen\n")
    found = {module_name(p): private_imports(p.read_text()) for p in modules()}
    assert not {m: names for m, names in found.items() if names}
