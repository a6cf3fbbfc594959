#!/usr/bin/env python
"""Run ``examples/cvae.py`` on full MNIST as a user would and keep its ``metrics.json`` as the record
behind the conditional VAE's table.

The run: 1, 2 and 3 input quadrants, the baseline and the CVAE for each, Pyro's setting (grey
levels as Bernoulli targets, Adam at 3e-4, at most 30 epochs), each network keeping its best
epoch on the last 5,000 training digits and stopping after 3 epochs without a better one; the
test -log p(y|x) on all 10,000 test digits (the CVAE's importance-sampled, K = 100). The record
is the run's own ``metrics.json`` (settings, per-epoch history of every network, timings) with
the command and the commit added, written to ``bench/results/cvae.json``; the tables between the
``<!-- cvae-runs:start -->`` and ``<!-- cvae-runs:end -->`` markers of docs/results.md and
docs/cvae.md are made from it.

    python bench/cvae_runs.py --data-dir ../shared/data     # the run, about 15 minutes on 2 cores
    python bench/cvae_runs.py --tables-only                 # rewrite the tables from the record
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from report import commit, copy_file, load, save, write_blocks  # noqa: E402

RECORD = os.path.join(HERE, "results", "cvae.json")
FIGURE = os.path.join(ROOT, "docs", "_static", "figures", "cvae_completions.png")
PAGES = [os.path.join(ROOT, "docs", "results.md"), os.path.join(ROOT, "docs", "cvae.md")]
ARGS = ["--quadrants", "1", "2", "3", "--epochs", "30", "--lr", "0.0003", "--validation", "5000"]
ARGS += ["--patience", "3", "--binarize", "none"]


def run(data_dir: str, out: str, resume: bool) -> dict:
    """Run the example into ``out`` (continuing its checkpoints with ``resume``) and return its record."""
    code = commit()  # now: the tree may change while the run goes on, the modules it loaded do not
    command = ["examples/cvae.py", *ARGS, "--data-dir", data_dir, "--out", out, "--no-progress"]
    command.append("--resume" if resume else "--overwrite")
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True)
    with open(os.path.join(out, "metrics.json")) as f:
        record = json.load(f)
    record["command"] = " ".join(["python", "examples/cvae.py", *ARGS, "--data-dir", "DIR"])
    record["commit"] = code
    return record


def block(record: dict) -> str:
    """The table of the record: test -log p(y|x) per input-quadrant count, beside Pyro's tutorial."""
    anchors = record["anchors"]
    lines = [
        f"Record: `bench/results/cvae.json`, commit {record['commit']}; `{record['command']}`.",
        "",
        "| input quadrants | baseline | Pyro's baseline | CVAE | Pyro's CVAE "
        "| epochs (best): baseline, CVAE | training minutes: baseline, CVAE |",
        "|---|---|---|---|---|---|---|",
    ]
    above = []
    for k, row in sorted(record["table"].items(), key=lambda kv: int(kv[0])):
        b, c = row["baseline"], row["cvae"]
        lines.append(
            f"| {k} | {b['test_nll']:.1f} | {anchors['baseline'][k]:.1f} | {c['test_nll']:.1f} | "
            f"{anchors['cvae'][k]:.1f} | {b['epochs']} ({b['best_epoch']}), {c['epochs']} ({c['best_epoch']}) "
            f"| {b['wall_seconds'] / 60:.1f}, {c['wall_seconds'] / 60:.1f} |"
        )
        above += [
            f"the {name} with {k} quadrant{'s' if k != '1' else ''} ({r['test_nll']:.1f} against "
            f"{anchors[name][k]:.1f})"
            for name, r in (("baseline", b), ("cvae", c))
            if round(r["test_nll"], 1) >= anchors[name][k]
        ]
    lines += [
        "",
        "Below Pyro's number in every cell."
        if not above
        else "Below Pyro's number in every cell but " + ", ".join(above) + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="full MNIST in torchvision's layout (DIR/MNIST/raw/)")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_cvae"), help="the run's folder")
    p.add_argument("--resume", action="store_true", help="continue the run's checkpoints in --out")
    p.add_argument("--tables-only", action="store_true", help="rewrite the tables from the committed record")
    args = p.parse_args(argv)
    if not args.tables_only:
        if args.data_dir is None:
            p.error("--data-dir is needed: the record is of full MNIST")
        save(RECORD, run(args.data_dir, args.out, args.resume))
        copy_file(os.path.join(args.out, "completions.png"), FIGURE)
        print(f"wrote {os.path.relpath(RECORD, ROOT)} and {os.path.relpath(FIGURE, ROOT)}")
    record = load("cvae")
    if record is None:
        print("no bench/results/cvae.json: run this without --tables-only first", file=sys.stderr)
        return 1
    return 0 if write_blocks(PAGES, "cvae-runs", block(record)) else 1


if __name__ == "__main__":
    sys.exit(main())
