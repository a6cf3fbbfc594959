#!/usr/bin/env python
"""Render ``bench/best_nll.py``'s results as the NLL-against-minutes figure and table.

Reads every ``bench/results/best_nll*.json`` (one recipe each), draws the test NLL against
training minutes beside the reference lines of Burda et al. (2015, Table 1) into
``docs/_static/figures/best_nll.png``, and writes the table between the
``<!-- best-nll:start -->`` and ``<!-- best-nll:end -->`` markers of the README and of
``docs/models.md``.

    python bench/nll_curve.py          # after bench/best_nll.py
"""

from __future__ import annotations

import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from report import write_block  # noqa: E402
FIGURE = os.path.join(ROOT, "docs", "_static", "figures", "best_nll.png")
PAGES = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "docs", "models.md")]


def recipe_name(result: dict) -> str:
    """A short label: model, prior, widths, objective."""
    r, c = result["recipe"], result["recipe"]["config"]
    if c["model"] == "hvae":
        name = f"two-layer VAE (Burda et al.'s networks, {c.get('activation', 'tanh')})"
    else:
        name = f"VAE {'-'.join(str(h) for h in r['hidden'])} {c.get('activation', 'softplus')}, z={r['z_dim']}"
    name += ", VampPrior" if c.get("prior") == "vamp" else ", N(0, I) prior"
    if r["objective"] != "elbo":
        name += f", {r['objective']}" + (f" k={r['particles']}" if r.get("particles") else "")
    return name


def final_key(result: dict) -> str:
    return f"nll_k{result['recipe']['eval_samples']}"


def table(results: list) -> str:
    lines = []
    for result in results:
        r, curve = result["recipe"], result["curve"]
        k_curve, final = r["curve_samples"], final_key(result)
        same = k_curve == r["eval_samples"]  # one column when the curve already uses the final K
        lines += [
            f"**{recipe_name(result)}** (`{result['command']}`; {result['threads']} threads, "
            f"{result['num_test']:,} test images binarized once with a fixed seed; evaluation minutes not counted):",
            "",
            f"| training minutes | epochs | batch | test ELBO | NLL, k = {k_curve} |"
            + ("" if same else f" NLL, k = {r['eval_samples']} |") + " evaluation minutes |",
            "|---|---|---|---|---|" + ("" if same else "---|") + "---|",
        ]
        for row in curve:
            nll_final = f"**{row[final]:.2f}** ± {row[final + '_stderr']:.3f}" if final in row else "–"
            minutes = row[f"eval_minutes_k{k_curve}"] + (0.0 if same else row.get(f"eval_minutes_k{r['eval_samples']}", 0.0))
            lines.append(
                f"| {row['train_minutes']:.1f} | {row['epochs']} | {row['batch_size']} | {row['test_elbo']:.2f} "
                + (f"| {nll_final} |" if same else f"| {row[f'nll_k{k_curve}']:.2f} | {nll_final} |")
                + f" {minutes:.1f} |"
            )
        lines.append("")
    paper = results[0]["paper"]
    lines.append("Burda et al. (2015), Table 1, after 3,280 epochs on a GPU: "
                 + "; ".join(f"{name} {value:.2f}" for name, value in paper.items()) + ".")
    return "\n".join(lines) + "\n"


TOP = 88.5  #: the plot's upper limit: a recipe far above the others is marked at the edge, not scaled in


def figure(results: list) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for result in results:
        curve, k_curve = result["curve"], result["recipe"]["curve_samples"]
        points = [(row["train_minutes"], row[f"nll_k{k_curve}"]) for row in curve]
        inside = [(m, v) for m, v in points if v <= TOP]
        line, = ax.plot(*zip(*inside) if inside else ([], []), "o-", label=f"{recipe_name(result)} (k={k_curve})")
        for m, v in points:
            if v > TOP:  # off the scale: an arrow at the edge with its value
                ax.annotate(f"{recipe_name(result).split(' (')[0]}: {v:.2f} (k={k_curve}, {m:.0f} min)",
                            xy=(m, TOP - 0.05), xytext=(m + 2, TOP - 0.6), fontsize=7.5, color=line.get_color(),
                            arrowprops={"arrowstyle": "->", "color": line.get_color()})
        finals = [(row["train_minutes"], row[final_key(result)]) for row in curve
                  if final_key(result) in row and row[final_key(result)] <= TOP]
        if finals and result["recipe"]["eval_samples"] != k_curve:
            ax.plot(*zip(*finals), "*", ms=14, color=line.get_color(),
                    label=f"k={result['recipe']['eval_samples']}: {finals[-1][1]:.2f}")
    for (name, value), style in zip(results[0]["paper"].items(), ["--", ":", "-.", (0, (6, 2, 1, 2, 1, 2))]):
        ax.axhline(value, color="grey", ls=style, lw=1, label=f"Burda et al.: {name} {value:.2f}")
    ax.set_xlabel("training minutes (2 CPU threads)")
    ax.set_ylabel("test NLL, nats (lower is better)")
    ax.set_ylim(82, TOP)
    ax.set_xlim(0, None)
    ax.set_title("Test NLL on dynamically binarized MNIST against wall-clock training time")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.grid(alpha=0.3)
    os.makedirs(os.path.dirname(FIGURE), exist_ok=True)
    fig.savefig(FIGURE, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    paths = sorted(glob.glob(os.path.join(HERE, "results", "best_nll*.json")))
    if not paths:
        print("no bench/results/best_nll*.json: run bench/best_nll.py first", file=sys.stderr)
        return 1
    results = []
    for path in paths:
        with open(path) as f:
            results.append(json.load(f))
    figure(results)
    block = table(results)
    for page in PAGES:
        if not write_block(page, "best-nll", block):
            return 1
    print(f"wrote {os.path.relpath(FIGURE, ROOT)} and the tables of {', '.join(os.path.relpath(p, ROOT) for p in PAGES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
