#!/usr/bin/env python
"""The runs docs/your_data.md shows: examples/your_data.py on scikit-learn's digits and wine table.

    python docs/your_data_runs.py             # run both (about a minute), then write the page's table
    python docs/your_data_runs.py --table     # only write the table, from the committed records

Each run's record (metrics.json: command, settings, per-epoch metrics) and figures are kept in
docs/_static/figures/your_data/<name>/ (its checkpoint is not); the page's table between
``<!-- your_data:start -->`` and ``<!-- your_data:end -->`` is generated from those records.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "_static" / "figures" / "your_data"
PAGE = ROOT / "docs" / "your_data.md"

#: name -> the example's arguments
RUNS = {
    "digits": ["--data", "digits", "--epochs", "60"],
    "wine": ["--data", "wine", "--likelihood", "normal", "--epochs", "150", "--batch-size", "32"],
}


def run(name: str) -> None:
    out = OUT / name
    command = [
        sys.executable,
        str(ROOT / "examples" / "your_data.py"),
        *RUNS[name],
        "--out",
        str(out),
        "--overwrite",
        "--no-progress",
    ]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    (out / "checkpoint.pt").unlink()
    record = json.loads((out / "metrics.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    record["command"] = "python examples/your_data.py " + " ".join(RUNS[name])
    record["commit"] = commit.strip()
    (out / "metrics.json").write_text(json.dumps(record, indent=2))


def table() -> str:
    """The page's table, from the records."""
    rows = [
        "| data | shape | likelihood | epochs | test ELBO | = recon | − KL | bits/dim | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in RUNS:
        r = json.loads((OUT / name / "metrics.json").read_text())
        bits = f"{r['test_bits_per_dim']:.4f}" if "test_bits_per_dim" in r else "— (a density)"
        rows.append(
            f"| {name} | {tuple(r['shape'])} | {r['config']['likelihood']} | {len(r['history'])} | "
            f"{r['test_elbo']:.2f} | {r['test_recon']:.2f} | {r['test_kl']:.2f} | {bits} | "
            f"`{r['command']}` |"
        )
    return "\n".join(rows)


def write_table() -> None:
    page = PAGE.read_text()
    start, end = "<!-- your_data:start -->", "<!-- your_data:end -->"
    before, rest = page.split(start)
    PAGE.write_text(before + start + "\n" + table() + "\n" + end + rest.split(end)[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", action="store_true", help="only write the table from the records")
    if not p.parse_args().table:
        for name in RUNS:
            run(name)
    write_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
