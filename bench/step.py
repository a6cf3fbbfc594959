#!/usr/bin/env python
"""Milliseconds per training step: pyro_vae's training path against plain PyTorch.

Three programs take Adam steps on the same minibatch of binarized MNIST, with the same
threads, in interleaved repeats (the order rotates every repeat, so drifts in machine
load hit all of them alike):

* ``reference``: the hand-written PyTorch VAE of ``bench/reference.py`` (default Adam);
* ``reference+fused``: the same with ``torch.optim.Adam(fused=True)``, the optimizer
  pyro_vae's Trainer uses, so that the ratio to it isolates what Pyro itself costs;
* ``pyro_vae``: :meth:`pyro_vae.Trainer.step` on :class:`pyro_vae.VAE` with its defaults:
  the Pyro model and guide, ``Trace_ELBO``, the N/B plate, the non-finite checks.

Each timing is the mean over ``--steps`` steps; the table gives the median over
``--repeats`` timings and their spread (min-max). Achieved GFLOP/s counts the matrix
products one step performs (``bench/reference.py: gemm_shapes``) and is compared with
the rate of those same products timed alone in this run: the ceiling for this network
on this machine. The usual count, 6 x batch x weights, which includes an input gradient
that is never computed, is reported beside it ("6BW").

Before timing, the C allocator is told to keep freed memory (``bench/allocator.py``):
otherwise the reference's default Adam pays 400-1,100 page faults per step or none,
depending on what the process allocated earlier. Minor page faults per step are reported
for every program; ``--allocator glibc-default`` measures without that setting.

    python bench/step.py                        # batch sizes 32, 128, 512
    python bench/step.py --batch-sizes 128 --repeats 21
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import pyro
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import allocator
from allocator import minor_faults
from reference import ReferenceTrainer, gemm_shapes, model_flops, step_flops
from report import save

from pyro_vae import VAE, Trainer, load_mnist
from pyro_vae.data.images import binarize

NUM_DATA = 60_000  # the minibatch stands for full MNIST: losses are scaled by N / B


def time_per_call(fn: Callable[[], object], calls: int) -> float:
    """Mean milliseconds per call of ``fn`` over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def matmul_rate(batch_size: int, calls: int = 20) -> float:
    """GFLOP/s of the step's own matrix products, run back to back without anything else."""
    operands = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in gemm_shapes(batch_size)]

    def products() -> None:
        for a, b in operands:
            torch.mm(a, b)

    time_per_call(products, 3)
    ms = min(time_per_call(products, calls) for _ in range(5))
    return step_flops(batch_size) / (ms * 1e-3) / 1e9


def square_matmul_rate(size: int = 1024, calls: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    time_per_call(lambda: a @ b, 3)
    ms = min(time_per_call(lambda: a @ b, calls) for _ in range(3))
    return 2 * size**3 / (ms * 1e-3) / 1e9


def programs(batch: torch.Tensor) -> Dict[str, Callable[[], object]]:
    reference = ReferenceTrainer()
    fused = ReferenceTrainer(fused=True)
    pyro.clear_param_store()
    trainer = Trainer(VAE())
    return {
        "reference": lambda: reference.step(batch, NUM_DATA),
        "reference+fused": lambda: fused.step(batch, NUM_DATA),
        "pyro_vae": lambda: trainer.step(batch, NUM_DATA),
    }


def bench_batch(images: torch.Tensor, batch_size: int, steps: int, repeats: int) -> dict:
    batch = binarize(images[:batch_size], "dynamic", torch.Generator().manual_seed(0))
    progs = programs(batch)
    names = list(progs)
    for fn in progs.values():  # warm-up: allocator, Adam state, first-call caches
        time_per_call(fn, 10)
    times: Dict[str, List[float]] = {name: [] for name in names}
    faults: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            before = minor_faults()
            times[name].append(time_per_call(progs[name], steps))
            faults[name].append((minor_faults() - before) / steps)
    rate = matmul_rate(batch_size)
    median = {name: statistics.median(t) for name, t in times.items()}
    achieved = step_flops(batch_size) / (median["pyro_vae"] * 1e-3) / 1e9
    return {
        "batch_size": batch_size,
        "ms": {name: {"median": median[name], "min": min(t), "max": max(t)} for name, t in times.items()},
        "page_faults_per_step": {name: statistics.median(f) for name, f in faults.items()},
        "ratio": median["pyro_vae"] / median["reference"],
        "ratio_fused": median["pyro_vae"] / median["reference+fused"],
        "step_gflop": step_flops(batch_size) / 1e9,
        "gflops": achieved,
        "matmul_gflops": rate,
        "fraction_of_matmul": achieved / rate,
        "model_fraction_of_matmul": model_flops(batch_size) / (median["pyro_vae"] * 1e-3) / 1e9 / rate,
        "reference_fraction_of_matmul": step_flops(batch_size) / (median["reference"] * 1e-3) / 1e9 / rate,
    }


def markdown(result: dict) -> str:
    lines = [
        "| batch | reference ms | reference+fused ms | pyro_vae ms | pyro_vae / reference | "
        "pyro_vae / reference+fused | GFLOP/step | pyro_vae GFLOP/s | % of matmul rate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        ms = row["ms"]
        cell = {k: f"{v['median']:.2f} ({v['min']:.2f}–{v['max']:.2f})" for k, v in ms.items()}
        lines.append(
            f"| {row['batch_size']} | {cell['reference']} | {cell['reference+fused']} | {cell['pyro_vae']} | "
            f"**{row['ratio']:.2f}×** | {row['ratio_fused']:.2f}× | {row['step_gflop']:.3f} | "
            f"{row['gflops']:.0f} | **{100 * row['fraction_of_matmul']:.0f} %** (of {row['matmul_gflops']:.0f}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--steps", type=int, default=40, help="steps per timing")
    p.add_argument("--repeats", type=int, default=11, help="interleaved timings per program")
    p.add_argument("--data-dir", default=None, help="MNIST directory (default: $PYRO_VAE_DATA, cache, embedded)")
    allocator.add_option(p)
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "step.json"))
    args = p.parse_args()

    setting = allocator.apply(args.allocator)
    torch.manual_seed(0)
    images = load_mnist(args.data_dir, verbose=False).train_images
    rows = []
    for batch_size in args.batch_sizes:
        rows.append(bench_batch(images, batch_size, args.steps, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "command": " ".join(["python bench/step.py", *sys.argv[1:]]),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "machine": platform.processor() or platform.machine(),
        "allocator": setting,
        "square_matmul_gflops": square_matmul_rate(),
        "rows": rows,
    }
    save(args.json, result)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
