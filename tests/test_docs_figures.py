"""docs/start_here.md quotes the numbers docs/make_figures.py measured, and shows its figures.

The script's run is too long for the test suite (minutes of training), so it writes what it
measured to docs/_static/figures/numbers.json; this test holds the page to those numbers, in
the formats below, and checks that every figure the page and the README show exists.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "_static" / "figures"
PAGE = ROOT / "docs" / "start_here.md"


def _2dp(v):
    return f"{v:.2f}"


def _sd(values):
    return " and ".join(_2dp(v) for v in values)


#: key of numbers.json -> how start_here.md writes it
FORMATS = {
    "grad_exact": _2dp,
    "grad_var_score": lambda v: f"{v:,.0f}",
    "grad_var_pathwise": lambda v: f"{v:.0f}",
    "vae_variance_ratio_median": lambda v: f"{v:,.0f}",
    "posterior_correlation": _2dp,
    "reverse_sd": _sd,
    "marginal_sd": _sd,
    "svi_sd": _sd,
    "mode_seeking_loc": _2dp,
    "mode_seeking_sd": _2dp,
    "reverse_kl_nats": _2dp,
    "moment_matched_reverse_kl_nats": _2dp,
    "gap_elbo_encoder": _2dp,
    "gap_elbo_optimized": _2dp,
    "gap_log_px": _2dp,
    "amortization_gap": _2dp,
    "approximation_gap": _2dp,
    "lk_encoder_1000": _2dp,
    "lk_encoder_5000": _2dp,
    "z2_test_elbo": _2dp,
    **{
        f"{run}_{part}": (lambda v: f"{v:.1f}")
        for run in ("beta1", "beta4", "warmup")
        for part in ("elbo", "recon", "kl")
    },
    **{f"{run}_active": str for run in ("beta1", "beta4", "warmup")},
    "beta4_kl_last": _2dp,
}


def measured():
    numbers = json.loads((FIGURES / "numbers.json").read_text())
    numbers["lk_encoder_1000"] = numbers["lk_encoder"]["1000"]
    numbers["lk_encoder_5000"] = numbers["lk_encoder"]["5000"]
    numbers["beta4_kl_last"] = numbers["beta4_kl_sorted"][-1]
    return numbers


def quoted(key, numbers):
    return FORMATS[key](numbers[key]).replace("-", "−")


def test_numbers_come_from_the_documented_command():
    numbers = measured()
    assert numbers["command"] == "python docs/make_figures.py"
    assert "docs/make_figures.py" in PAGE.read_text()


@pytest.mark.parametrize("key", sorted(FORMATS))
def test_the_page_quotes_the_measured_number(key):
    text = PAGE.read_text()
    assert "{{" not in text, "an unfilled number"
    assert quoted(key, measured()) in text, (key, quoted(key, measured()))


def test_the_measured_numbers_say_what_the_page_says():
    n = measured()
    assert n["grad_var_score"] > 10 * n["grad_var_pathwise"]  # "the score function's variance is ..."
    assert n["vae_variance_ratio_median"] > 100
    assert all(r < m for r, m in zip(n["reverse_sd"], n["marginal_sd"]))  # reverse KL shrinks the variance
    assert n["reverse_kl_nats"] < n["moment_matched_reverse_kl_nats"]  # and picks one mode
    assert n["gap_elbo_encoder"] < n["gap_elbo_optimized"] < n["gap_log_px"]
    assert n["amortization_gap"] > n["approximation_gap"]  # "most of the gap is amortization"
    assert n["beta4_kl"] < n["beta1_kl"] and n["beta4_elbo"] < n["beta1_elbo"]  # beta = 4 buys less KL, worse ELBO
    assert n["beta4_kl_sorted"][-1] < 0.1 < min(n["beta1_kl_sorted"])  # "on its way to the prior"
    assert abs(n["warmup_elbo"] - n["beta1_elbo"]) < 1  # "warm-up changes little here"
    lk = [n["lk_encoder"][k] for k in ("1", "10", "100", "1000", "5000")]
    assert lk == sorted(lk)  # L_K rises with K


def test_every_figure_shown_exists():
    shown = set()
    for page in [PAGE, ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        shown |= set(re.findall(r"_static/figures/([\w-]+\.png)", page.read_text()))
    assert {
        "gradient_variance.png",
        "reverse_kl.png",
        "gaps.png",
        "manifold.png",
        "reconstructions.png",
        "kl_per_dimension.png",
    } <= shown
    for name in shown:
        assert (FIGURES / name).stat().st_size > 5000, name
