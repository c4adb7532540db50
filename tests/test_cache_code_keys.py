"""A component's cache key follows its code (benchmark.cache.component_version): an edit of
what it computes makes new keys, a comment, docstring or layout edit keeps them."""

import importlib
import os
import sys
import textwrap

import pytest

from benchmark import provenance
from benchmark.cache import cache_key, component_version
from benchmark.provenance import code_digest, source_digest

CONFIG = {"_target_": "x.Comp", "quality": 75}

BASE = '''
"""A base class."""


class Base:
    version = "1"

    def scale(self):
        return 2
'''
HELPER = '''
def offset(x):
    return x + 1
'''
INNER = '''
class Inner:
    def __call__(self, x):
        return x * 3
'''
COMP = '''
"""A component."""

from .base import Base


class Comp(Base):
    """It computes."""

    def __init__(self, inner=None):
        self.inner = inner

    def forward(self, x):
        from {package}.helper import offset  # imported where it is used

        return offset(x) * self.scale()
'''


@pytest.fixture
def package(tmp_path, monkeypatch, request):
    """A component package on sys.path: write(module, source) edits one of its files."""
    name = f"codepkg_{request.node.name[5:25]}"
    root = tmp_path / name
    root.mkdir()
    stamp = [1_700_000_000_000_000_000]

    def write(module: str, source: str) -> None:
        path = root / f"{module}.py"
        path.write_text(textwrap.dedent(source).format(package=name))
        stamp[0] += 10**9  # a new version of the file, whatever the clock's resolution
        os.utime(path, ns=(stamp[0], stamp[0]))

    for module, source in (("__init__", ""), ("base", BASE), ("helper", HELPER),
                           ("inner", INNER), ("comp", COMP)):
        write(module, source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, write
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def key_of(component) -> str:
    return cache_key("transform", CONFIG, component_version(component), ["abc"], 7)


def build(name: str, with_inner: bool = False):
    comp = importlib.import_module(f"{name}.comp").Comp
    inner = importlib.import_module(f"{name}.inner").Inner() if with_inner else None
    return comp(inner)


def test_comment_docstring_and_layout_edits_keep_the_key(package):
    name, write = package
    component = build(name)
    before = key_of(component)
    edits = [
        COMP.replace("# imported where it is used", "# a new comment\n        # and another"),
        COMP.replace('"""It computes."""', '"""It computes, said otherwise."""'),
        COMP.replace('"""A component."""', ""),
        COMP.replace("return offset(x) * self.scale()",
                     "return (\n            offset(x)\n            * self.scale()\n        )"),
    ]
    for edit in edits:
        write("comp", edit)
        assert key_of(component) == before, edit
    write("base", BASE.replace('"""A base class."""', '"""The base class, reworded."""'))
    assert key_of(component) == before


@pytest.mark.parametrize("module, source", [
    ("comp", COMP.replace("* self.scale()", "* self.scale() + 0")),
    ("base", BASE.replace("return 2", "return 3")),  # a base class's module
    ("helper", HELPER.replace("x + 1", "x + 2")),  # imported inside a method
])
def test_a_code_edit_changes_the_key(package, module, source):
    name, write = package
    component = build(name)
    before = key_of(component)
    write(module, source)
    assert key_of(component) != before


def test_the_code_of_a_component_it_holds_is_part_of_its_key(package):
    """A chain's steps, a defense's encoder: built from config, so not imported by the
    component's module, and still what it computes with."""
    name, write = package
    plain, holding = build(name), build(name, with_inner=True)
    assert key_of(plain) != key_of(holding)
    before = key_of(holding)
    write("inner", INNER.replace("x * 3", "x * 4"))
    assert key_of(holding) != before and key_of(plain) == key_of(build(name))


def test_the_hand_version_still_counts(package):
    name, _ = package
    component = build(name)
    before = key_of(component)
    component.version = "2"
    assert key_of(component) != before


def test_modules_that_compute_nothing_stored_are_left_out():
    """An edit of an error message, of how weights are found or of the package's version must
    not cost a cluster its cache; what the runner applies to every output must count."""
    from benchmark.transforms.jpeg import JpegCompression

    roots = {c.__module__ for c in type(JpegCompression()).__mro__}
    modules = provenance._closure(roots | set(provenance.ALWAYS), {"benchmark"})
    assert set(modules) == {"benchmark.transforms.jpeg", "benchmark.transforms.base",
                            "benchmark.images"}  # jpeg.py imports benchmark.errors: left out
    assert {"benchmark.errors", "benchmark.models.hub", "benchmark"} <= provenance.NOT_CODE


def test_the_canonical_form_ignores_comments_docstrings_and_layout_only():
    same = ["x = 1\n", "# c\nx = (1)  # one\n", '"""doc"""\nx = 1\n', "x = \\\n    1\n"]
    assert len({source_digest(s) for s in same}) == 1
    assert source_digest('def f():\n    """doc"""\n    return 1\n') == source_digest(
        "def f():\n    return 1\n")
    assert source_digest("x = 1\n") != source_digest("x = 2\n")
    assert source_digest("s = 'a'\n") != source_digest("s = 'b'\n")  # a string that is used


def test_key_derivation_is_pinned(tmp_path, monkeypatch):
    """What makes today's keys: a change here recomputes every cluster's cache, so it must be
    deliberate (say so in the commit and the README's Cache section)."""
    assert source_digest("x = 1\n") == (
        "1371fc710ff6b53963234b8f860325d21bba1121d7d16c8054c03dc17cf12c0c")
    name = "bench_pinned_component"
    (tmp_path / f"{name}.py").write_text('class Pinned:\n    version = "3"\n\n'
                                         '    def __call__(self, x):\n        return x\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(provenance, "ALWAYS", ())  # benchmark.images changes with the project
    try:
        component = importlib.import_module(name).Pinned()
        assert code_digest(component) == "f78bfee7d4ac97b1"
        assert component_version(component) == "3+code.f78bfee7d4ac97b1"
        assert key_of(component) == (
            "5e38de8d8abe663d4d0ea10652eb103fc47d1e3a60d67f3a2f1e0ae529b3735c")
    finally:
        sys.modules.pop(name, None)
