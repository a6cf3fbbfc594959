#!/usr/bin/env python
"""M2's training steps (pyro_vae.ssvae): what picking the label's columns by index buys, and
what the convolutional classifier costs.

The unlabelled step enumerates the ten labels: the guide's q(z|x,y) and the decoder run on
``[10, B, .]``. Written as the network of the concatenation ``[one_hot(y), x]``, the
784-wide input layer of q(z|x,y) runs ten times per image; ``SSVAE._with_label`` runs it once
and adds the label's column of the first layer (the same function:
``tests/test_ssvae.py::test_the_label_columns_picked_by_index_equal_the_network_of_the_one_hot_concatenation``).
Both forms are timed in one process, interleaved, on the example's network (one hidden
layer of 500, z of 50), one thread by default.

Then the step with ``SSVAE(classifier="conv")`` (two strided convolutions before q(y|x)'s hidden
layer) against the default MLP classifier, again interleaved in one process.

    python bench/ssvae_step.py                  # batch 100, as examples/ss_vae.py trains
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import save  # noqa: E402
from step import time_per_call  # noqa: E402

from pyro_vae.ssvae import SSVAE, SSObjective  # noqa: E402
from pyro_vae.training.step import CheckedStep  # noqa: E402


def one_hot_concatenation(self: SSVAE, net: torch.nn.Sequential, y: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The network of ``[one_hot(y), other]``, the one-hot formed and broadcast."""
    k = self.num_classes
    code = F.one_hot(y, k).to(other.dtype)
    shape = torch.broadcast_shapes(code.shape[:-1], other.shape[:-1])
    return net(torch.cat([code.expand(*shape, k), other.expand(*shape, other.shape[-1])], dim=-1))


def classifier_cost(x: torch.Tensor, y: torch.Tensor, repeats: int, calls: int) -> dict:
    """ms per step of each kind with the MLP and the convolutional q(y|x), and conv / mlp."""
    steps = {}
    for name in ("mlp", "conv"):
        torch.manual_seed(0)
        objective = SSObjective(SSVAE(classifier=name))
        steps[name] = CheckedStep(objective, objective.module, lr=1e-4)
    kinds = {"unlabelled (y enumerated)": lambda step: step(x, 59900), "labelled": lambda step: step((x, y), 100)}
    ms = {kind: {name: [] for name in steps} for kind in kinds}
    for _ in range(repeats):
        for name, step in steps.items():
            for kind, call in kinds.items():
                call(step)  # warm
                ms[kind][name].append(time_per_call(lambda: call(step), calls))
    rows = {}
    for kind, by_name in ms.items():
        med = {name: statistics.median(v) for name, v in by_name.items()}
        rows[kind] = {"ms": {name: {"median": m, "all": by_name[name]} for name, m in med.items()},
                      "conv_over_mlp": med["conv"] / med["mlp"]}
        print(f"{kind:>26}: {med['mlp']:.1f} ms with the MLP classifier, {med['conv']:.1f} ms with the "
              f"convolutional one ({med['conv'] / med['mlp']:.2f}x)")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "ssvae_step.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae = SSVAE()
    objective = SSObjective(vae)
    step = CheckedStep(objective, objective.module, lr=1e-4)
    x = torch.bernoulli(torch.full((args.batch_size, 784), 0.13))
    y = torch.arange(args.batch_size) % 10
    indexed = SSVAE._with_label
    forms = {"label columns by index": indexed, "one-hot concatenation": one_hot_concatenation}
    kinds = {"unlabelled (y enumerated)": lambda: step(x, 59900), "labelled": lambda: step((x, y), 100)}
    ms = {kind: {form: [] for form in forms} for kind in kinds}
    try:
        for _ in range(args.repeats):
            for form, fn in forms.items():
                SSVAE._with_label = fn
                for kind, call in kinds.items():
                    call()  # warm
                    ms[kind][form].append(time_per_call(call, args.calls))
    finally:
        SSVAE._with_label = indexed
    rows = {}
    for kind, by_form in ms.items():
        med = {form: statistics.median(v) for form, v in by_form.items()}
        ratio = med["one-hot concatenation"] / med["label columns by index"]
        rows[kind] = {"ms": {form: {"median": m, "all": by_form[form]} for form, m in med.items()}, "speedup": ratio}
        print(f"{kind:>26}: {med['label columns by index']:.1f} ms by index, {med['one-hot concatenation']:.1f} ms "
              f"concatenated ({ratio:.2f}x)")
    epoch = (599 * sum(rows[k]["ms"]["label columns by index"]["median"] for k in rows)) / 1e3
    print(f"one epoch of examples/ss_vae.py at 100 labels (599 steps of each kind): about {epoch:.0f} s of steps")
    classifiers = classifier_cost(x, y, args.repeats, args.calls)
    save(args.json, {"batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
                     "calls": args.calls, "torch": torch.__version__, "steps": rows, "epoch_seconds_estimate": epoch,
                     "classifier": classifiers})
    return 0


if __name__ == "__main__":
    sys.exit(main())
