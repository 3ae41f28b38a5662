"""Equations rendered when the site is built, so that a page needs no script and no network.

pymdownx.arithmatex (generic mode) leaves each formula as TeX, ``\\( ... \\)`` in a
``<span class="arithmatex">`` or ``\\[ ... \\]`` in a ``<div class="arithmatex">``. This mkdocs hook
turns each into MathML with the pinned ``latex2mathml`` (docs/requirements.txt); browsers lay
MathML out themselves (MathML Core: Chromium, Firefox, Safari). Three things latex2mathml writes
that MathML Core does not read are translated here:

* ``aligned`` (a table inside a formula) is not known to it; its table of right- and left-aligned
  columns is the same as ``align*``'s, which it knows.
* a cell's ``columnalign="right"`` becomes the CSS ``text-align: right`` that MathML Core reads.
* ``mathvariant="bold"`` and ``"bold-italic"`` (from ``\\mathbf{1}``, ``\\mathbf{\\gamma}``,
  ``\\boldsymbol``) become Unicode's mathematical bold (italic) letters and digits, as
  latex2mathml already writes ``\\mathbf{x}``.

The math font the browser lays them out in, STIX Two Math, is copied into the site from the pinned
``ziamath`` package (its only use here; docs/stylesheets/math.css loads it).

Headings with a formula give their text to the page's table of contents too; those titles get
the same MathML. A formula latex2mathml cannot read stops the build, naming the page and the TeX.
"""

import html
import importlib.util
import re
import shutil
import unicodedata
from pathlib import Path

from latex2mathml.converter import convert

FORMULA = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)
INLINE = re.compile(r"\\\((.*?)\\\)")  # \( ... \) in a heading's text
BOLD = re.compile(r'<(mi|mn) mathvariant="(bold|bold-italic)">(.*?)</\1>')  # not read by MathML Core
DELIMITERS = {"span": (r"\(", r"\)", "inline"), "div": (r"\[", r"\]", "block")}


def styled(char, variant):
    """The Unicode mathematical letter or digit of ``char`` in ``variant`` ("bold", "bold-italic"),
    found by its name (GREEK SMALL LETTER MU -> MATHEMATICAL BOLD ITALIC SMALL MU); a digit, which
    has no bold italic, in bold; any other character unchanged."""
    name = unicodedata.name(char, "")
    for word in ("LATIN ", "GREEK ", "LETTER ", "LUNATE "):
        name = name.replace(word, "")
    for style in (variant.upper().replace("-", " "), "BOLD"):
        try:
            return unicodedata.lookup(f"MATHEMATICAL {style} {name}")
        except KeyError:
            pass
    return char


def to_mathml(tex, display):
    """TeX (without delimiters) -> a <math> element that MathML Core lays out."""
    tex = tex.replace(r"\begin{aligned}", r"\begin{align*}").replace(r"\end{aligned}", r"\end{align*}")
    mathml = convert(tex, display=display)
    mathml = re.sub(r'columnalign="(left|right|center)"', r'style="text-align: \1"', mathml)
    return BOLD.sub(lambda m: f"<{m[1]}>{''.join(styled(c, m[2]) for c in html.unescape(m[3]))}</{m[1]}>",
                    mathml)


def on_page_content(content, page, **kwargs):
    """mkdocs calls this with each page's HTML: every arithmatex formula becomes MathML, in the
    page and in its table of contents."""

    def render(match):
        tag, body = match.group(1), html.unescape(match.group(2)).strip()
        opening, closing, display = DELIMITERS[tag]
        if not (body.startswith(opening) and body.endswith(closing)):
            raise ValueError(f"{page.file.src_path}: a formula without {opening} {closing}: {body!r}")
        tex = body[len(opening):-len(closing)]
        try:
            return f'<{tag} class="arithmatex">{to_mathml(tex, display)}</{tag}>'
        except Exception as error:
            raise ValueError(f"{page.file.src_path}: latex2mathml cannot read {tex!r}: {error}") from error

    items = list(page.toc)
    while items:  # the table of contents: every heading, however deep
        item = items.pop()
        item.title = INLINE.sub(lambda m: to_mathml(html.unescape(m.group(1)), "inline"), item.title)
        items.extend(item.children)
    return FORMULA.sub(render, content)


def on_post_build(config, **kwargs):
    """Copy the math font into the built site: ``fonts/STIXTwoMath-Regular.ttf``."""
    package = importlib.util.find_spec("ziamath")
    if package is None:
        raise ValueError("the docs need the ziamath package for their math font: "
                         "pip install -r docs/requirements.txt")
    font = Path(package.submodule_search_locations[0]) / "fonts" / "STIXTwoMath-Regular.ttf"
    (Path(config["site_dir"]) / "fonts").mkdir(exist_ok=True)
    shutil.copyfile(font, Path(config["site_dir"]) / "fonts" / font.name)
