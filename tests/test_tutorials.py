"""Every tutorial chapter runs top to bottom as a plain script, writes exactly the figures its
``--help`` lists (among them those its docs page shows) at a legible resolution, passes its own
gradient checks, and is a notebook in jupytext's "percent" format."""

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
DOCS = ROOT / "docs"
CHAPTERS = sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.py"))
FAST = {"01_patch_embedding.py", "02_layernorm.py", "03_attention.py", "04_mlp_gelu.py"}  # a few seconds each
WITH_GRADCHECK = {c[:2] for c in CHAPTERS if "gradcheck(" in (TUTORIALS / c).read_text()}


def docs_figures(chapter):
    """The figures the chapter's docs page shows, e.g. {'01_patch_grid.png', ...}."""
    page = DOCS / chapter.replace(".py", ".md")
    return set(re.findall(r"\]\(figures/([\w.-]+\.png)\)", page.read_text()))


def run_chapter(chapter, *args, cwd=None):
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, str(TUTORIALS / chapter), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@functools.lru_cache
def chapter_help(chapter):
    proc = run_chapter(chapter, "--help", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def declared_figures(chapter):
    """The figures the chapter's --help lists."""
    return set(re.findall(r"^  (\d\d_\w+\.png) ", chapter_help(chapter), flags=re.M))


def test_chapters_are_numbered_from_01_without_gaps_and_listed_in_order():
    """A new chapter is covered by adding it, its page and its nav entry: nothing here lists them
    (tests/test_docs.py checks that each page says how to run its chapter)."""
    numbers = [int(c[:2]) for c in CHAPTERS]
    assert numbers == list(range(1, len(CHAPTERS) + 1)), CHAPTERS  # from 01, no gap, no duplicate
    stems = [c.removesuffix(".py") for c in CHAPTERS]
    assert sorted(p.stem for p in DOCS.glob("[0-9][0-9]_*.md")) == stems  # one page per chapter, none else
    nav = re.findall(r"^\s*- (\d+)\. [^:\n]+: (\d\d_[\w-]+)\.md\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert nav == [(str(n), stem) for n, stem in zip(numbers, stems, strict=True)], nav  # "N. Title: NN_x.md"


@pytest.mark.parametrize("chapter", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow)
                                     for c in CHAPTERS])
def test_chapter_runs_and_writes_its_figures(chapter, tmp_path):
    proc = run_chapter(chapter, "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, f"{chapter} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    written = {p.name for p in tmp_path.iterdir()}
    assert written == declared_figures(chapter), "what --help lists is what the chapter draws"
    for name in written:  # real PNG files, legible and kept small for the docs
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 1000 < len(data) < 200_000, (name, len(data))
        assert min(Image.open(tmp_path / name).info["dpi"]) >= 119.5, name  # 120 dpi, kept as dots/metre
    if chapter[:2] in WITH_GRADCHECK:
        worst = re.findall(r"worst relative error: ([0-9.e+-]+)", proc.stdout)
        assert worst, f"{chapter} printed no gradient check result"
        bar = 1e-5 if chapter[:2] in ("05", "07") else 1e-7  # a whole model, or single layers
        assert all(float(w) < bar for w in worst), worst


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_is_a_percent_format_notebook(chapter):
    text = (TUTORIALS / chapter).read_text()
    assert text.startswith("# %% [markdown]\n# # Chapter"), "a chapter opens with its title cell"
    markers = re.findall(r"^# %%(.*)$", text, flags=re.M)
    assert sum(m.strip() == "[markdown]" for m in markers) >= 3, "prose cells"
    assert sum(m.strip() == "" for m in markers) >= 3, "code cells"
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.reads(text, fmt="py:percent")
    kinds = {cell.cell_type for cell in nb.cells}
    assert kinds == {"markdown", "code"}
    assert len(nb.cells) == len(markers)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_help_says_what_the_chapter_draws_and_where(chapter):
    text = chapter_help(chapter)
    title = re.search(r"^# # (.+)$", (TUTORIALS / chapter).read_text(), flags=re.M).group(1)
    assert title in text and "--out" in text and "tutorials/figures/" in text
    declared = declared_figures(chapter)
    assert all(name.startswith(chapter[:3]) for name in declared), declared
    shown = docs_figures(chapter)
    assert shown, f"the docs page of {chapter} shows no figure"
    assert shown <= declared, f"{chapter}'s --help does not list {sorted(shown - declared)}"


@pytest.fixture
def common(monkeypatch, tmp_path):
    """tutorials/common.py, imported afresh with its command line parsed as ``--out tmp_path``. Its
    process tuning is left out (``tune_process`` changes malloc for the whole test process; see
    tests/test_process.py), and the matplotlib settings it changes are restored afterwards (its
    Agg backend is what the tests draw with anyway)."""
    import minivit.kernels

    monkeypatch.setattr(minivit.kernels, "tune_process", lambda: None)
    monkeypatch.delitem(sys.modules, "common", raising=False)
    monkeypatch.syspath_prepend(str(TUTORIALS))
    monkeypatch.setattr(sys, "argv", ["chapter.py", "--out", str(tmp_path)])
    with matplotlib.rc_context():
        import common

        yield common


def test_default_figure_folder_is_next_to_the_chapters(common):
    assert Path(common.DEFAULT_DIR) == TUTORIALS / "figures"


def test_save_writes_only_declared_figures_at_120_dpi(common, tmp_path):
    args = common.chapter_args({"00_line": "a line"}, grids=dict(type=int, default=7))
    assert args.out == str(tmp_path) and args.grids == 7
    fig, ax = common.plt.subplots()
    ax.plot([0, 1])
    with pytest.raises(ValueError, match="declared"):
        common.save(fig, "00_other")
    path = common.save(fig, "00_line")
    assert path == str(tmp_path / "00_line.png") and round(Image.open(path).info["dpi"][0]) >= 120
