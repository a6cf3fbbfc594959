#!/usr/bin/env python
"""Every figure of the docs, made by this one script, from fixed seeds:

    python docs/make_figures.py            # 3-5 minutes on one CPU thread (4.5 min on a busy 2-core machine)

It writes PNGs into ``docs/_static/figures/`` and the numbers that ``docs/start_here.md``
quotes into ``docs/_static/figures/numbers.json`` (``tests/test_docs_figures.py`` checks that
the page quotes them as measured). Data: the embedded 5,000-digit MNIST sample
(:func:`pyro_vae.data.images.load_embedded`), so the figures are the same on every machine; models
are trained with the plain SVI loop of :doc:`start_here`, one thread, seed 0.

Figures:

* ``reconstructions.png``, ``prior_samples.png``, ``latent_map.png``, ``interpolation.png``,
  ``elbo_curves.png`` -- the five figures of ``examples/mnist_svi.py`` (:func:`pyro_vae.figures.plots.plot_all`),
  for a VAE with ``z_dim=2``;
* ``manifold.png`` -- that VAE's decoder means on a grid of ``z`` (Kingma & Welling 2014, Fig. 4);
* ``gradient_variance.png`` -- pathwise against score-function gradients of the ELBO;
* ``reverse_kl.png`` -- the exact linear-Gaussian posterior against the best diagonal ``q``,
  and a Gaussian fitted to two modes;
* ``gaps.png`` -- the approximation and amortization gaps (Cremer et al. 2018) and
  :math:`\\mathcal L_K` against ``K``, for a VAE with ``z_dim=10``;
* ``kl_per_dimension.png`` -- the KL per latent dimension and the active units of three VAEs
  trained with the KL weighted by 1, by 4, and warmed up from 0.1 to 1.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_vae import VAE, elbo_terms
from pyro_vae.data.images import binarize, load_embedded
from pyro_vae.figures.plots import plot_all
from pyro_vae.inference.evaluate import (
    active_units,
    kl_per_dimension,
    log_likelihood,
    posterior_means,
)
from pyro_vae.inference.objectives import kl_weighted
from pyro_vae.models.linear_gaussian import LinearGaussianGuide, LinearGaussianModel
from pyro_vae.models.plate import data_plate

OUT = Path(__file__).resolve().parent / "_static" / "figures"
F64 = torch.float64


def save(fig, name: str) -> None:
    fig.savefig(OUT / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"  wrote {OUT / name}", flush=True)


# ---- a VAE, trained by the plain SVI loop ---------------------------------------------------


def train_vae(z_dim: int, epochs: int, train_x, test_x, seed: int = 0, beta=lambda epoch: 1.0, name=None):
    """SVI with Trace_ELBO and Adam, dynamic binarization, minibatches scaled by N/B; the KL
    weighted by ``beta(epoch)`` (1: the ELBO itself)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    vae = VAE(z_dim=z_dim, hidden_dims=(400,), name=name or f"vae{z_dim}")
    model, guide = kl_weighted(vae.model, 1.0), kl_weighted(vae.guide, 1.0)  # the KL's weight, beta
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    n, batch, history = len(train_x), 100, []
    for epoch in range(1, epochs + 1):
        model.beta = guide.beta = beta(epoch)
        total = 0.0
        for idx in torch.randperm(n).split(batch):
            total += svi.step(torch.bernoulli(train_x[idx]), num_data=n)  # a fresh binarization each time
        with torch.no_grad():
            terms = elbo_terms(vae.model, vae.guide, test_x)
        history.append(
            {
                "epoch": epoch,
                "train_elbo": -total / (n * math.ceil(n / batch)),
                "test_elbo": terms.elbo.mean().item(),
                "test_recon": terms.recon.mean().item(),
                "test_kl": terms.kl.mean().item(),
            }
        )
    return vae, history


def manifold(vae: VAE, name: str, side: int = 15) -> None:
    """Decoder means E[x | z] on a grid of z at the prior's quantiles 1/(2 side) .. 1 - 1/(2 side)."""
    quantiles = (torch.arange(side) + 0.5) / side
    grid = torch.distributions.Normal(0.0, 1.0).icdf(quantiles)
    z = torch.stack(torch.meshgrid(grid, grid.flip(0), indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        images = vae.decoded_mean(z).reshape(side, side, 28, 28)
    canvas = images.permute(0, 2, 1, 3).reshape(side * 28, side * 28).numpy()  # rows: z_2 (top: largest)
    fig, ax = plt.subplots(figsize=(6.6, 6.6))
    ax.imshow(canvas, cmap="gray_r", extent=[0, side, 0, side])  # one unit per cell, at the quantiles
    centres = np.arange(side)[::2] + 0.5
    ax.set_xticks(centres, [f"{grid[int(c)]:.1f}" for c in centres], fontsize=7)
    ax.set_yticks(centres, [f"{grid[int(c)]:.1f}" for c in centres], fontsize=7)
    ax.set(
        xlabel="$z_1$ (cells at the prior's quantiles)",
        ylabel="$z_2$",
        title="Decoder means $\\mathbb{E}[x \\mid z]$ on a grid of $z$ ($z$_dim = 2)",
    )
    save(fig, name)


# ---- pathwise against score-function gradients ----------------------------------------------


def gradient_variance(vae: VAE, test_x, numbers: dict) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))

    # (a) the exact model: one datapoint, q = N(m, diag s^2), the gradient in m_1 known exactly
    g = torch.Generator().manual_seed(3)
    model = LinearGaussianModel(torch.randn(5, 2, generator=g, dtype=F64), torch.zeros(5, dtype=F64), 0.5)
    x = model.sample(1, generator=4)
    m = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)
    s = torch.tensor([0.6, 0.8], dtype=F64)
    exact = torch.autograd.grad(model.analytic_elbo(x, m[None], torch.diag(s)[None]).sum(), m)[0][0].item()

    def draws(reparameterized: bool, n: int = 4000):
        def guide(x, num_data=None):
            with pyro.plate("data", 1):
                # a MultivariateNormal with diagonal covariance: the same q as Normal(m, s).to_event(1), whose
                # Independent wrapper cannot carry has_rsample_ through Pyro's plate broadcasting
                pyro.sample(
                    "z", dist.MultivariateNormal(m.expand(1, 2), scale_tril=torch.diag(s)).has_rsample_(reparameterized)
                )

        out = []
        for _ in range(n):
            loss = Trace_ELBO().differentiable_loss(model.model, guide, x)
            out.append(-torch.autograd.grad(loss, m)[0][0].item())  # d ELBO / d m_1
        return np.array(out)

    pyro.set_rng_seed(1)
    path, score = draws(True), draws(False)
    for est, label in ((path, "pathwise"), (score, "score function")):
        se = est.std() / math.sqrt(len(est))
        assert abs(est.mean() - exact) < 4 * se, (label, est.mean(), exact, se)  # both unbiased
    numbers["grad_exact"] = exact
    numbers["grad_var_pathwise"] = float(path.var())
    numbers["grad_var_score"] = float(score.var())
    ax = axes[0]
    bins = np.linspace(np.percentile(score, 0.5), np.percentile(score, 99.5), 80)
    ax.hist(score, bins=bins, alpha=0.6, color="C3", label=f"score function: variance {score.var():.3g}")
    ax.hist(path, bins=bins, alpha=0.8, color="C0", label=f"pathwise: variance {path.var():.3g}")
    ax.axvline(exact, color="k", lw=1.5, label=f"exact gradient {exact:.3f}")
    ax.set(
        title="(a) Linear-Gaussian model: 4,000 one-sample estimates of $\\partial\\,\\mathrm{ELBO} / \\partial m_1$",
        xlabel="estimate",
        ylabel="count",
    )
    ax.title.set_fontsize(9.5)
    ax.legend(fontsize=8)

    # (b) the trained VAE: every encoder weight's gradient, one test digit at a time (so that the
    # score function's reward is that digit's own ELBO), 150 one-sample estimates per digit
    params = [p for p in vae.encoder.parameters()]

    def encoder_grads(x, reparameterized: bool, n: int = 150):
        def guide(x, num_data=None):
            with data_plate(x.shape[0], num_data, x.device):
                loc, scale = vae.encoder.encoder(x)  # the VAE's own encoder network
                pyro.sample(
                    "z", dist.MultivariateNormal(loc, scale_tril=torch.diag_embed(scale)).has_rsample_(reparameterized)
                )

        out = []
        for _ in range(n):
            loss = Trace_ELBO().differentiable_loss(vae.model, guide, x)
            out.append(torch.cat([gr.flatten() for gr in torch.autograd.grad(loss, params)]))
        return torch.stack(out)

    pyro.set_rng_seed(2)
    ratios = []
    for i in range(4):
        gp, gs = encoder_grads(test_x[i : i + 1], True), encoder_grads(test_x[i : i + 1], False)
        keep = gp.var(0) > 0
        ratios.append((gs.var(0)[keep] / gp.var(0)[keep]).numpy())
    ratio = np.concatenate(ratios)
    numbers["vae_variance_ratio_median"] = float(np.median(ratio))
    numbers["vae_variance_ratio_share_above_10"] = float((ratio > 10).mean())
    ax = axes[1]
    ax.hist(np.log10(ratio), bins=80, color="C2")
    ax.axvline(np.log10(np.median(ratio)), color="k", lw=1.5, label=f"median ratio {np.median(ratio):.0f}x")
    ax.set(
        title=f"(b) Trained VAE ($z$_dim = 10): encoder weights x 4 test digits ({len(ratio):,})",
        xlabel="$\\log_{10}$ (score-function variance / pathwise variance), per weight",
        ylabel="weights",
    )
    ax.title.set_fontsize(9.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, "gradient_variance.png")


# ---- reverse KL: mode-seeking, variance-underestimating -------------------------------------


def ellipse(ax, mean, cov, **kw):
    """The 1-standard-deviation ellipse of N(mean, cov)."""
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * np.pi, 200)
    pts = mean[:, None] + vecs @ (np.sqrt(vals)[:, None] * np.stack([np.cos(t), np.sin(t)]))
    ax.plot(pts[0], pts[1], **kw)


def reverse_kl(numbers: dict) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    # (a) a 2-D posterior with strongly correlated coordinates: two nearly parallel columns of W
    W = torch.tensor([[1.0, 0.8], [0.9, 1.0], [0.5, 0.55]], dtype=F64)
    model = LinearGaussianModel(W, torch.zeros(3, dtype=F64), 0.5)
    x = torch.tensor([[1.2, 1.0, 0.6]], dtype=F64)
    post = model.posterior(x)
    mean, cov = (
        post.loc[0].numpy(),
        post.covariance_matrix[0].numpy() if post.covariance_matrix.dim() == 3 else post.covariance_matrix.numpy(),
    )
    precision = model.posterior_precision().numpy()
    reverse_var = 1 / np.diag(precision)  # argmin over diagonal q of KL(q || p): variances 1 / Lambda_jj
    forward_var = np.diag(cov)  # argmin of KL(p || q): the marginal variances
    # the same optimum found by SVI: a diagonal guide fitted to this one datapoint
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = LinearGaussianGuide(3, 2).double()
    steps = 1500
    svi = SVI(model.model, guide, pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.01 ** (1 / steps)}), Trace_ELBO())
    for _ in range(steps):
        svi.step(x)
    with torch.no_grad():
        q_loc, q_tril = guide.loc_scale_tril(x)
    svi_var = torch.diagonal(q_tril[0] @ q_tril[0].T).numpy()
    correlation = cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1])
    numbers.update(
        posterior_correlation=float(correlation),
        reverse_sd=np.sqrt(reverse_var).tolist(),
        marginal_sd=np.sqrt(forward_var).tolist(),
        svi_sd=np.sqrt(svi_var).tolist(),
        svi_mean_error=float(np.abs(q_loc[0].numpy() - mean).max()),
    )
    assert np.allclose(np.sqrt(svi_var), np.sqrt(reverse_var), rtol=0.05), (svi_var, reverse_var)
    ax = axes[0]
    ellipse(ax, mean, cov, color="k", lw=2, label="exact posterior $p(z \\mid x)$ (Bayes' rule)")
    ellipse(
        ax,
        mean,
        np.diag(reverse_var),
        color="C3",
        lw=2,
        label="best diagonal $q$ for KL($q\\,\\|\\,p$): variances $1/\\Lambda_{jj}$",
    )
    ellipse(ax, q_loc[0].numpy(), np.diag(svi_var), color="C1", lw=1.5, ls="--", label="diagonal $q$ fitted by SVI")
    ellipse(
        ax,
        mean,
        np.diag(forward_var),
        color="C0",
        lw=1.5,
        ls=":",
        label="best diagonal $q$ for KL($p\\,\\|\\,q$): marginal variances",
    )
    ax.plot(*mean, "k+", ms=10)
    ax.set(
        aspect="equal",
        xlabel="$z_1$",
        ylabel="$z_2$",
        title=f"(a) Linear-Gaussian posterior, correlation {correlation:.2f}: 1-sd ellipses",
    )
    ax.title.set_fontsize(9.5)
    ax.legend(fontsize=7.5, loc="lower left")
    ax.grid(alpha=0.3)

    # (b) two modes: the Gaussian q minimizing KL(q || p) sits on one, KL(p || q)'s covers both
    grid = torch.linspace(-7, 7, 4001, dtype=F64)
    dz = grid[1] - grid[0]
    mix = dist.MixtureSameFamily(
        dist.Categorical(torch.tensor([0.5, 0.5], dtype=F64)),
        dist.Normal(torch.tensor([-2.0, 2.0], dtype=F64), torch.tensor([0.6, 0.6], dtype=F64)),
    )
    log_p = mix.log_prob(grid)
    loc = torch.tensor(1.0, dtype=F64, requires_grad=True)  # started on the right: it settles on that mode
    log_scale = torch.tensor(math.log(0.5), dtype=F64, requires_grad=True)
    opt = torch.optim.Adam([loc, log_scale], lr=0.02)
    for _ in range(2000):  # KL(q || p) by quadrature on the grid, minimized over (loc, log scale)
        q = dist.Normal(loc, log_scale.exp())
        kl = (q.log_prob(grid).exp() * (q.log_prob(grid) - log_p)).sum() * dz
        opt.zero_grad()
        kl.backward()
        opt.step()
    fwd_loc, fwd_scale = 0.0, math.sqrt(0.6**2 + 2.0**2)  # KL(p || q) over Gaussians: match p's moments
    q_fwd = dist.Normal(torch.tensor(fwd_loc, dtype=F64), torch.tensor(fwd_scale, dtype=F64))
    kl_fwd_q = (q_fwd.log_prob(grid).exp() * (q_fwd.log_prob(grid) - log_p)).sum() * dz  # KL(q||p) of that q
    numbers.update(
        mode_seeking_loc=loc.item(),
        mode_seeking_sd=log_scale.exp().item(),
        reverse_kl_nats=kl.item(),
        moment_matched_reverse_kl_nats=kl_fwd_q.item(),
    )
    assert kl.item() < kl_fwd_q.item()
    ax = axes[1]
    ax.fill_between(grid, log_p.exp(), color="k", alpha=0.15, label="$p(z)$: two modes")
    ax.plot(
        grid,
        dist.Normal(loc, log_scale.exp()).log_prob(grid).exp().detach(),
        color="C3",
        lw=2,
        label=f"argmin KL($q\\,\\|\\,p$): N({loc.item():.2f}, {log_scale.exp().item():.2f}²)",
    )
    ax.plot(
        grid,
        dist.Normal(fwd_loc, fwd_scale).log_prob(grid).exp(),
        color="C0",
        lw=1.5,
        ls=":",
        label=f"argmin KL($p\\,\\|\\,q$): N(0, {fwd_scale:.2f}²)",
    )
    ax.set(xlabel="$z$", ylabel="density", title="(b) Gaussian $q$ fitted to a two-mode $p$: reverse KL picks one mode")
    ax.title.set_fontsize(9.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, "reverse_kl.png")


# ---- approximation and amortization gaps ----------------------------------------------------


def elbo_of(vae: VAE, x, loc, scale, particles: int):
    """Per-datapoint ELBO of q = N(loc, diag scale^2): recon by `particles` draws, KL exact."""
    q = dist.Normal(loc, scale).to_event(1)
    z = q.rsample((particles,))
    recon = vae.decode(z).log_prob(x).mean(0)
    kl = torch.distributions.kl_divergence(q, dist.Normal(torch.zeros_like(loc), 1.0).to_event(1))
    return recon - kl


def gaps(vae: VAE, test_x, numbers: dict) -> None:
    x = test_x[:100]
    pyro.set_rng_seed(5)
    with torch.no_grad():
        loc0, scale0 = vae.encoder.encoder(x)
        amortized = elbo_of(vae, x, loc0, scale0, 1000)
    # per-datapoint q*: each digit's own (loc, scale), started at the encoder's and ascended on
    # its ELBO with the decoder fixed (Cremer et al. 2018's "optimal" q within the family)
    loc = loc0.clone().requires_grad_(True)
    raw = torch.log(torch.expm1(scale0)).clone().requires_grad_(True)
    for p in vae.decoder.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([loc, raw], lr=1e-2)
    for _ in range(600):
        loss = -elbo_of(vae, x, loc, torch.nn.functional.softplus(raw) + 1e-6, 16).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in vae.decoder.parameters():
        p.requires_grad_(True)
    loc_star, scale_star = loc.detach(), torch.nn.functional.softplus(raw.detach()) + 1e-6
    with torch.no_grad():
        optimized = elbo_of(vae, x, loc_star, scale_star, 1000)

    def fixed_guide(x, num_data=None):  # q*, row by row (x is the whole 100-digit set here)
        with data_plate(x.shape[0], num_data, x.device):
            pyro.sample("z", dist.Normal(loc_star, scale_star).to_event(1))

    ks = [1, 2, 5, 10, 50, 100, 500, 1000, 5000]
    curve_enc, curve_star = [], []
    with torch.no_grad():
        for k in ks:
            curve_enc.append(
                log_likelihood(vae.model, vae.guide, x, num_samples=k, batch_size=100).log_likelihood.mean().item()
            )
            curve_star.append(
                log_likelihood(vae.model, fixed_guide, x, num_samples=k, batch_size=100).log_likelihood.mean().item()
            )
    with torch.no_grad():  # per digit, L_5000 with q* as proposal (the better one): a lower bound on log p(x)
        log_px_per_digit = log_likelihood(vae.model, fixed_guide, x, num_samples=5000, batch_size=100).log_likelihood
    log_px = log_px_per_digit.mean().item()
    a, o = amortized.mean().item(), optimized.mean().item()
    numbers.update(
        gap_elbo_encoder=a,
        gap_elbo_optimized=o,
        gap_log_px=log_px,
        amortization_gap=o - a,
        approximation_gap=log_px - o,
        lk_encoder=dict(zip(map(str, ks), curve_enc)),
        lk_optimized=dict(zip(map(str, ks), curve_star)),
    )
    amort, approx = optimized - amortized, log_px_per_digit - optimized
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3), gridspec_kw={"width_ratios": [1, 1.4]})
    ax = axes[0]
    bars = [
        ("amortization gap\nELBO($q^*$) − ELBO($q_\\phi$)", amort, "C3"),
        ("approximation gap\n$\\mathcal{L}_{5000}$ − ELBO($q^*$)", approx, "C1"),
    ]
    for i, (_label, gap, colour) in enumerate(bars):
        mean, se = gap.mean().item(), gap.std().item() / math.sqrt(len(gap))
        ax.bar(i, mean, yerr=2 * se, color=colour, alpha=0.8, capsize=6)
        ax.text(i + 0.08, mean, f"{mean:.2f} nats", ha="left", va="bottom", fontsize=9)
    ax.set_xticks(range(2), [b[0] for b in bars])
    ax.set(
        ylabel="nats per digit (mean ± 2 s.e., 100 test digits)",
        title=f"(a) The ELBO's gap, split: {a:.2f} → {o:.2f} → {log_px:.2f} nats",
    )
    ax.title.set_fontsize(9.5)
    ax.grid(alpha=0.3, axis="y")
    ax = axes[1]
    ax.semilogx(ks, curve_enc, "o-", color="C3", label="proposal: encoder's $q_\\phi$")
    ax.semilogx(ks, curve_star, "s-", color="C1", label="proposal: optimized $q^*$")
    ax.set(
        xlabel="$K$ importance samples",
        ylabel="mean $\\log \\hat p(x)$  [nats]",
        title="(b) $\\mathcal{L}_K$ rises with $K$ toward log p(x): the NLL estimate falls",
    )
    ax.title.set_fontsize(9.5)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, "gaps.png")


# ---- the KL term at work: beta, warm-up, active units ---------------------------------------


def collapse(vae1, train_x, test_x, epochs: int, numbers: dict) -> None:
    """Three VAEs with z_dim=10 that differ only in the KL's weight during training."""
    runs = {"β = 1 (the ELBO)": vae1}
    runs["β = 4"], _ = train_vae(10, epochs, train_x, test_x, beta=lambda e: 4.0, name="beta4")
    runs["warm-up: β from 0.1 to 1 over 10 epochs"], _ = train_vae(
        10, epochs, train_x, test_x, beta=lambda e: min(1.0, e / 10), name="warmup"
    )
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    width = 0.27
    for i, (label, vae) in enumerate(runs.items()):
        with torch.no_grad():
            terms = elbo_terms(vae.model, vae.guide, test_x)
            kl_d = kl_per_dimension(vae.model, vae.guide, test_x)
            active = int(active_units(posterior_means(vae.guide, test_x)).sum())
        order = torch.sort(kl_d, descending=True).values
        key = ["beta1", "beta4", "warmup"][i]
        numbers[f"{key}_elbo"], numbers[f"{key}_kl"] = terms.elbo.mean().item(), terms.kl.mean().item()
        numbers[f"{key}_recon"], numbers[f"{key}_active"] = terms.recon.mean().item(), active
        numbers[f"{key}_kl_sorted"] = order.tolist()
        ax.bar(
            np.arange(10) + (i - 1) * width,
            order.numpy(),
            width,
            color=f"C{[0, 3, 2][i]}",
            label=f"{label}: ELBO {terms.elbo.mean():.1f} = {terms.recon.mean():.1f} − {terms.kl.mean():.1f},"
            f" {active} active units",
        )
    ax.set(
        xticks=range(10),
        xlabel="latent dimension, sorted by its KL",
        ylabel="mean KL($q(z_d \\mid x) \\,\\|\\, p(z_d)$)  [nats]",
        title="Where the KL goes: test digits, $z$_dim = 10, 30 epochs each (ELBO in nats, β = 1 for all)",
    )
    ax.title.set_fontsize(9.5)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save(fig, "kl_per_dimension.png")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs-2d", type=int, default=100, help="epochs for the VAE with z_dim=2")
    p.add_argument("--epochs", type=int, default=30, help="epochs for the VAE with z_dim=10")
    args = p.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = load_embedded()
    train_x = data.train_images.reshape(len(data.train_images), -1)
    test_x = binarize(data.test_images.reshape(len(data.test_images), -1), "fixed")
    numbers = {"command": "python docs/make_figures.py", "epochs_2d": args.epochs_2d, "epochs": args.epochs}

    print("VAE with z_dim=2: the example's figures and the manifold", flush=True)
    vae2, history = train_vae(2, args.epochs_2d, train_x, test_x)
    written, not_drawn = plot_all(vae2, history, test_x, data.test_labels, str(OUT))
    assert not not_drawn, not_drawn
    print("  wrote", ", ".join(sorted(written)), flush=True)
    manifold(vae2, "manifold.png")
    numbers["z2_test_elbo"] = history[-1]["test_elbo"]

    print(f"VAE with z_dim=10: gradients and gaps ({time.perf_counter() - start:.0f} s)", flush=True)
    vae10, history10 = train_vae(10, args.epochs, train_x, test_x)
    numbers["z10_test_elbo"] = history10[-1]["test_elbo"]
    print(f"  trained ({time.perf_counter() - start:.0f} s)", flush=True)
    gradient_variance(vae10, test_x, numbers)
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    reverse_kl(numbers)
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    gaps(vae10, test_x, numbers)
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    collapse(vae10, train_x, test_x, args.epochs, numbers)
    numbers["seconds"] = round(time.perf_counter() - start)
    (OUT / "numbers.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"done in {numbers['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
