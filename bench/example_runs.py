#!/usr/bin/env python
"""Run ``examples/mnist_svi.py`` as a user would and keep each run's ``metrics.json`` as its record.

The runs behind the test ELBOs of docs/results.md: the example on its defaults on the embedded
sample (100 epochs, as a newcomer gets it: no ``$PYRO_VAE_DATA``, an empty ``HOME``, no
download) and on full MNIST (30 epochs), both with the k = 5000 log-likelihood; then each
other built-in guide for 10 epochs of full MNIST (the diagonal guide's row is epoch 10 of the
30-epoch run, the same seed and settings). Each record is the run's own ``metrics.json`` (the
configuration, per-epoch metrics, timings) with the command and the commit added, written to
``bench/results/example/<name>.json``; the tables between the ``<!-- example-runs:start -->``
and ``<!-- example-runs:end -->`` markers of docs/results.md are made from them.

    python bench/example_runs.py --data-dir ../shared/data          # all runs, about 10 minutes
    python bench/example_runs.py --data-dir ../shared/data --only conv
    python bench/example_runs.py --tables-only                      # rewrite the tables
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from report import commit, save, write_block  # noqa: E402

RESULTS = os.path.join(HERE, "results", "example")
PAGE = os.path.join(ROOT, "docs", "results.md")
#: name -> (the example's arguments, whether it reads full MNIST)
RUNS = {
    "embedded": (["--epochs", "100", "--eval-samples", "5000", "--no-download"], False),
    "full": (["--epochs", "30", "--eval-samples", "5000"], True),
    "guide_conv": (["--epochs", "10", "--guide", "conv"], True),
    "guide_iaf": (["--epochs", "10", "--guide", "iaf"], True),
    "guide_full_covariance": (["--epochs", "10", "--guide", "full_covariance"], True),
}
ELBO_EPOCHS = (1, 10, 30, 100)


def run(name: str, data_dir: str | None) -> dict:
    """Run the example once in a fresh folder and return its record."""
    args, full = RUNS[name]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        if full:
            args = args + ["--data-dir", data_dir]
        else:  # as a newcomer: nothing found, nothing cached, so the embedded sample
            env.pop("PYRO_VAE_DATA", None)
            env.pop("XDG_CACHE_HOME", None)
            env["HOME"] = os.path.join(tmp, "home")
            os.makedirs(env["HOME"])
        out = os.path.join(tmp, "run")
        command = ["examples/mnist_svi.py", *args, "--no-progress", "--out", out]
        subprocess.run([sys.executable, *command], cwd=ROOT, env=env, check=True)
        with open(os.path.join(out, "metrics.json")) as f:
            record = json.load(f)
    shown = [a if a != data_dir else "DIR" for a in args]
    record["command"] = " ".join(["python", "examples/mnist_svi.py", *shown])
    record["commit"] = commit()
    return record


def records() -> dict:
    """The committed records by name."""
    out = {}
    for path in sorted(glob.glob(os.path.join(RESULTS, "*.json"))):
        with open(path) as f:
            out[os.path.basename(path)[:-5]] = json.load(f)
    return out


def _at(record: dict, epoch: int) -> dict | None:
    return next((row for row in record["history"] if row["epoch"] == epoch), None)


def _elbo_table(recs: dict) -> list:
    lines = [
        "| data | command | "
        + " | ".join(f"test ELBO, epoch {e}" for e in ELBO_EPOCHS)
        + " | last epoch: reconstruction | KL | NLL, k = 5000 ± s.e. | s / epoch |",
        "|---|---|" + "---|" * len(ELBO_EPOCHS) + "---|---|---|---|",
    ]
    for name, label in (
        ("full", "full MNIST (60,000 / 10,000)"),
        ("embedded", "embedded sample (4,000 / 1,000), the default"),
    ):
        if name not in recs:
            continue
        r = recs[name]
        cells = [f"{row['test_elbo']:.2f}" if (row := _at(r, e)) else "–" for e in ELBO_EPOCHS]
        nll = f"{-r['test_log_likelihood']:.2f} ± {r['test_log_likelihood_stderr']:.3f}"
        lines.append(
            f"| {label} | `{r['command']}` | "
            + " | ".join(cells)
            + f" | {r['test_recon']:.2f} | {r['test_kl']:.2f} | {nll} | {r['seconds_per_epoch']:.2f} |"
        )
    return lines


def _guide_table(recs: dict) -> list:
    lines = [
        "Each built-in guide after 10 epochs of full MNIST, the same network, objective (`Trace_ELBO`) and seed:",
        "",
        "| guide | command | test ELBO | reconstruction | KL | s / epoch |",
        "|---|---|---|---|---|---|",
    ]
    rows = []
    if "full" in recs and (row := _at(recs["full"], 10)):
        rows.append(("`diagonal`", f"epoch 10 of `{recs['full']['command']}`", row, recs["full"]["seconds_per_epoch"]))
    for name in ("guide_conv", "guide_iaf", "guide_full_covariance"):
        if name in recs:
            r = recs[name]
            rows.append((f"`{r['config']['guide']}`", f"`{r['command']}`", r["history"][-1], r["seconds_per_epoch"]))
    for guide, command, row, seconds in rows:
        lines.append(
            f"| {guide} | {command} | {row['test_elbo']:.2f} | {row['test_recon']:.2f} | {row['test_kl']:.2f} "
            f"| {seconds:.2f} |"
        )
    return lines


def block(recs: dict | None = None) -> str:
    """The tables of docs/results.md's example section, from the records."""
    recs = records() if recs is None else recs
    commits = sorted({r["commit"] for r in recs.values()})
    lines = [f"Records: `bench/results/example/`; commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}.", ""]
    lines += _elbo_table(recs) + [""] + _guide_table(recs)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="full MNIST in torchvision's layout (DIR/MNIST/raw/)")
    p.add_argument("--only", nargs="+", choices=sorted(RUNS), default=None, help="run these only")
    p.add_argument("--tables-only", action="store_true", help="rewrite the tables from the committed records")
    args = p.parse_args(argv)
    if not args.tables_only:
        names = args.only or list(RUNS)
        if args.data_dir is None and any(RUNS[n][1] for n in names):
            p.error("--data-dir is needed for the full-MNIST runs (or --only embedded)")
        for name in names:
            save(os.path.join(RESULTS, f"{name}.json"), run(name, args.data_dir))
            print(f"wrote bench/results/example/{name}.json")
    if not records():
        print("no bench/results/example/*.json: run this without --tables-only first", file=sys.stderr)
        return 1
    if not write_block(PAGE, "example-runs", block()):
        return 1
    print(f"wrote the tables into {os.path.relpath(PAGE, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
