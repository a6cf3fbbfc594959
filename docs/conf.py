"""Sphinx configuration: MyST markdown pages, math prerendered by KaTeX, autodoc of pyro_vae's docstrings.

Math: ``sphinxcontrib.katex`` with ``katex_prerender = True`` runs node's KaTeX over every
equation while Sphinx builds, so the pages hold finished HTML and load no script for it. The
KaTeX package (version pinned in ``docs/package.json`` and ``docs/package-lock.json``) is
installed into ``docs/node_modules`` by ``npm ci`` the first time the docs are built, and its
stylesheet and fonts are copied into ``_static/katex/`` of the output: the built HTML needs no
network. Building needs ``node`` and ``npm`` (``apt-get install -y nodejs npm``) and, once, the
npm registry.
"""

import shutil
import subprocess
from pathlib import Path

import pyro_vae

DOCS = Path(__file__).resolve().parent
KATEX = DOCS / "node_modules" / "katex" / "dist"


def _install_katex() -> Path:
    """``docs/node_modules/katex/dist``, running ``npm ci`` in ``docs/`` first if it is missing."""
    if not (KATEX / "katex.min.js").is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("building the docs needs npm to install KaTeX: apt-get install -y nodejs npm")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=DOCS, check=True)
    return KATEX


def _copy_katex_assets(app, exception) -> None:
    """The stylesheet and the fonts it names, beside the pages (``_static/katex/``)."""
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "katex"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(KATEX / "katex.min.css", target / "katex.min.css")
    shutil.copytree(KATEX / "fonts", target / "fonts", dirs_exist_ok=True)


def _stop_katex(app, exception) -> None:
    """Stop the node process that rendered the equations, now rather than at interpreter exit
    (an orphaned renderer would keep the build's output pipes open)."""
    import atexit

    from sphinxcontrib.katex import KaTeXServer

    server, KaTeXServer.katex_server = KaTeXServer.katex_server, None
    if server is not None:
        atexit.unregister(KaTeXServer.terminate)
        server.terminate()


def _start_katex_server(cls, rundir, timeout):
    """sphinxcontrib.katex's start of its node renderer, with a connection that waits for the
    server to listen: the package connects once the socket file exists, which on a loaded
    machine can be before node listens on it (ConnectionRefusedError, and an orphaned node)."""
    import socket
    import time
    from subprocess import PIPE, Popen

    path = rundir / "katex.sock"
    process = Popen(cls.build_command(socket=path), stdin=PIPE, stdout=PIPE, cwd=rundir)
    deadline = time.monotonic() + max(timeout, 60.0)
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return process, sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise cls.timeout_error(timeout) from None
            time.sleep(0.01)


def setup(app):
    from sphinxcontrib.katex import KaTeXServer

    KaTeXServer.start_server_process = classmethod(_start_katex_server)
    app.connect("build-finished", _copy_katex_assets)
    app.connect("build-finished", _stop_katex)


project = "pyro_vae"
author = "the pyro_vae developers"
release = pyro_vae.__version__
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinxcontrib.katex",
]
katex_prerender = True
katex_js_path = str(_install_katex() / "katex.min.js")  # node renders with this copy
katex_css_path = "katex/katex.min.css"  # relative to _static: the copy made after the build
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "node_modules", "README.md"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
html_theme = "furo"
html_title = f"pyro_vae {release}"
html_static_path = ["_static"]
nitpicky = True
# Every cross-reference must resolve, except to other projects' objects: their inventories
# (intersphinx) would have to be fetched from the internet at build time.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|pyro|os|pathlib|numpy|matplotlib|lightning)(\..*)?"),
    (r"py:.*", r"argparse(\..*)?"),
    (r"py:class", r"(nn\.)?Module|ELBO|Dataset|DataLoader"),  # torch's and Pyro's classes, as autodoc abbreviates them
    (r"py:class", r"string"),  # a type named in a docstring that autodoc inherits from torch
]
