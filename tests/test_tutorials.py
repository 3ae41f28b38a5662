"""Every tutorial chapter runs top to bottom as a plain script, writes the figures its docs page
shows, passes its own gradient checks, and is a notebook in jupytext's "percent" format."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def run_chapter(chapter, out):
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, str(TUTORIALS / chapter), "--out", str(out)], cwd=out, env=env,
                          capture_output=True, text=True, timeout=900)


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
    proc = run_chapter(chapter, tmp_path)
    assert proc.returncode == 0, f"{chapter} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    written = {p.name for p in tmp_path.iterdir()}
    expected = docs_figures(chapter)
    assert expected, f"the docs page of {chapter} shows no figure"
    assert expected <= written, f"{chapter} did not write {sorted(expected - written)}"
    assert all(name.startswith(chapter[:3]) and name.endswith(".png") for name in written), written
    for name in written:  # real PNG files, kept small for the docs
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 1000 < len(data) < 200_000, (name, len(data))
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


def test_default_figure_folder_is_next_to_the_chapters():
    sys.path.insert(0, str(TUTORIALS))
    try:
        import common
    finally:
        sys.path.remove(str(TUTORIALS))
    assert Path(common.DEFAULT_DIR) == TUTORIALS / "figures"
