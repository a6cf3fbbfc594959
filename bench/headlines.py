#!/usr/bin/env python
"""The README's headline results, one line each, made from the committed records.

Writes the lines between the README's ``<!-- headlines:start -->`` and ``<!-- headlines:end -->``
markers from ``bench/results/``: the best test NLL per budget of minutes (``best_nll_*min.json``),
the example's test ELBO (``example/full.json``), M2's accuracy (``m2/``), the CVAE's
-log p(y|x) (``cvae.json``), and the speed against plain PyTorch
(``step.json``, and the latest record of each prior in ``prior_eval/``). Each line links to its
table in docs/results.md, where the protocol and the command stand beside it.

    python bench/headlines.py          # after any of the scripts that write those records
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import m2_runs  # noqa: E402
from nll_curve import curves, eval_records, final_nll, rule_version, seeds  # noqa: E402
from report import load, write_block  # noqa: E402

README = os.path.join(ROOT, "README.md")
RESULTS_PAGE = "docs/results.md"


def nll_line() -> str | None:
    budgets = curves()
    if not budgets:
        return None
    reached = ", ".join(f"**{final_nll(r):.2f}** nats after {r['recipe']['minutes']:g}" for r in budgets)
    paper = budgets[-1]["paper"]
    iwae, vamp = "Burda et al.: two-layer IWAE k=50", "Tomczak & Welling: HVAE + VampPrior"
    others = ", ".join(f"{final_nll(r):.2f} with seed {r['recipe']['seed']}" for r in seeds())
    runs = f"one run each, the hour also {others}" if others else "one run each"
    hour_rule = rule_version(budgets[-1])
    earlier = [r for r in budgets if rule_version(r) != hour_rule]
    if earlier:  # budgets run before the rule's last change say so, each with the version it ran
        minutes: dict = {}
        for r in earlier:
            minutes.setdefault(rule_version(r), []).append(f"{r['recipe']['minutes']:g}")
        ran = "; ".join(f"{' and '.join(m)} minutes ran the rule's earlier {v}" for v, m in minutes.items())
        runs += f"; {ran}; the hour ran {hour_rule}"
    return (
        f"- **Test NLL in a budget of minutes**: {reached} training minutes (a VAE with the VampPrior, all "
        f"10,000 test digits, k = {budgets[0]['recipe']['eval_samples']}, {runs}); the published MLP "
        f"models, trained on GPUs for far longer, reach {paper[iwae]:.2f} (Burda et al.'s two-layer "
        f"IWAE) and {paper[vamp]:.2f} (Tomczak & Welling's HVAE with the VampPrior). "
        f"[Table, figure, protocol]({RESULTS_PAGE}#the-best-test-nll-in-a-budget-of-minutes)"
    )


def example_line() -> str | None:
    full = load("example/full")
    if full is None:
        return None
    minutes = full["epochs"] * full["seconds_per_epoch"] / 60
    return (
        f"- **The example on full MNIST**: test ELBO **{full['test_elbo']:.2f}** nats after {full['epochs']} epochs "
        f"({minutes:.1f} training minutes), test NLL {-full['test_log_likelihood']:.2f} (k = "
        f"{full['test_log_likelihood_samples']}). [Table, the guides]({RESULTS_PAGE}#the-example-test-elbo)"
    )


def speed_line() -> str | None:
    """The step's ratio to plain PyTorch, and the evaluation's minutes per prior on trained
    checkpoints (``bench/prior_eval.py``, projected to the 10,000 test digits)."""
    step = load("step")
    if step is None:
        return None
    row = next(r for r in step["rows"] if r["batch_size"] == 128)
    line = f"- **Speed**: a training step takes **{row['ratio']:.2f}×** a plain-PyTorch VAE's time (batch 128)"
    evals = {r["prior"]: r for r in eval_records()}  # the last record of each prior: today's code
    if {"standard", "vamp"} <= set(evals):
        minutes = {name: r["minutes"] * 10_000 / r["test_images"] for name, r in evals.items()}
        line += (
            f"; the k = {evals['vamp']['samples_per_image']} log-likelihood of 10,000 test digits takes "
            f"{minutes['standard']:.1f} minutes with the N(0, I) prior, {minutes['vamp']:.1f} with the VampPrior "
            f"(trained checkpoints)"
        )
    return line + f". [Tables]({RESULTS_PAGE}#speed)"


def _counts(items: list) -> str:
    return " / ".join(str(i) for i in items)


def m2_line() -> str | None:
    """M2's test accuracy per label count (``m2/mlp_<labels>.json``) against Kingma et al.'s mean
    and standard deviation over runs: within one deviation is "matched within noise"."""
    recs = m2_runs.records()
    if not recs:
        return None
    accuracy = m2_runs.accuracies(recs)
    return (
        f"- **Semi-supervised M2** (the label a latent variable): test accuracy "
        f"**{_counts([f'{a:.4f}' for a in accuracy.values()])}** with {_counts(list(accuracy))} labels "
        f"(the anchors' MLP classifier, the last of 28 epochs, one run each). Against Kingma et al.'s M2 "
        f"(mean ± standard deviation over runs): {m2_runs.verdicts(recs)}. [Table, protocol]({RESULTS_PAGE}#semi-supervised-m2)"
    )


def cvae_line() -> str | None:
    """The CVAE's and the baseline's test -log p(y|x) per input-quadrant count (``cvae.json``)."""
    record = load("cvae")
    if record is None:
        return None
    rows = sorted(record["table"].items(), key=lambda kv: int(kv[0]))
    anchors = record["anchors"]

    def cells(name: str) -> str:
        return _counts([f"{row[name]['test_nll']:.1f}" for _, row in rows])

    def pyro(name: str) -> str:
        return _counts([f"{anchors[name][k]:.1f}" for k, _ in rows])

    return (
        f"- **The conditional VAE**: test −log p(y|x) **{cells('cvae')}** nats with {_counts([k for k, _ in rows])} "
        f"given quadrants (Pyro's example: {pyro('cvae')}), its deterministic baseline {cells('baseline')} "
        f"(Pyro's: {pyro('baseline')}); epochs chosen on held-out training digits where Pyro's chose on "
        f"the test set; one run. [Table]({RESULTS_PAGE}#the-conditional-vae)"
    )


def block() -> str:
    lines = [line for line in (nll_line(), example_line(), m2_line(), cvae_line(), speed_line()) if line]
    return "\n".join(lines) + "\n"


def main() -> int:
    if not write_block(README, "headlines", block()):
        return 1
    print("wrote the headlines into README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
