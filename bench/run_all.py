#!/usr/bin/env python
"""Run every speed benchmark, one after the other (never two at once: on a 2-core machine
they would slow each other down), then rewrite the tables of docs/benchmarks.md and
docs/results.md with bench/report.py.

    python bench/run_all.py --data-dir ../shared/data     # about 12 minutes here
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="full MNIST (default: $PYRO_VAE_DATA, cache, embedded)")
    p.add_argument("--loglik-test-size", type=int, default=10_000, help="test images for bench/loglik.py")
    args = p.parse_args()
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    runs = [
        ["step.py", *data],
        ["epoch.py", *data],
        [
            "epoch.py",
            "--objective",
            "jit_elbo",
            "--json",
            os.path.relpath(os.path.join(HERE, "results", "epoch_jit.json")),
            *data,
        ],
        ["loglik.py", "--test-size", str(args.loglik_test_size), *data],
        ["levers.py", *data],
        ["lightning_compare.py", *data],
        ["report.py"],
    ]
    for run in runs:
        print(f"$ python bench/{' '.join(run)}", flush=True)
        code = subprocess.call([sys.executable, os.path.join(HERE, run[0]), *run[1:]])
        if code:
            print(f"bench/{run[0]} failed with exit code {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
