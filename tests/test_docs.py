"""The documentation site's catalogue pages are made from the config groups: every config of
every group appears, and each group's page asks for its catalogue (`mkdocs build --strict`,
run by CI, checks the rest: links, the API pages)."""

import importlib.util
from pathlib import Path

import pytest

from benchmark.paths import config_dir

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = {"defense": "defenses.md", "transform": "transforms.md", "generator": "generators.md",
         "metric": "metrics.md", "dataset": "datasets.md", "experiment": "reproducing.md"}


def hook():
    spec = importlib.util.spec_from_file_location("catalogue", DOCS / "hooks" / "catalogue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("group", sorted(PAGES))
def test_every_config_of_the_group_is_in_its_page(group):
    page = (DOCS / PAGES[group]).read_text()
    rendered = hook().on_page_markdown(page)
    assert f"<!-- catalogue: {group} -->" in page
    for path in (config_dir() / group).glob("*.yaml"):
        assert f"| `{path.stem}` |" in rendered, f"{group}/{path.stem} is not in {PAGES[group]}"


def test_the_catalogue_shows_what_the_yaml_says():
    rows = hook().catalogue("transform")
    jpeg = next(line for line in rows.splitlines() if line.startswith("| `jpeg` |"))
    assert "`JpegCompression` (transforms/jpeg.py)" in jpeg and "`quality: 75`" in jpeg
