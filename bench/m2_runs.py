#!/usr/bin/env python
"""Run ``examples/ss_vae.py`` (M2) on full MNIST as a user would and keep each label count's
``metrics.json`` as the record behind M2's table.

The recipe of each row: the MLP classifier (the anchors' network), z of size 50, one hidden
layer of 500, alpha = 6000 per labelled image, batch 100; Adam at 1e-3 for 17 epochs, then the
run resumed to epoch 28 at 3e-4; the test accuracy of q(y|x) on the 10,000 test digits at the
last epoch (no epoch picked). Each label count runs in its own folder and is recorded as
``bench/results/m2/mlp_<labels>.json``: the run's own ``metrics.json`` (settings, per-epoch
history, timings) with both commands and the commit added. The table between the
``<!-- m2-runs:start -->`` and ``<!-- m2-runs:end -->`` markers of docs/results.md and
docs/ssvae.md is made from the records, and docs' accuracy figure from their histories.

    python bench/m2_runs.py --data-dir ../shared/data                        # 100 600 1000 3000 in turn
    python bench/m2_runs.py --data-dir ../shared/data --labels 100 --threads 1   # one row, one thread
    python bench/m2_runs.py --tables-only                                    # rewrite the table and figures

About 37 s of steps an epoch with one thread on this machine (two rows side by side), so about
20 minutes a row.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from report import commit, copy_file, save, write_blocks  # noqa: E402

RESULTS = os.path.join(HERE, "results", "m2")
PAGES = [os.path.join(ROOT, "docs", "results.md"), os.path.join(ROOT, "docs", "ssvae.md")]
FIGURES = os.path.join(ROOT, "docs", "_static", "figures")
LABELS = (100, 600, 1000, 3000)
#: test accuracy of M2: Pyro's tutorial (mean of five draws of the labelled subset) and Kingma et
#: al. (2014), Table 1 (mean and standard deviation over runs, given there as error rates)
ANCHORS = {
    "pyro": {100: 0.9319, 600: 0.9437, 1000: 0.9487, 3000: 0.9582},
    "kingma": {100: (0.8803, 0.0171), 600: (0.9506, 0.0013), 1000: (0.9640, 0.0056), 3000: (0.9608, 0.0063)},
}
#: the two stages of the recipe: 17 epochs at the default rate, then resumed to 28 at 3e-4
STAGES = (["--epochs", "17"], ["--epochs", "28", "--lr", "0.0003", "--resume"])


def run(labels: int, data_dir: str, out: str, threads: int | None) -> dict:
    """Both stages of one label count's run into ``out``; its record."""
    code = commit()  # now: the tree may change while the run goes on, the modules it loaded do not
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    commands = []
    for stage in STAGES:
        args = ["--labels", str(labels), *stage]
        fresh = [] if "--resume" in stage else ["--overwrite"]
        command = ["examples/ss_vae.py", *args, "--data-dir", data_dir, "--out", out, "--no-progress", *fresh]
        subprocess.run([sys.executable, *command], cwd=ROOT, env=env, check=True)
        commands.append(" ".join(["python", "examples/ss_vae.py", *args, "--data-dir", "DIR"]))
    with open(os.path.join(out, "metrics.json")) as f:
        record = json.load(f)
    record.update(commands=commands, commit=code, threads=threads or "torch's default")
    return record


def records() -> dict:
    """The committed records by label count."""
    out = {}
    for path in glob.glob(os.path.join(RESULTS, "mlp_*.json")):
        with open(path) as f:
            out[int(os.path.basename(path)[4:-5])] = json.load(f)
    return dict(sorted(out.items()))


def _accuracy_at(record: dict, epoch: int) -> str:
    row = next((r for r in record["history"] if r["epoch"] == epoch), None)
    return "–" if row is None else f"{row['test_accuracy']:.4f}"


def accuracies(recs: dict) -> dict:
    """The reported test accuracy of each record, by label count."""
    return {n: r["runs"][str(n)]["test_accuracy"] for n, r in recs.items()}


def verdicts(recs: dict) -> str:
    """Each row against Kingma et al.'s mean and standard deviation over runs: within one
    deviation is "matched within noise", as one run cannot say more."""
    said: dict = {"matched within noise": [], "above": [], "below": []}
    for n, a in accuracies(recs).items():
        mean, sd = ANCHORS["kingma"][n]
        said["above" if a > mean + sd else "below" if a < mean - sd else "matched within noise"].append(str(n))
    return "; ".join(f"{v} at {' / '.join(ns)} labels" for v, ns in said.items() if ns)


def block(recs: dict) -> str:
    """The table of the records: test accuracy at epochs 17 and 28, beside the anchors."""
    if not recs:
        return "No record yet: `python bench/m2_runs.py --data-dir DIR` makes them.\n"
    commits = sorted({r["commit"] for r in recs.values()})
    first = next(iter(recs.values()))
    lines = [
        f"Records: `bench/results/m2/mlp_<labels>.json`; commit{'s' if len(commits) > 1 else ''} "
        f"{', '.join(commits)}. Each row: `{first['commands'][0]}` then `{first['commands'][1]}`, "
        "with its label count.",
        "",
        "| labels | test accuracy, epoch 17 | **epoch 28 (reported)** | Pyro's tutorial | Kingma et al. M2 "
        "| training minutes |",
        "|---|---|---|---|---|---|",
    ]
    for labels, rec in recs.items():
        run = rec["runs"][str(labels)]
        pyro, (kingma, sd) = ANCHORS["pyro"][labels], ANCHORS["kingma"][labels]
        lines.append(
            f"| {labels} | {_accuracy_at(run, 17)} | **{run['test_accuracy']:.4f}** | {pyro:.4f} "
            f"| {kingma:.4f} ± {sd:.4f} | {sum(r['seconds'] for r in run['history']) / 60:.0f} |"
        )
    above = {n: a - ANCHORS["pyro"][n] for n, a in accuracies(recs).items() if a > ANCHORS["pyro"][n]}
    margins = ", ".join(f"{n} labels by {m:.4f}" for n, m in above.items())
    lines += [
        "",
        f"Against Kingma et al.'s M2 (mean ± standard deviation over runs): {verdicts(recs)}. "
        + (
            f"Above Pyro's tutorial's mean of five draws at {margins}: one run against a mean, "
            "a match rather than a win."
            if above
            else "Not above Pyro's tutorial's mean at any label count."
        ),
    ]
    return "\n".join(lines) + "\n"


def draw_figures(recs: dict, shown: str | None) -> list:
    """docs' M2 figures: the accuracy per epoch of every record, and the style transfer and class
    samples that the run in folder ``shown`` drew of its model (copied, if that run was made)."""
    from pyro_vae.figures.ssvae_plots import plot_accuracy

    written = [
        plot_accuracy({str(n): r["runs"][str(n)] for n, r in recs.items()}, os.path.join(FIGURES, "m2_accuracy.png"))
    ]
    for name in ("style_transfer", "class_samples"):
        source = os.path.join(shown, f"{name}.png") if shown else None
        if source and os.path.exists(source):
            written.append(copy_file(source, os.path.join(FIGURES, f"m2_{name}.png")))
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="full MNIST in torchvision's layout (DIR/MNIST/raw/)")
    p.add_argument("--labels", nargs="+", type=int, choices=LABELS, default=list(LABELS), help="rows to run")
    p.add_argument("--threads", type=int, default=None, help="torch threads of each run (OMP_NUM_THREADS)")
    p.add_argument("--tables-only", action="store_true", help="rewrite the table and figures from the records")
    args = p.parse_args(argv)
    if not args.tables_only:
        if args.data_dir is None:
            p.error("--data-dir is needed: the records are of full MNIST")
        for labels in args.labels:
            out = os.path.join(ROOT, "runs", "bench_m2", str(labels))
            save(os.path.join(RESULTS, f"mlp_{labels}.json"), run(labels, args.data_dir, out, args.threads))
            print(f"wrote bench/results/m2/mlp_{labels}.json", flush=True)
    recs = records()
    if not write_blocks(PAGES, "m2-runs", block(recs)):
        return 1
    if recs:  # the figures: accuracy from the records; style and samples of the largest row, if run here
        for path in draw_figures(recs, os.path.join(ROOT, "runs", "bench_m2", str(max(recs)))):
            print(f"wrote {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
