"""The documentation builds with Sphinx, warnings as errors."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # runs whole programs, a browser or a docs build: out of the fast loop

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_sphinx_builds_the_docs_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for page in [
        "index.html",
        "start_here.html",
        "equations.html",
        "tutorial.html",
        "notation.html",
        "references.html",
        "api.html",
    ]:
        assert (tmp_path / page).is_file(), page
    # KaTeX rendered the math at build time; its stylesheet and fonts sit beside the pages.
    assert (tmp_path / "_static" / "katex" / "katex.min.css").is_file()
    assert list((tmp_path / "_static" / "katex" / "fonts").glob("KaTeX_Main-Regular.*"))
    assert 'class="katex"' in (tmp_path / "start_here.html").read_text()
    api = (tmp_path / "api.html").read_text()
    for name in [
        "pyro_vae.models.vae.VAE",
        "pyro_vae.inference.elbo.elbo_terms",
        "pyro_vae.inference.information.entropy",
        "pyro_vae.models.linear_gaussian.LinearGaussianModel",
    ]:
        assert f'id="{name}"' in api, name
