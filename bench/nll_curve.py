#!/usr/bin/env python
"""Render ``bench/best_nll.py``'s results as the NLL-against-minutes figure and table.

Reads every ``bench/results/best_nll_<minutes>min.json`` (one budget each, one recipe), draws the test NLL against
training minutes beside the published numbers of Burda et al. (2016, Table 1) and Tomczak &
Welling (2018) into ``docs/_static/figures/best_nll.png``, and writes the table between the
``<!-- best-nll:start -->`` and ``<!-- best-nll:end -->`` markers of ``docs/results.md`` and of
``docs/models.md``. Into ``docs/models.md`` it also writes what the curves' last points say against
the anchors, the hour's target, the rule's earlier versions (``bench/results/before/``) and the
runs' speed (``<!-- best-nll-verdict -->``), the runs that chose the budget rule
(``bench/results/budget_choice/<n>_<label>.json``, on held-out training images) and the
evaluation minutes per prior (``bench/results/prior_eval/<prior>/<n>_<label>.json``, from
``bench/prior_eval.py``) and the independent check of the estimate
(``bench/results/independent_nll.json``, from ``bench/independent_nll.py``).

    python bench/nll_curve.py          # after bench/best_nll.py
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.typing import ColorType

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from report import write_block  # noqa: E402

from pyro_vae.files import save_figure  # noqa: E402

FIGURE = os.path.join(ROOT, "docs", "_static", "figures", "best_nll.png")
PAGES = [os.path.join(ROOT, "docs", "results.md"), os.path.join(ROOT, "docs", "models.md")]


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
    return f"{name}, {rule_version(result)}"


def pseudo_inputs(result: dict) -> Optional[int]:
    """The VampPrior's ``K`` in the record's run (records from before the script set it ran the
    library's default, 500); ``None`` for another prior."""
    config = result["recipe"]["config"]
    return config.get("num_pseudo_inputs", 500) if config.get("prior") == "vamp" else None


def rule_version(result: dict) -> str:
    """What tells the rule's versions apart, as the record's run set it: the budget's last part,
    the learning rate and the VampPrior's size (``IWAE k=10 from 70%, learning rate 0.002,
    250 pseudo-inputs``)."""
    sched, version = schedule_of(result), f"learning rate {result['recipe']['lr']:g}"
    if sched.get("final_objective"):
        last = f"{sched['final_objective'].upper()} k={sched['final_particles']} from {sched['final_from']:.0%}"
        version = f"{last}, {version}"
    k = pseudo_inputs(result)
    return version if k is None else f"{version}, {k} pseudo-inputs"


def by_rule(previous: list) -> dict:
    """The records of :func:`previous_hours` grouped by their version of the rule, oldest first."""
    groups: dict = {}
    for record in previous:
        groups.setdefault(record["rule_folder"], []).append(record)
    return groups


def final_key(result: dict) -> str:
    return f"nll_k{result['recipe']['eval_samples']}"


def final_nll(result: dict) -> float:
    """The record's last NLL, at its final ``k`` (5000 for the budgets)."""
    return result["curve"][-1][final_key(result)]


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
            + ("" if same else f" NLL, k = {r['eval_samples']} ± s.e. |")
            + " evaluation minutes |",
            "|---|---|---|---|---|" + ("" if same else "---|") + "---|",
        ]
        for row in curve:
            nll_final = f"**{row[final]:.2f}** ± {row[final + '_stderr']:.3f}" if final in row else "–"
            minutes = row[f"eval_minutes_k{k_curve}"] + (
                0.0 if same else row.get(f"eval_minutes_k{r['eval_samples']}", 0.0)
            )
            lines.append(
                f"| {row['train_minutes']:.1f} | {row['epochs']} | {row['batch_size']} | {row['test_elbo']:.2f} "
                + (f"| {nll_final} |" if same else f"| {row[f'nll_k{k_curve}']:.2f} | {nll_final} |")
                + f" {minutes:.1f} |"
            )
        lines.append("")
    lines.append(
        "The ± is the Monte Carlo standard error of the importance-sampled estimate (delta method, "
        "from the weights' effective sample size): it says how far another draw of particles could move "
        "the number, not how far another training run could."
    )
    lines.append("")
    lines.append(
        "Anchors, test NLL with k = 5000 after training on a GPU (Burda et al., 2016, Table 1: 3,280 "
        "epochs; Tomczak & Welling, 2018, Table 2): "
        + "; ".join(f"{name} {value:.2f}" for name, value in anchors(results).items())
        + "."
    )
    return "\n".join(lines) + "\n"


def anchors(results: list) -> dict:
    """The published numbers the records carry (a later record's list includes an earlier's)."""
    return max((r["paper"] for r in results), key=len)


#: the hour's target of the quality-per-minute issue (k = 5000, 60 training minutes)
HOUR_TARGET = 82.0
NUMBER_WORDS = {2: "Two", 3: "Three", 4: "Four", 5: "Five"}  #: counts of seeds, spelled at a sentence's start
#: a margin below this against a paper's single run is called a match, not a win (one run, one seed)
MATCH_MARGIN = 0.5


def verdict(
    results: list,
    before: Optional[dict] = None,
    seeds: Optional[list] = None,
    previous: Optional[list] = None,
    earlier: Optional[list] = None,
) -> str:
    """What the curves' last points say against the anchors and the hour's target, as prose;
    ``seeds``: records of the hour's rule with other training seeds (``bench/results/seeds/``);
    ``previous``: the hours of the rule's earlier versions (:func:`previous_hours`); ``earlier``: the
    shorter budgets under those versions (:func:`earlier_budgets`)."""
    papers = anchors(results)
    lines = []
    for result in results:
        last = result["curve"][-1]
        nll = final_nll(result)
        below = [
            f"{name} ({value:.2f}) by {value - nll:.2f}" + (", a match" if value - nll < MATCH_MARGIN else "")
            for name, value in sorted(papers.items(), key=lambda item: -item[1])
            if nll < value
        ]
        said = f"below {'; '.join(below)}" if below else "below none of the anchors"
        lines.append(f"- **{result['recipe']['minutes']:g} minutes: {nll:.2f}** nats, {last['epochs']} epochs; {said}.")
    hour = next((r for r in results if r["recipe"]["minutes"] == 60), None)
    if hour:
        curve = hour["curve"]
        nll = final_nll(hour)
        met = (
            f"meets the {HOUR_TARGET} target by {HOUR_TARGET - nll:.2f}"
            if nll <= HOUR_TARGET
            else f"misses the {HOUR_TARGET} target by {nll - HOUR_TARGET:.2f}"
        )
        who = f"The hour with seed {hour['recipe']['seed']}" if seeds else "The hour"
        text = f"{who} {met}" + ("." if seeds else ", with one training seed.")
        finals = [[final_nll(r) for r in runs] for runs in by_rule(previous or []).values()]
        # how far the seeds of one earlier version fell apart: (spread, how many seeds)
        spreads = [(max(n) - min(n), len(n)) for n in finals if len(n) > 1]
        if not seeds and spreads:
            spread, count = max(spreads)
            margin = abs(HOUR_TARGET - nll)
            text += (
                f" {NUMBER_WORDS.get(count, str(count))} seeds of an earlier version of the rule ended {spread:.2f} apart, "
                + (
                    "more than that margin: another seed could land on either side of the target."
                    if spread > margin
                    else "less than that margin."
                )
            )
        if len(curve) > 1:
            gain = curve[-2]["nll_k500"] - curve[-1]["nll_k500"]
            text += (
                f" Its last {curve[-1]['train_minutes'] - curve[-2]['train_minutes']:.0f} minutes bought "
                f"{gain:.2f} nats at k = 500."
            )
        if before:
            old = before["curve"][-1]
            text += (
                f" The first rule's hour (grey in the figure) reached {final_nll(before):.2f} in "
                f"{old['epochs']} epochs, {final_nll(before) - nll:.2f} above this one."
            )
        lines += ["", text]
    if hour and seeds:
        nlls = [final_nll(r) for r in [hour, *seeds]]
        mean = sum(nlls) / len(nlls)
        runs = ", ".join(
            f"seed {r['recipe']['seed']}: {n:.2f} ({r['curve'][-1]['epochs']} epochs)"
            for r, n in zip([hour, *seeds], nlls)
        )
        lines += [
            "",
            f"The hour with other training seeds (`--seed S`, records `bench/results/seeds/`), the rule and "
            f"everything else unchanged: {runs}; spread {max(nlls) - min(nlls):.2f} nats, mean {mean:.2f}, "
            + (
                f"which meets the {HOUR_TARGET} target."
                if mean <= HOUR_TARGET
                else f"{mean - HOUR_TARGET:.2f} above the {HOUR_TARGET} target."
            ),
        ]
    if hour and previous:
        now, seed = final_nll(hour), hour["recipe"]["seed"]
        rules = []
        for folder, mine in by_rule(previous).items():
            runs = ", ".join(
                f"seed {r['recipe']['seed']}: {final_nll(r):.2f} ({r['curve'][-1]['epochs']} epochs)" for r in mine
            )
            rules.append(f"{rule_version(mine[0])} (`bench/results/before/{folder}/`): {runs}")
        text = f"The hours of the rule's earlier versions, oldest first, dotted in the figure: {'; '.join(rules)}."
        same = next((r for r in reversed(previous) if r["recipe"]["seed"] == seed), None)
        if same is not None:
            gain = final_nll(same) - now
            change = f"{abs(gain):.2f} {'below' if gain > 0 else 'above'}" if round(abs(gain), 2) else "level with"
            text += (
                f" This hour's rule ({rule_version(hour)}) reached {now:.2f} with seed {seed}, "
                f"{change} the same seed's under the version just before it ({final_nll(same):.2f})."
            )
        lines += ["", text]
    shorter = shorter_budgets(results, earlier or [])
    if shorter:
        lines += ["", shorter]
    # the speed of the runs of the longest budget's recipe, the hour's other seeds too
    alike = [r for r in [*results, *(seeds or [])] if r["recipe"]["config"] == results[-1]["recipe"]["config"]]
    if len(alike) > 1 and all(r.get("epochs") for r in alike):
        names = [
            f"{r['recipe']['minutes']:g} minutes"
            + (f" (seed {r['recipe']['seed']})" if r["recipe"]["minutes"] == 60 else "")
            for r in alike
        ]
        lines += ["", speed(alike, names)]
    lines += [
        "",
        "The ± is the importance estimate's error, not a seed's; the budgets are one run each"
        + (" (the hour aside)" if seeds else "")
        + f", so a margin below {MATCH_MARGIN} nats against a paper's single run is a match rather than a win "
        "until more seeds are run.",
    ]
    return "\n".join(lines) + "\n"


def shorter_budgets(results: list, earlier: list) -> str:
    """The budgets under an hour, each beside its runs under the rule's earlier versions
    (:func:`earlier_budgets`), oldest first; empty without such runs."""
    lines = []
    for result in results:
        minutes = result["recipe"]["minutes"]
        mine = [r for r in earlier if r["recipe"]["minutes"] == minutes]
        if minutes == 60 or not mine:
            continue
        runs = "; ".join(
            f"{rule_version(r)} (`bench/results/before/{r['rule_folder']}/`): {final_nll(r):.2f} "
            f"({r['curve'][-1]['epochs']} epochs)"
            for r in mine
        )
        lines.append(
            f"{minutes:g} minutes under the rule's earlier versions, oldest first: {runs}; under this one "
            f"{final_nll(result):.2f} ({result['curve'][-1]['epochs']} epochs)."
        )
    return " ".join(lines)


def first_phase(record: dict) -> list:
    """The record's epochs before its first change of batch size or objective: the same work in
    every budget of one recipe (the KL warm-up's weight costs nothing)."""
    rows = record["epochs"]
    first = rows[0]
    out = []
    for row in rows:
        if (row["batch_size"], row["objective"]) != (first["batch_size"], first["objective"]):
            break
        out.append(row)
    return out


def speed(records: list, names: list) -> str:
    """How fast each record's run trained, in epochs per training minute over the first minutes
    that all of them spent on the same work (:func:`first_phase`): a budget's minutes buy fewer
    epochs on a slower machine, and the records were made on different days. ``names``: one label a
    record. Records of other recipes (model, prior, widths) do the same epochs at other costs: the
    caller passes one recipe's."""
    window = min(first_phase(r)[-1]["train_minutes"] for r in records)
    rates = []
    for record in records:
        done = [row for row in record["epochs"] if row["train_minutes"] <= window][-1]
        rates.append(done["epoch"] / done["train_minutes"])
    said = ", ".join(f"{name} {rate:.1f}" for name, rate in zip(names, rates))
    slow, fast = min(rates), max(rates)
    text = (
        f"Speed: over their first {window:.1f} training minutes, the same work in every budget (batches of "
        f"{first_phase(records[0])[0]['batch_size']} and the ELBO, before any change of either), the runs made "
        f"these epochs a minute: {said}. "
    )
    if slow >= 0.95 * fast:
        return text + "They are within 5% of each other: the budgets' minutes bought the same training."
    text += f"The slowest made {1 - slow / fast:.0%} fewer than the fastest. "
    evals = [r["curve"][-1].get(f"eval_minutes_k{r['recipe']['eval_samples']}") for r in records]
    if all(evals):  # one computation for every checkpoint of one recipe: a second reading of the machine
        took = ", ".join(f"{name} {minutes:.2f}" for name, minutes in zip(names, evals))
        text += (
            f"Their final estimates (k = {records[0]['recipe']['eval_samples']}, {records[0]['num_test']:,} test "
            f"digits), the same computation for each, took these minutes: {took}. "
        )
    return text + (
        "The runs were made on different days, on machines of one kind that were not equally fast, so a "
        "budget's minutes did not buy every run the same training: a curve that ran slower understates what its "
        "budget gives the rule."
    )


def budget_label(result: dict) -> str:
    """The budget and its rule's version, short: ``60 min, IWAE-10, lr 0.002, Vamp-250``."""
    sched, k = schedule_of(result), pseudo_inputs(result)
    final = f", {sched['final_objective'].upper()}-{sched['final_particles']}" if sched.get("final_objective") else ""
    return f"{result['recipe']['minutes']:g} min{final}, lr {result['recipe']['lr']:g}" + (f", Vamp-{k}" if k else "")


def dotted(
    ax: plt.Axes, record: dict, colour: ColorType, label: Optional[str], star_label: Optional[str] = None
) -> None:
    """A record's curve dotted, with a hollow star at its final estimate (``None``: no legend entry)."""
    k_curve = record["recipe"]["curve_samples"]
    points = [(row["train_minutes"], row[f"nll_k{k_curve}"]) for row in record["curve"]]
    ax.plot(*zip(*points), "o:", ms=3, lw=1, color=colour, label=label, zorder=1.5)  # under the current curves
    last = record["curve"][-1]
    if final_key(record) in last:
        ax.plot(
            last["train_minutes"], final_nll(record), "*", ms=12, mfc="none", color=colour, label=star_label, zorder=1.5
        )


TOP = 92.0  #: the plot's upper limit: a recipe far above the others is marked at the edge, not scaled in


def figure(
    results: list, before: Optional[dict] = None, seeds: Optional[list] = None, previous: Optional[list] = None
) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.6))
    colours = {}
    if before is not None:  # the first hour, under the rule that scaled the warm-up with the budget
        points = [(row["train_minutes"], row["nll_k500"]) for row in before["curve"]]
        ax.plot(
            *zip(*points),
            "o--",
            color="0.6",
            ms=4,
            label=f"60 min, the first rule (k=500; k=5000: {before['curve'][-1]['nll_k5000']:.2f})",
        )
    for result in results:
        curve, k_curve = result["curve"], result["recipe"]["curve_samples"]
        points = [(row["train_minutes"], row[f"nll_k{k_curve}"]) for row in curve]
        inside = [(m, v) for m, v in points if v <= TOP]
        (line,) = ax.plot(*zip(*inside) if inside else ([], []), "o-", label=f"{budget_label(result)} (k={k_curve})")
        colours[result["recipe"]["minutes"]] = line.get_color()
        for m, v in points:
            if v > TOP:  # off the scale: an arrow at the edge with its value
                ax.annotate(
                    f"{budget_label(result)}: {v:.2f} (k={k_curve}, {m:.0f} min)",
                    xy=(m, TOP - 0.05),
                    xytext=(m + 2, TOP - 0.6),
                    fontsize=7.5,
                    color=line.get_color(),
                    arrowprops={"arrowstyle": "->", "color": line.get_color()},
                )
        finals = [
            (row["train_minutes"], row[final_key(result)])
            for row in curve
            if final_key(result) in row and row[final_key(result)] <= TOP
        ]
        if finals and result["recipe"]["eval_samples"] != k_curve:
            ax.plot(
                *zip(*finals),
                "*",
                ms=14,
                color=line.get_color(),
                label=f"{budget_label(result)}, k={result['recipe']['eval_samples']}: {finals[-1][1]:.2f}",
            )
    # the same budget with another training seed: dotted, hollow star, an entry each
    for seed in seeds or []:
        name = f"{budget_label(seed)}, seed {seed['recipe']['seed']}"
        k_curve, k_final = seed["recipe"]["curve_samples"], seed["recipe"]["eval_samples"]
        star = f"{name}, k={k_final}: {final_nll(seed):.2f}" if final_key(seed) in seed["curve"][-1] else None
        dotted(ax, seed, colours.get(seed["recipe"]["minutes"], "0.3"), f"{name} (k={k_curve})", star)
    # the rule's earlier versions: each in its own grey, the older the lighter, one entry per version
    greys = ("0.75", "0.55", "0.35")
    for folder, runs in by_rule(previous or []).items():
        colour = greys[EARLIER_RULES.index(folder) % len(greys)]
        ends = ", ".join(f"{final_nll(r):.2f}" for r in runs)
        label = f"{budget_label(runs[0])}, {len(runs)} seed{'s' if len(runs) > 1 else ''} (k={runs[0]['recipe']['eval_samples']}: {ends})"
        for i, run in enumerate(runs):
            dotted(ax, run, colour, label if i == 0 else None)
    styles = ["--", ":", "-.", (0, (6, 2, 1, 2, 1, 2)), (0, (1, 1)), (0, (8, 3))]
    for (name, value), style in zip(anchors(results).items(), styles):
        colour = "firebrick" if name.startswith("Tomczak") else "grey"
        ax.axhline(value, color=colour, ls=style, lw=1, label=f"{name} {value:.2f}")
    ax.set_xlabel("training minutes (2 CPU threads)")
    ax.set_ylabel("test NLL, nats (lower is better)")
    ax.set_ylim(80.5, TOP)
    ax.set_xlim(0, None)
    ax.set_title(f"{recipe_name(results[-1])}, and the other budgets", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.grid(alpha=0.3)
    os.makedirs(os.path.dirname(FIGURE), exist_ok=True)
    save_figure(fig, FIGURE, dpi=110, bbox_inches="tight")
    plt.close(fig)


def schedule_of(result: dict) -> dict:
    """The budget rule a record ran: its ``schedule``, or (records from before the rule was a
    library object) the same fields read off its recipe, where the warm-up was a fraction."""
    if "schedule" in result:
        return result["schedule"]
    r = result["recipe"]
    return {
        "minutes": r["minutes"],
        "warmup": r["warmup"],
        "warmup_minutes": r["warmup"] * r["minutes"],
        "batch_doublings": r["batch_schedule"],
        "final_objective": None,
    }


def choice_table(results: list) -> str:
    """The runs that chose the rule, each a budget of minutes evaluated on held-out training images."""
    base = results[0]
    lines = [
        f"Each row: its budget of training minutes of the recipe above, with the change its label names, on the first "
        f"{base['num_train']:,} training images, then the NLL (k = {base['recipe']['eval_samples']}) and ELBO of "
        f"the last {base['num_test']:,} training images, binarized once with a fixed seed; no test image is "
        f"used. Records: `bench/results/budget_choice/`; each row's command is in its record.",
        "",
        "| run | budget | learning rate at the start | KL warm-up | batch doublings at | last part of the budget "
        "| epochs | held-out ELBO | held-out NLL, k = 500 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        sched, last = schedule_of(result), result["curve"][-1]
        final = (
            f"{sched['final_objective']} k={sched.get('final_particles')} from {sched.get('final_from'):.0%}"
            if sched.get("final_objective")
            else "ELBO"
        )
        nll, elbo = f"{last['nll_k500']:.2f}", f"{last['test_elbo']:.2f}"
        if sched.get("average_from") is not None:  # the mean, beside the last weights it replaced
            final += f"; the mean of the weights from {sched['average_from']:.0%} ({last['averaged_epochs']} epochs)"
            nll += f" (last weights: {last['last_weights']['nll_k500']:.2f})"
            elbo += f" (last weights: {last['last_weights']['test_elbo']:.2f})"
        doublings = ", ".join(f"{d:.0%}" for d in sched["batch_doublings"]) or "none"
        warmup = f"{sched['warmup'] * sched['minutes']:.1f} min ({sched['warmup']:.0%})"
        lines.append(
            f"| {result['label']} | {sched['minutes']:g} min | {result['recipe']['lr']:g} | {warmup} | {doublings} "
            f"| {final} | {last['epochs']} | {elbo} | {nll} |"
        )
    return "\n".join(lines) + "\n"


def eval_table(records: list) -> str:
    """Minutes of the k = 5000 NLL per prior, checkpoint and code, oldest first (:func:`eval_records`);
    where a record was compared with the one before it on the same particles, the largest change of
    one image's estimate."""
    lines = [
        "| prior | checkpoint | code | chunk: images × particles | test images | minutes for 10,000 images "
        "| NLL ± s.e. | same particles: largest change of one image's NLL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        checkpoint = re.search(r"--checkpoint (\S+)", r["command"]).group(1).split("/")[-2]
        batch = r.get("batch_size", 100)  # before the field: the default of the day, 100 images a chunk
        compared = r.get("compared_with")
        change = (
            f"{compared['max_per_image_difference']:.1e} nats from {compared['commit'][:7]}"
            if compared and compared.get("batch_size", 100) == batch
            else "–"
        )
        lines.append(
            f"| {r['prior']} | {checkpoint} | {r['commit'][:7]} | {batch} × {r.get('particles_per_chunk', 50)} "
            f"| {r['test_images']:,} | {r['minutes'] * 10_000 / r['test_images']:.2f} "
            f"| {r['nll']:.4f} ± {r['nll_stderr']:.4f} | {change} |"
        )
    return "\n".join(lines) + "\n"


def eval_records() -> list:
    """``bench/results/prior_eval/<prior>/<n>_<label>.json`` (``bench/prior_eval.py``), each with its
    ``"prior"``, by prior and then ``n``: the order the code changed in."""
    out = []
    for path in glob.glob(os.path.join(HERE, "results", "prior_eval", "*", "*.json")):
        prior = os.path.basename(os.path.dirname(path))
        out.append((prior, _number(path), {**_read(path), "prior": prior}))
    return [record for _, _, record in sorted(out, key=lambda item: item[:2])]


def independent_check(record: dict) -> str:
    """``bench/independent_nll.py``'s record as the two comparisons, paired and unpaired."""
    paired, ess = record["paired"], record["median_ess"]
    return (
        f"`{record['command']}`: the checkpoint of epoch {record['epoch']}, {record['test_images']} test images, "
        f"$K = {record['samples_per_image']}$.\n\n"
        f"- **paired**, both estimates of each image drawn from the same standard-normal noise, so the "
        f"Monte Carlo error cancels: {paired['independent_nll']:.6f} nats against `log_likelihood`'s "
        f"{paired['pyro_vae_nll']:.6f}, a difference of {paired['difference']:.1e} (the largest for one image, "
        f"{paired['largest_image_difference']:.1e}): float32 rounding;\n"
        f"- **unpaired**, each with its own particles: {record['independent_nll']:.3f} against "
        f"{record['pyro_vae_nll']:.3f}, a difference of {record['difference']:+.3f} with a standard error of "
        f"{record['difference_stderr']:.3f} from the spread of the per-image differences (median effective "
        f"sample size {ess:.0f} of {record['samples_per_image']:,} weights).\n"
    )


def _minutes(path: str) -> float:
    return float(os.path.basename(path)[len("best_nll_") : -len("min.json")])


def _number(path: str) -> int:
    """``n`` of a record named ``<n>_<label>.json``: the order the records were made in."""
    return int(os.path.basename(path).split("_")[0])


def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def curves() -> list:
    """The records of the budgets, shortest first."""
    paths = sorted(glob.glob(os.path.join(HERE, "results", "best_nll_*min.json")), key=_minutes)
    return [_read(path) for path in paths]


def first_hour() -> Optional[dict]:
    """The hour of the first rule, which scaled the warm-up with the budget (``bench/results/before/``)."""
    path = os.path.join(HERE, "results", "before", "best_nll.json")
    return _read(path) if os.path.exists(path) else None


def seeds() -> list:
    """The hour's rule with other training seeds: ``bench/results/seeds/best_nll_60min_seed<S>.json``."""
    paths = sorted(glob.glob(os.path.join(HERE, "results", "seeds", "best_nll_60min_seed*.json")))
    return [_read(path) for path in paths]


#: the rule's earlier versions, oldest first: the folders of ``bench/results/before/`` that hold their hours
EARLIER_RULES = ("iwae_k5", "lr_1e-3", "vamp_500")


def _earlier_versions(pattern: str) -> list:
    """The records matching ``pattern`` in the folders of :data:`EARLIER_RULES`, oldest version
    first, each with its folder under ``"rule_folder"``."""
    out = []
    for folder in EARLIER_RULES:
        for path in sorted(glob.glob(os.path.join(HERE, "results", "before", folder, pattern))):
            out.append({**_read(path), "rule_folder": folder})
    return out


def earlier_budgets() -> list:
    """The budgets under an hour run under the rule's earlier versions
    (``bench/results/before/<version>/best_nll_<m>min.json``)."""
    return [r for r in _earlier_versions("best_nll_*min.json") if r["recipe"]["minutes"] < 60]


def previous_hours() -> list:
    """The hours of the rule's earlier versions, its seeds too (``best_nll_60min*.json``)."""
    return _earlier_versions("best_nll_60min*.json")


def blocks() -> dict:
    """Each generated block by its marker name: the curves' table (docs/results.md and docs/models.md),
    the verdict, the runs that chose the rule and the evaluation minutes (docs/models.md)."""
    out = {"best-nll": table(curves())}
    out["best-nll-verdict"] = verdict(curves(), first_hour(), seeds(), previous_hours(), earlier_budgets())
    choices = [
        {**_read(path), "label": os.path.basename(path)[:-5].replace("_", ". ", 1).replace("_", " ")}
        for path in sorted(
            glob.glob(os.path.join(HERE, "results", "budget_choice", "*.json")),
            key=_number,  # row 10 after row 9
        )
    ]
    if choices:
        out["budget-choice"] = choice_table(choices)
    independent = os.path.join(HERE, "results", "independent_nll.json")
    if os.path.exists(independent):
        out["independent-nll"] = independent_check(_read(independent))
    evals = eval_records()
    if evals:
        out["prior-eval"] = eval_table(evals)
    return out


def pages_of(name: str) -> list:
    """The pages that show block ``name``: the curves' table and the evaluation minutes on both,
    the verdict and the runs that chose the rule on docs/models.md only."""
    return PAGES if name in ("best-nll", "prior-eval") else PAGES[1:]


def main() -> int:
    if not curves():
        print("no bench/results/best_nll_<minutes>min.json: run bench/best_nll.py first", file=sys.stderr)
        return 1
    figure(curves(), first_hour(), seeds(), previous_hours())
    for name, block in blocks().items():
        for page in pages_of(name):
            if not write_block(page, name, block):
                return 1
    print(
        f"wrote {os.path.relpath(FIGURE, ROOT)} and the tables of {', '.join(os.path.relpath(p, ROOT) for p in PAGES)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
