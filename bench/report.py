#!/usr/bin/env python
"""Render the benchmark results (bench/results/*.json) as the tables of docs/benchmarks.md and
of docs/results.md's "Speed" section (between their ``<!-- bench:start -->`` and
``<!-- bench:end -->`` markers); also the helpers every bench script shares to record a run and
write a generated block. ``bench/results/before/`` holds the same benchmarks run on the code before the speed
work (commit 4844aba), shown beside the current figures.

    python bench/report.py          # after bench/run_all.py (which calls it)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Optional

from pyro_vae.files import atomic_write, write_text

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference import model_flops  # noqa: E402

RESULTS = os.path.join(HERE, "results")
ROOT = os.path.dirname(HERE)
#: the pages that hold the ``bench`` block
PAGES = [os.path.join(ROOT, "docs", "benchmarks.md"), os.path.join(ROOT, "docs", "results.md")]


def save(path: str, result: dict) -> None:
    """Write one benchmark's result as JSON, atomically (creating its folder if need be)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text(path, json.dumps(result, indent=2))


#: what a run executes: a change elsewhere (a record just written, a page) does not make its code dirty
CODE_PATHS = ["pyro_vae", "examples", "bench", ":(exclude)bench/results"]


def commit(where: str = HERE) -> str:
    """The commit of the code that ran (the checkout holding ``where``), with ``-dirty`` if the
    work tree had changes to that code (:data:`CODE_PATHS`)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=where, check=True).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            capture_output=True,
            text=True,
            cwd=top,
            check=True,
        ).stdout.strip()
        return git("describe", "--always", "--abbrev=12") + ("-dirty" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load(name: str, before: bool = False) -> Optional[dict]:
    """The record ``bench/results/<name>.json`` (``name`` may hold a folder: ``"example/full"``), or
    None if it was not made; ``before``: the one under ``bench/results/before/``."""
    path = os.path.join(RESULTS, "before" if before else "", f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def model_fraction(row: dict) -> float:
    """Achieved / matmul rate with the step counted as 6 x batch x weights (bench/reference.py)."""
    if "model_fraction_of_matmul" in row:
        return row["model_fraction_of_matmul"]
    return model_flops(row["batch_size"]) / (row["ms"]["pyro_vae"]["median"] * 1e-3) / 1e9 / row["matmul_gflops"]


def step_table(now: dict, then: Optional[dict]) -> str:
    old = {row["batch_size"]: row for row in (then or {}).get("rows", [])}
    lines = [
        "| batch | reference | reference + fused Adam | pyro_vae before | **pyro_vae now** | "
        "now / reference | now / reference + fused | % of matmul rate (before → now) | same, 6BW count |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in now["rows"]:
        b, ms = row["batch_size"], row["ms"]
        prev = old.get(b)
        before = f"{prev['ms']['pyro_vae']['median']:.2f} ms ({prev['ratio']:.2f}×)" if prev else "–"
        frac = f"{100 * prev['fraction_of_matmul']:.0f} % → " if prev else ""
        lines.append(
            f"| {b} | {ms['reference']['median']:.2f} ms | {ms['reference+fused']['median']:.2f} ms | {before} | "
            f"**{ms['pyro_vae']['median']:.2f} ms** ({ms['pyro_vae']['min']:.2f}–{ms['pyro_vae']['max']:.2f}) | "
            f"**{row['ratio']:.2f}×** | {row['ratio_fused']:.2f}× | {frac}**{100 * row['fraction_of_matmul']:.0f} %** "
            f"(of {row['matmul_gflops']:.0f} GFLOP/s) | {100 * model_fraction(row):.0f} % |"
        )
    return "\n".join(lines)


def page_faults(step: dict) -> str:
    """The allocator setting of a step run and the page faults each program took per step."""
    rows = [r for r in step["rows"] if "page_faults_per_step" in r]
    if not rows:
        return ""
    cells = "; ".join(
        f"batch {r['batch_size']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r["page_faults_per_step"].items())
        for r in rows
    )
    return f"Allocator: {step.get('allocator', 'glibc defaults')} (`bench/allocator.py`). Minor page faults per step: {cells}."


def epoch_table(now: dict, then: Optional[dict], jit: Optional[dict] = None) -> str:
    s, p = now["seconds"], (then or {}).get("seconds")
    lines = [
        "| | reference | pyro_vae before | **pyro_vae now** | now / reference |",
        "|---|---|---|---|---|",
        f"| one epoch, {now['train_images']:,} images, batch {now['batch_size']} | {s['reference']['median']:.2f} s | "
        f"{p['pyro_vae']['median']:.2f} s ({then['epoch_ratio']:.2f}×) | **{s['pyro_vae']['median']:.2f} s** | "
        f"**{now['epoch_ratio']:.2f}×** |"
        if p
        else "",
        f"| test ELBO, {now['test_images']:,} images | {s['reference_eval']['median']:.3f} s | "
        f"{p['pyro_vae_eval']['median']:.3f} s ({then['eval_ratio']:.2f}×) | **{s['pyro_vae_eval']['median']:.3f} s** | "
        f"**{now['eval_ratio']:.2f}×** |"
        if p
        else "",
    ]
    if jit:
        lines.append(
            f'| one epoch with the opt-in `objective="jit_elbo"` (`{jit["command"].strip()}`) | '
            f"{jit['seconds']['reference']['median']:.2f} s | – | {jit['seconds']['pyro_vae']['median']:.2f} s | "
            f"{jit['epoch_ratio']:.2f}× |"
        )
    return "\n".join(line for line in lines if line)


def loglik_table(now: dict, then: Optional[dict]) -> str:
    def row(r: dict, label: str) -> str:
        return (
            f"| {label} | {r['test_images']:,} | {r['samples_per_second'] / 1e3:.0f} k/s | "
            f"{r['seconds']:.0f} s | {r['projected_seconds_10k'] / 60:.1f} min | "
            f"{r['peak_rss_mb'] - r['peak_rss_mb_before']:.0f} MB (peak {r['peak_rss_mb']:.0f} MB) | "
            f"{r.get('reference_samples_per_second', float('nan')) / 1e3:.0f} k/s | {r.get('ratio', float('nan')):.2f}× |"
        )

    lines = [
        "| | test images | importance samples / s | time | 10,000 images | memory growth (process peak) | "
        "reference samples / s | time / reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if then:
        lines.append(row(then, "before"))
    lines.append(row(now, "**now**"))
    return "\n".join(lines)


def levers_table(now: dict) -> str:
    batches = sorted({r["batch_size"] for r in now["rows"]})
    names = list(dict.fromkeys(r["variant"] for r in now["rows"]))
    by = {(r["variant"], r["batch_size"]): r for r in now["rows"]}
    head = "| variant | " + " | ".join(f"batch {b}: ms (vs all levers)" for b in batches) + " |"
    lines = [head, "|---|" + "---|" * len(batches)]
    for name in names:
        cells = [f"{by[name, b]['ms']:.2f} ({by[name, b]['vs_all_levers']:+.2f})" for b in batches]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lightning_table(now: dict) -> str:
    """bench/lightning_compare.py: the Trainer beside Lightning, speed and resume."""
    speed, resume = now["speed"], now["resume_max_abs_difference"]
    lines = [
        f"`{now['command'].strip()}`: {now['train_images']:,} images, batch {now['batch_size']}, "
        f"{now['threads']} threads, torch {now['torch']}, Lightning {now['lightning']}, Pyro {now['pyro']}; "
        f"median of interleaved timings, spread in brackets.",
        "",
        "| | seconds per epoch | ms per step | largest weight difference after resuming at an epoch's end "
        "| ... in the middle of an epoch |",
        "|---|---|---|---|---|",
    ]
    for name, label in (("pyro_vae", "pyro_vae `Trainer`"), ("lightning", "Lightning `SVIModule`")):
        t = speed[name]
        lines.append(
            f"| {label} | {t['median']:.2f} ({t['min']:.2f}–{t['max']:.2f}) | {speed['ms_per_step'][name]:.2f} "
            f"| {resume[name]['epoch_boundary']:.3g} | {resume[name]['mid_epoch']:.3g} |"
        )
    lines += [
        "",
        f"Lightning / pyro_vae per epoch: **{speed['ratio']:.2f}×**; Lightning's start-up per `fit` call "
        f"{speed['lightning_startup']['median']:.2f} s besides. Reading the batches alone, without a step: "
        f"{speed['dataloader_alone']['median']:.2f} s a pass through the `DataLoader`, "
        f"{speed['indexing_alone']['median']:.2f} s indexing the tensors as the `Trainer` does.",
    ]
    return "\n".join(lines) + "\n"


def targets_table() -> str:
    """The performance issue's four targets against the records of the tables above, each judged."""
    step, epoch, jit, loglik = load("step"), load("epoch"), load("epoch_jit"), load("loglik")
    if not (step and epoch and loglik):
        return ""
    rows = {r["batch_size"]: r for r in step["rows"]}
    fast, wide = rows[128], rows[512]
    executed, counted = wide["fraction_of_matmul"], model_fraction(wide)
    rate = "both counts" if executed >= 0.6 else ("by the 6BW count only" if counted >= 0.6 else "no")
    jit_text = f' and {jit["epoch_ratio"]:.2f}× with the opt-in `objective="jit_elbo"`' if jit else ""
    minutes = loglik["projected_seconds_10k"] / 60
    lines = [
        "| target | measured, in the tables above | met? |",
        "|---|---|---|",
        f"| training step ≤ 1.00× the reference, batch 128 | {fast['ratio']:.2f}× "
        f"({fast['ratio_fused']:.2f}× against the reference with fused Adam) | {'yes' if fast['ratio'] <= 1 else 'no'} |",
        f"| ≥ 60 % of the matmul rate, batch 512 | {100 * executed:.0f} % counting the products executed, "
        f"{100 * counted:.0f} % by 6·B·weights | {rate} |",
        f"| one epoch ≤ 1.1× the reference's | {epoch['epoch_ratio']:.2f}× by default{jit_text} | "
        f"{'yes' if epoch['epoch_ratio'] <= 1.1 else 'no'} |",
        f"| k = {loglik['samples_per_image']} NLL of the 10,000 test images ≤ 10 min | {minutes:.1f} min "
        f"(an untrained VAE; trained checkpoints: {{doc}}`models`) | {'yes' if minutes <= 10 else 'no'} |",
    ]
    return "\n".join(lines) + "\n"


def render() -> str:
    step, epoch, loglik, levers = load("step"), load("epoch"), load("loglik"), load("levers")
    parts = []
    if step:
        parts += [
            f"**Training step** (`{step['command'].strip()}`; {step['threads']} threads, torch {step['torch']}, "
            f"Pyro {step['pyro']}; median of interleaved timings, spread in brackets; a 1024² matmul ran at "
            f"{step['square_matmul_gflops']:.0f} GFLOP/s):",
            "",
            step_table(step, load("step", True)),
            "",
            page_faults(step),
            "",
        ]
    if epoch:
        parts += [
            f"**Full epoch and test evaluation** (`{epoch['command'].strip()}`):",
            "",
            epoch_table(epoch, load("epoch", True), load("epoch_jit")),
            "",
        ]
    if loglik:
        parts += [
            f"**k = {loglik['samples_per_image']} importance-sampled log-likelihood** (`{loglik['command'].strip()}`):",
            "",
            loglik_table(loglik, load("loglik", True)),
            "",
        ]
    if levers:
        parts += [
            f"**What each lever buys** (`{levers['command'].strip()}`; each row turns one lever off):",
            "",
            levers_table(levers),
            "",
        ]
    return "\n".join(parts)


def write_block(path: str, name: str, block: str) -> bool:
    """Replace what stands between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in ``path``
    with ``block``; False (and a message) if the page has no such block."""
    with open(path) as f:
        text = f.read()
    new, count = re.subn(
        rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)",
        lambda m: m.group(1) + block + m.group(2),
        text,
        flags=re.S,
    )
    if count != 1:
        print(f"{path}: no <!-- {name}:start --> ... <!-- {name}:end --> block", file=sys.stderr)
        return False
    write_text(path, new)
    return True


def write_blocks(pages: list, name: str, block: str) -> bool:
    """:func:`write_block` into each of ``pages``, saying so; False at the first page without the block."""
    for path in pages:
        if not write_block(path, name, block):
            return False
        print(f"wrote the {name} block into {os.path.relpath(path, ROOT)}")
    return True


def copy_file(source: str, target: str) -> str:
    """Copy ``source`` over ``target`` atomically (a figure a run drew, into the docs); ``target``."""
    with atomic_write(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def main() -> int:
    if not write_blocks(PAGES, "bench", render()):
        return 1
    if not write_blocks(PAGES[:1], "bench-targets", targets_table()):
        return 1
    lightning = load("lightning")
    if lightning:
        path = os.path.join(ROOT, "docs", "training.md")
        if not write_block(path, "lightning", lightning_table(lightning)):
            return 1
        print(f"wrote the Lightning table into {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
