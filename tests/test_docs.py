"""The documentation names real things: every class and function it names imports from minivit,
every test it names exists in tests/, every figure it shows is in docs/figures; every chapter has
a page; and the site builds with ``mkdocs build --strict``."""

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
NAME = re.compile(r"`(minivit(?:\.\w+)+)`")
TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
FIGURE = re.compile(r"\]\((figures/[\w.-]+\.png)\)")


def found(pattern):
    """{match: [pages where it occurs]} over every page."""
    hits = {}
    for page in PAGES:
        for m in pattern.finditer(page.read_text()):
            hits.setdefault(m.groups() if pattern.groups > 1 else m.group(1), []).append(page.name)
    return hits


def resolve(dotted):
    """Import the longest module prefix of ``dotted``, then follow the remaining attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_docs_name_classes_and_tests():
    assert len(found(NAME)) >= 20 and len(found(TEST)) >= 20


@pytest.mark.parametrize("dotted", sorted(found(NAME)))
def test_named_object_exists(dotted):
    try:
        resolve(dotted)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{dotted} (named in {found(NAME)[dotted]}) does not exist: {e}")


def _test_functions(path):
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.name.startswith("test")}


@pytest.mark.parametrize("ref", sorted(found(TEST)), ids="::".join)
def test_named_test_exists(ref):
    path, name = ref
    assert (ROOT / path).is_file(), f"{path} (named in {found(TEST)[ref]}) does not exist"
    assert name in _test_functions(ROOT / path), f"{path} has no test {name} (named in {found(TEST)[ref]})"


def table_rows(page, header):
    """The body rows of the markdown table that starts with ``header``, as lists of cells."""
    lines = (DOCS / page).read_text().splitlines()
    start = lines.index(header) + 2  # skip the |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return rows


def test_index_table_gives_every_equation_a_class_and_a_test():
    rows = table_rows("index.md", "| Equation | Class | Test | Chapter |")
    assert len(rows) >= 20
    for row in rows:
        assert len(row) == 4, row
        assert NAME.fullmatch(row[1]), f"no class in: {row}"
        assert TEST.fullmatch(row[2]), f"no test in: {row}"
    classes = {row[1].strip("`") for row in rows}
    for name in ("Patchify", "PatchEmbed", "Linear", "LayerNorm", "Softmax", "ScaledDotProductAttention",
                 "MultiHeadSelfAttention", "GELU", "MLP", "ClassToken", "PositionEmbedding", "Block"):
        assert f"minivit.nn.{name}" in classes, f"the index has no row for {name}"


def test_every_figure_shown_exists_and_every_figure_is_shown():
    shown = set(found(FIGURE))
    assert shown, "the docs show no figures"
    missing = [f for f in shown if not (DOCS / f).is_file()]
    assert not missing, f"figures shown but not in docs/: {missing}"
    unused = {f"figures/{p.name}" for p in (DOCS / "figures").glob("*.png")} - shown
    assert not unused, f"figures in docs/figures that no page shows: {sorted(unused)}"


def test_every_chapter_has_a_page_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for chapter in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py")):
        page = chapter.with_suffix(".md").name
        assert (DOCS / page).is_file(), f"no docs page for {chapter.name}"
        assert f": {page}" in nav, f"{page} is not in the mkdocs.yml nav"
        assert f"tutorials/{chapter.name}" in (DOCS / page).read_text(), f"{page} does not say how to run it"


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
           "-d", str(site)]
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    html = (site / "03_attention" / "index.html").read_text()
    assert 'class="arithmatex"' in html  # the equations reach MathJax
    assert (site / "figures" / "03_sqrt_d_scale.png").is_file()
    api = (site / "api" / "nn" / "index.html").read_text()
    assert "MultiHeadSelfAttention" in api and "y = x W + b" in api  # classes and their docstrings
