"""The built site as a reader sees it: every page opened in a real headless Chromium with no
network but the local server of the site. On every page no formula is left as raw TeX, every
formula is laid out as mathematics (a fraction's numerator sits above its denominator) in the
site's own math font, every figure loads, and nothing is fetched from anywhere else. A screenshot
of one chapter page is written under the test's temporary folder for a person to look at.

Skips where no Chromium is installed (Debian: ``apt-get install chromium``; CI installs it). The
build's translation of TeX to MathML (docs/hooks/mathml.py) is also checked on its own, where a
browser would show a wrong result as plausible text: bold that MathML Core ignores, tables.
"""

import functools
import http.server
import importlib.util
import re
import threading
from pathlib import Path

import pytest
from chromium import Chromium, find
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT_PAGE = "03_attention"

# What a reader would see of each page, measured in the page: its formulas (<math> elements) and
# whether the browser lays them out as MathML (display "math" or "block math"), its fractions with
# the numerator below the denominator's top (not laid out), TeX left in the text outside code
# (the navigation and the table of contents included), its images that did not load, and whether
# the site's math font loaded. Read once the page's fonts are ready.
READ_PAGE = r"""document.fonts.ready.then(() => {
  const shown = e => e.getClientRects().length > 0;
  const maths = [...document.querySelectorAll("math")];
  const fractions = [...document.querySelectorAll("mfrac")].filter(shown);
  const text = document.body.cloneNode(true);
  text.querySelectorAll("pre, code, math, script, style").forEach(e => e.remove());
  const tex = new RegExp([String.raw`\\[()[\]]`, String.raw`\$\$`, String.raw`\$[^$\s][^$]*\\[a-zA-Z]+`,
    String.raw`\\(frac|mathbf|mathrm|sqrt|sum|partial|left|begin|times)\b`].join("|"), "g");
  return {
    formulas: maths.length,
    not_math: maths.filter(m => !getComputedStyle(m).display.includes("math")).length,
    fractions: fractions.length,
    fractions_not_stacked: fractions.filter(f =>
      f.children[0].getBoundingClientRect().bottom > f.children[1].getBoundingClientRect().top + 1).length,
    raw_tex: (text.textContent.match(tex) || []).slice(0, 5),
    images: document.images.length,
    broken_images: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    math_font: [...document.fonts].some(f => f.family.includes("STIX Two Math") && f.status === "loaded"),
  };
})"""


@pytest.fixture(scope="module")
def hook():
    """docs/hooks/mathml.py, the mkdocs hook that renders the site's TeX."""
    pytest.importorskip("latex2mathml")
    spec = importlib.util.spec_from_file_location("mathml_hook", ROOT / "docs" / "hooks" / "mathml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bold_becomes_the_unicode_bold_letters_that_mathml_core_shows(hook):
    tex = r"\mathbf{1} + \mathbf{\gamma} + \boldsymbol{\mu} + \boldsymbol{\epsilon} + \mathbf{x}"
    mathml = hook.to_mathml(tex, "inline")
    assert "mathvariant" not in mathml  # MathML Core reads only mathvariant="normal"
    for bold in ("\U0001d7cf", "\U0001d6c4", "\U0001d741", "\U0001d750", "&#x1D431;"):  # 1 gamma mu epsilon x
        assert bold in mathml, bold


def test_aligned_becomes_a_table_with_css_alignment(hook):
    mathml = hook.to_mathml(r"\begin{aligned} a &= b \\ c &= d \end{aligned}", "block")
    assert mathml.count("<mtr>") == 2 and mathml.count("<mtd") == 4 and "&" not in mathml.replace("&#x", "")
    assert "columnalign" not in mathml and 'style="text-align: right"' in mathml


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    """(Chromium, the site's address): the built site served on 127.0.0.1, and a headless Chromium."""
    executable = find()
    if executable is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    chromium = Chromium(executable, tmp_path_factory.mktemp("chromium-profile"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield chromium, f"http://127.0.0.1:{server.server_port}"
    finally:
        chromium.close()
        server.shutdown()


@pytest.fixture(scope="module")
def pages(site, browser):
    """{page path: what READ_PAGE measured, plus the URLs the page asked for}, for every page."""
    chromium, origin = browser
    seen = {}
    for html in sorted(site.rglob("*.html")):
        path = html.relative_to(site).as_posix().removesuffix("index.html")
        chromium.open(f"{origin}/{path}")
        seen[path or "/"] = dict(chromium.evaluate(READ_PAGE), requested=chromium.requested())
    return seen


@pytest.mark.slow
def test_every_page_shows_its_formulas_rendered_not_as_raw_tex(pages):
    assert len(pages) >= 25  # the chapters, the home page, the results and the API pages
    for path, page in pages.items():
        assert page["raw_tex"] == [], f"{path}: raw TeX on the page: {page['raw_tex']}"
        assert page["not_math"] == 0, f"{path}: {page['not_math']} formulas not laid out as MathML"
        assert page["fractions_not_stacked"] == 0, f"{path}: fractions drawn on one line"
        assert page["math_font"] or not page["formulas"], f"{path}: the math font did not load"
    requested = {url for page in pages.values() for url in page["requested"]}
    assert any(url.endswith("/fonts/STIXTwoMath-Regular.ttf") for url in requested)  # the site's own font
    chapters = {path: page for path, page in pages.items() if re.match(r"\d\d_\w+/$", path)}
    assert len(chapters) == len(list((ROOT / "tutorials").glob("[0-9][0-9]_*.py")))
    assert all(page["formulas"] >= 5 for page in chapters.values())
    assert sum(page["fractions"] for page in pages.values()) >= 20  # the stacking check saw fractions


@pytest.mark.slow
def test_every_figure_loads_and_nothing_comes_from_the_network(pages, browser):
    _, origin = browser
    for path, page in pages.items():
        assert page["broken_images"] == [], f"{path}: figures that did not load: {page['broken_images']}"
        elsewhere = [url for url in page["requested"] if not url.startswith((origin, "data:", "blob:"))]
        assert elsewhere == [], f"{path} asks the network for {elsewhere}"
    assert sum(page["images"] for page in pages.values()) >= 25  # the chapters' figures were there


@pytest.mark.slow
def test_a_chapter_page_screenshot_for_a_person_to_look_at(browser, tmp_path):
    chromium, origin = browser
    chromium.open(f"{origin}/{SCREENSHOT_PAGE}/")
    path = chromium.screenshot(tmp_path / f"{SCREENSHOT_PAGE}.png")
    with Image.open(path) as shot:
        width, height = shot.size
        colours = shot.convert("L").getextrema()
    assert width >= 1000 and height >= 2000 and colours[1] - colours[0] > 100  # a whole page, drawn
    print(f"screenshot of the {SCREENSHOT_PAGE} page: {path}")
