"""MkDocs hook: a page's `<!-- catalogue: GROUP -->` becomes the table of that config group,
made from the YAML files themselves (name, the first comment line, the class, the values
each sets), so the docs can never disagree with what `bench run GROUP=NAME` runs."""

import re
from pathlib import Path

import yaml

from benchmark import cards
from benchmark.paths import config_description

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MARKER = re.compile(r"<!--\s*catalogue:\s*(\w+)\s*-->")
# the defaults table and the per-default sources of a group, made from its configs' cards
CARDS = re.compile(r"<!--\s*cards:\s*(\w+)\s*-->")
SOURCES = re.compile(r"<!--\s*card-sources:\s*(\w+)\s*-->")


def as_yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def settings(path: Path) -> str:
    node = yaml.safe_load(path.read_text()) or {}
    shown = [f"`{k}: {as_yaml(v)}`" for k, v in node.items()
             if k not in ("_target_", "defaults", cards.CARD_KEY)
             and not isinstance(v, (dict, list))
             and "${" not in str(v)]
    return ", ".join(shown[:8]) + (" ..." if len(shown) > 8 else "")


def catalogue(group: str) -> str:
    rows = ["| name | what it is | class | values |", "|---|---|---|---|"]
    for path in sorted((CONFIGS / group).glob("*.yaml")):
        node = yaml.safe_load(path.read_text()) or {}
        target = node.get("_target_")
        module, _, name = str(target).removeprefix("benchmark.").rpartition(".")
        parents = [f"`{d}`" for d in node.get("defaults", []) if isinstance(d, str)
                   and d != "_self_"]
        where = (f"`{name}` ({module.replace('.', '/')}.py)" if target
                 else "extends " + ", ".join(parents))
        cells = [f"`{path.stem}`", cards.summary(path, config_description(path)).replace("|", "\\|"),
                 where,
                 settings(path).replace("|", "\\|")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs) -> str:
    markdown = CARDS.sub(lambda m: cards.table(CONFIGS / m.group(1)), markdown)
    markdown = SOURCES.sub(lambda m: cards.sources(CONFIGS / m.group(1)), markdown)
    return MARKER.sub(lambda m: catalogue(m.group(1)), markdown)
