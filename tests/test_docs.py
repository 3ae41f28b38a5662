"""The documentation names real things: every class and function it names imports from minivit,
every test it names exists in tests/, every figure it shows is in docs/figures; every chapter has
a page; and the site builds with ``mkdocs build --strict``. In the built site every class of an
equation table links to its own API entry, the API pages show each object's source, and no object
is documented twice."""

import ast
import importlib
import inspect
import re
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from minivit import nn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
NAME = re.compile(r"`(minivit(?:\.\w+)+)`")
TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
FIGURE = re.compile(r"\]\((figures/[\w.-]+\.png)\)")
LINK = re.compile(r"\[`(minivit(?:\.\w+)+)`\]\[(?:minivit(?:\.\w+)+)?\]")  # [`name`][] or [`name`][anchor]
EQUATION_TABLE = "| Equation | Class | Test"
# an object mkdocstrings renders: its kind (module, class, function, attribute) and its anchor id
API_OBJECT = re.compile(r'<div class="doc doc-object doc-(\w+)">\s*'
                        r'<h\d id="(minivit[\w.]*)" class="doc doc-heading"')


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


def equation_rows(page):
    """The body rows of the page's "| Equation | Class | Test ..." tables, as lists of cells."""
    rows, in_table = [], False
    for line in page.read_text().splitlines():
        if line.startswith(EQUATION_TABLE):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return rows


def linked_classes():
    """{(page, name)} of every class linked in an equation table."""
    return {(page, m.group(1))
            for page in PAGES for row in equation_rows(page) if (m := LINK.fullmatch(row[1]))}


def test_index_table_gives_every_equation_a_class_and_a_test():
    rows = equation_rows(DOCS / "index.md")
    assert len(rows) >= 20
    for row in rows:
        assert len(row) == 4, row
        assert LINK.fullmatch(row[1]), f"no linked class in: {row}"
        assert TEST.fullmatch(row[2]), f"no test in: {row}"
    classes = {LINK.fullmatch(row[1]).group(1) for row in rows}
    layers = [name for name in nn.__all__ if isinstance(getattr(nn, name), type)
              and issubclass(getattr(nn, name), nn.Module)
              and getattr(nn, name).forward is not nn.Module.forward]  # every equation of minivit.nn
    assert {"Linear", "LayerNorm", "ScaledDotProductAttention"} <= set(layers)  # the discovery works
    containers = {"Sequential"}  # composes layers: no equation of its own
    missing = [name for name in layers if f"minivit.nn.{name}" not in classes and name not in containers]
    assert not missing, f"the index has no row for {missing}"


def test_every_class_in_an_equation_table_is_a_link():
    rows = [(page.name, row) for page in PAGES for row in equation_rows(page)]
    assert len(rows) >= 50
    unlinked = [(page, row[1]) for page, row in rows if "minivit" in row[1] and not LINK.fullmatch(row[1])]
    assert not unlinked, f"class names that do not link to the API reference: {unlinked}"
    assert len(linked_classes()) >= 40


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



@pytest.mark.parametrize("front", ["README.md", "docs/index.md"])
def test_the_front_page_leads_to_the_chapters_first(front):
    """A learner who reads only the front page: its first link is chapter 1, one command installs
    and runs chapter 1, and every chapter follows in order with its page; the README gives each
    chapter's command and notebook too. The chapters come before setting up, the tests and the
    measured results."""
    text = (ROOT / front).read_text()
    prefix = "docs/" if front == "README.md" else ""
    chapters = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links[0] == f"{prefix}{chapters[0].stem}.md", f"{front}: the first link is {links[0]}"
    assert f"pip install -r requirements.txt -e . && python tutorials/{chapters[0].name}" in text
    pages = list(dict.fromkeys(link for link in links if re.fullmatch(rf"{prefix}\d\d_\w+\.md", link)))
    in_order = [f"{prefix}{c.stem}.md" for c in chapters]
    assert pages[:len(chapters)] == in_order, f"{front}: the chapters are not linked in order"
    if front == "README.md":
        for chapter in chapters:
            assert f"`python tutorials/{chapter.name}`" in text, f"no command for {chapter.name}"
            assert f"`notebooks/{chapter.stem}.ipynb`" in text, f"no notebook for {chapter.name}"
    first_chapter = text.index(f"({prefix}{chapters[0].stem}.md)")
    for later in ("python -m pytest -q", "python -m minivit train", "benchmarks"):
        assert text.index(later) > first_chapter, f"{front}: {later!r} comes before the chapters"


@pytest.fixture(scope="module")
def api(site):
    """{API page url: [(kind, anchor id, its html up to the next object)]} over the built API pages."""
    pages = {}
    for html_file in sorted((site / "api").glob("*/index.html")):
        html = html_file.read_text()
        found_here = list(API_OBJECT.finditer(html))
        ends = [m.start() for m in found_here[1:]] + [len(html)]
        pages[f"/api/{html_file.parent.name}/"] = [(m.group(1), m.group(2), html[m.start():end])
                                                   for m, end in zip(found_here, ends, strict=True)]
    return pages


def canonical(obj):
    """Where a module, class or function is defined: the same for every name it is imported as."""
    return obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{obj.__qualname__}"


@pytest.mark.slow
def test_mkdocs_build_strict(site):
    html = (site / "03_attention" / "index.html").read_text()
    assert html.count("<math ") >= 20 and r"\frac" not in html  # the equations, rendered to MathML
    assert (site / "figures" / "03_sqrt_d_scale.png").is_file()
    api = (site / "api" / "nn" / "index.html").read_text()
    assert "MultiHeadSelfAttention" in api and "y = x W + b" in api  # classes and their docstrings


@pytest.mark.slow
def test_equation_table_links_reach_the_api_entry_of_the_named_object(site, api):
    anchors = {(url, ident) for url, objects in api.items() for _, ident, _ in objects}
    for page, name in sorted(linked_classes()):
        url = "/" if page.name == "index.md" else f"/{page.stem}/"
        html = (site / url.strip("/") / "index.html").read_text()
        hrefs = re.findall(rf'<a [^>]*href="([^"]*)"[^>]*><code>{re.escape(name)}</code></a>', html)
        assert hrefs, f"{page.name}: {name} is not a link in the built page"
        for href in hrefs:
            target = urlsplit(urljoin(url, href))
            where = f"{page.name}: {name} links to {href}"
            assert (target.path, target.fragment) in anchors, f"{where}, which is no API entry"
            assert resolve(target.fragment) is resolve(name), f"{where}, the entry of another object"


@pytest.mark.slow
def test_api_pages_show_the_source_of_every_class_and_function(api):
    shown = [(ident, section) for objects in api.values() for kind, ident, section in objects
             if kind in ("class", "function")]
    assert len(shown) >= 80
    for ident, section in shown:
        source = Path(inspect.getsourcefile(inspect.unwrap(resolve(ident)))).relative_to(ROOT)
        assert f"Source code in <code>{source.as_posix()}</code>" in section, f"{ident} shows no source"


@pytest.mark.slow
def test_no_object_is_documented_twice(api):
    where = {}
    for url, objects in api.items():
        for kind, ident, _ in objects:
            if kind in ("module", "class", "function"):
                where.setdefault(canonical(resolve(ident)), []).append(f"{url}#{ident}")
    twice = {name: places for name, places in where.items() if len(places) > 1}
    assert not twice, f"documented more than once: {twice}"
