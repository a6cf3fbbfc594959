"""Every ```python block of README.md and docs/*.md runs as written."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # runs whole programs, a browser or a docs build: out of the fast loop

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets():
    for page in PAGES:
        for i, code in enumerate(BLOCK.findall(page.read_text())):
            yield pytest.param(code, id=f"{page.relative_to(ROOT)}#{i + 1}")


def test_there_are_snippets_to_check():
    assert len(list(snippets())) >= 1


@pytest.mark.parametrize("code", list(snippets()))
def test_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})
