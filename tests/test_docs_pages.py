"""The built docs as a reader sees them: every HTML page opened in headless Chromium, offline.

One Sphinx build per session (to a temporary folder), then for every page: no raw TeX left in
the rendered text (KaTeX prerendered it all), every image loaded, every internal link and
#anchor resolves, and nothing was fetched from the network (the pages are opened with every
host name unresolvable, and every resource they loaded must be a local file).
"""

import html.parser
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from conftest import headless_chromium

pytestmark = pytest.mark.integration  # runs whole programs, a browser or a docs build: out of the fast loop

DOCS = Path(__file__).resolve().parents[1] / "docs"
SHOTS = Path(tempfile.gettempdir()) / "docs_shots"  # screenshots of the lesson pages, for a person
#: TeX a reader must never see: delimiters and the commands the pages use most.
RAW_TEX = re.compile(
    r"\\\(|\\\)|\\\[|\\\]|\$\$|\\(frac|mathbb|mathcal|mathrm|operatorname|begin|end|left|right"
    r"|sum|int|log|sigma|mu|theta|phi|lambda|mid|qquad|tfrac|big|Big)\b"
)
VISIBLE_TEXT = """
const body = document.body.cloneNode(true);
body.querySelectorAll('pre, code, script, style, .katex-mathml').forEach(e => e.remove());
return body.innerText;"""


@pytest.fixture(scope="session")
def built_docs(tmp_path_factory):
    """The HTML docs, built once per session. (Warnings as errors are
    tests/test_docs_build.py's check; this one is about what the pages show.)"""
    out = tmp_path_factory.mktemp("docs_html")
    log = out.parent / "docs_build.log"
    with open(log, "w") as stream:  # a file, not a pipe: no child process can hold the test up
        result = subprocess.run(
            [sys.executable, "-m", "sphinx", "-q", "-b", "html", str(DOCS), str(out)],
            stdout=stream,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    assert result.returncode == 0, log.read_text()[-5000:]
    return out


@pytest.fixture(scope="module")
def browser():
    # No host resolves: the pages must not need one.
    with headless_chromium("1200,900", "--host-resolver-rules=MAP * ~NOTFOUND") as driver:
        driver.set_page_load_timeout(30)
        yield driver


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)


_anchor_cache = {}


def anchors(path: Path) -> set:
    if path not in _anchor_cache:
        parser = _Anchors()
        parser.feed(path.read_text(encoding="utf-8"))
        _anchor_cache[path] = parser.ids
    return _anchor_cache[path]


def pages(root: Path):
    return sorted(p for p in root.rglob("*.html") if "_static" not in p.parts)


def check_page(browser, root: Path, page: Path) -> list:
    """Everything wrong with one page, as readable lines."""
    problems = []
    name = page.relative_to(root)
    browser.get(page.as_uri())
    browser.execute_script("return document.readyState")
    text = browser.execute_script(VISIBLE_TEXT)
    for match in RAW_TEX.finditer(text):
        start = max(match.start() - 40, 0)
        problems.append(f"{name}: raw TeX {match.group(0)!r} in {text[start : match.end() + 40]!r}")
        break
    if browser.execute_script("return document.querySelectorAll('.katex-error').length"):
        problems.append(f"{name}: KaTeX could not render an equation (.katex-error)")
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    for src, complete, width in images:
        if not complete or not width:
            problems.append(f"{name}: image {src} did not load")
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".concat(Array.from(document.querySelectorAll('script[src], link[rel=stylesheet]'))"
        ".map(e => e.src || e.href))"
    )
    for url in resources:
        if not url.startswith(("file:", "data:")):
            problems.append(f"{name}: loads {url} from the network")
    for href in browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
        parsed = urlparse(href)
        if parsed.scheme != "file":
            continue  # http(s) and mailto links leave the docs; they are not checked offline
        target = Path(unquote(parsed.path))
        if not target.exists():
            problems.append(f"{name}: link to missing {target.relative_to(root) if root in target.parents else target}")
        elif parsed.fragment and target.suffix == ".html" and unquote(parsed.fragment) not in anchors(target):
            problems.append(f"{name}: link to missing anchor {target.name}#{parsed.fragment}")
    return problems


def test_every_page_renders_offline_with_working_images_and_links(built_docs, browser):
    all_pages = pages(built_docs)
    names = {str(p.relative_to(built_docs)) for p in all_pages}
    assert {"index.html", "start_here.html", "equations.html", "notation.html", "references.html"} <= names
    problems = []
    for page in all_pages:
        problems += check_page(browser, built_docs, page)
    assert not problems, "\n".join(problems[:40])
    SHOTS.mkdir(exist_ok=True)
    for page in ("index", "start_here", "equations", "notation"):
        browser.get((built_docs / f"{page}.html").as_uri())
        browser.save_screenshot(str(SHOTS / f"{page}.png"))


def test_equations_are_prerendered_and_the_checks_catch_raw_tex(built_docs, browser):
    # KaTeX's HTML is in the page source itself: no script renders it in the browser.
    source = (built_docs / "equations.html").read_text(encoding="utf-8")
    assert source.count('class="katex"') > 100
    scripts = re.findall(r"<script[^>]*>", source)
    assert scripts and not [tag for tag in scripts if re.search("katex|mathjax", tag, re.I)], scripts
    # The same checks on a page written with raw TeX, a missing image and broken links fail.
    bad = built_docs / "_bad_page_for_the_test.html"
    bad.write_text(
        '<html><body><p>\\(p(z \\mid x) = \\frac{a}{b}\\)</p><img src="nothing.png">'
        '<a href="missing.html">x</a><a href="index.html#no-such-anchor">y</a></body></html>'
    )
    try:
        problems = check_page(browser, built_docs, bad)
    finally:
        bad.unlink()
    kinds = " ".join(problems)
    assert "raw TeX" in kinds and "did not load" in kinds and "missing missing.html" in kinds
    assert "missing anchor index.html#no-such-anchor" in kinds, problems
