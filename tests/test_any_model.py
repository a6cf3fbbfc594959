"""Evaluation of any Pyro model and guide (issue 14): free site names, several latent sites.

The two-latent chain z2 -> z1 -> x (HierarchicalLinearGaussianModel) has a closed-form
evidence, posterior and ELBO, so log_likelihood and elbo_terms are checked against exact
numbers; Monte Carlo estimates are compared within 4 standard errors measured from
repeated estimates.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.inference.elbo import elbo_terms
from pyro_vae.inference.evaluate import kl_per_dimension, log_likelihood, posterior_means
from pyro_vae.inference.guide_contract import GuideError, check_guide
from pyro_vae.inference.sites import SiteError
from pyro_vae.models.linear_gaussian import LinearGaussianModel
from pyro_vae.models.linear_gaussian_chain import HierarchicalLinearGaussianModel

F64 = torch.float64
K1, K2, D = 3, 2, 5


def chain(seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=F64)

    return HierarchicalLinearGaussianModel(r(K1, K2), r(K1), 0.7, r(D, K1), r(D), 0.4)


def perturbed_guide(model, seed=5, amount=0.15):
    """The exact posterior guide with every parameter moved: a Gaussian q with a positive gap."""
    guide = model.posterior_guide(name=f"perturbed_{seed}")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(amount * torch.randn(p.shape, generator=g, dtype=F64))
    return guide


def mean_and_stderr(samples):
    samples = torch.stack(samples)
    return samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])


# ---- the two-latent chain: exact answers --------------------------------------------------------


def test_log_likelihood_of_the_chain_is_its_log_evidence_with_k_32():
    model = chain()
    x = model.sample(11, generator=1)
    result = log_likelihood(model.model, model.posterior_guide(), x, num_samples=32, batch_size=4)
    error = (result.log_likelihood - model.log_evidence(x)).abs().max().item()
    assert error < 1e-6  # measured 1.2e-14: every weight p(x, z1, z2) / q(z1, z2 | x) equals p(x)
    assert torch.allclose(result.ess, torch.full((11,), 32.0, dtype=F64))
    # the weights need both latent sites: a guide with an imperfect q(z2|z1) only bounds log p(x)
    torch.manual_seed(0)
    poor = log_likelihood(model.model, perturbed_guide(model), x, num_samples=32)
    assert (poor.log_likelihood - model.log_evidence(x)).abs().max() > 1e-3


def test_closed_form_decomposition_elbo_plus_gap_is_log_evidence():
    model = chain(seed=1)
    x = model.sample(9, generator=2)
    for guide in (perturbed_guide(model, seed=3), perturbed_guide(model, seed=4, amount=0.5)):
        parts = model.decompose(guide, x)
        error = (parts.elbo + parts.kl_posterior - parts.log_evidence).abs().max().item()
        assert error < 1e-8  # measured 2e-13
        assert (parts.kl_posterior > 0).all() and (parts.elbo < parts.log_evidence).all()
        # the gap is torch's own KL between the joint Gaussians
        m, S = guide.joint(x)
        q = dist.MultivariateNormal(m, covariance_matrix=S)
        assert torch.allclose(parts.kl_posterior, torch.distributions.kl_divergence(q, model.posterior(x)), atol=1e-9)
    exact = model.decompose(model.posterior_guide(), x)
    assert exact.kl_posterior.abs().max() < 1e-9
    assert (exact.elbo - exact.log_evidence).abs().max() < 1e-9


def test_elbo_terms_at_the_exact_posterior_is_log_evidence_for_every_sample():
    model = chain(seed=2)
    x = model.sample(7, generator=3)
    terms = elbo_terms(model.model, model.posterior_guide(), x, analytic_kl=False)
    assert list(terms.kl_sites) == ["z2", "z1"]  # the model's order
    assert (terms.elbo - model.log_evidence(x)).abs().max() < 1e-8  # measured 7e-15
    assert torch.allclose(terms.kl, terms.kl_sites["z1"] + terms.kl_sites["z2"], atol=1e-12)
    assert torch.allclose(terms.elbo, terms.recon - terms.kl, atol=1e-12)


def diagonal_guide(model, seed=6, amount=0.15):
    """A bottom-up guide with diagonal Normal layers, q(z1|x) q(z2|z1), each Normal(...).to_event(1),
    so that torch knows KL(q(z_l|.) || p(z_l|.)) in closed form at both sites; returned with the
    HierarchicalLinearGaussianGuide of the same q (for its closed forms)."""
    params = perturbed_guide(model, seed, amount)
    with torch.no_grad():
        for raw in (params.tril1, params.tril2):
            raw.copy_(torch.diag_embed(raw.diagonal()))  # L diagonal: q factorizes over coordinates

    def guide(x, num_data=None):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x @ params.C.T + params.c, params.scale_tril1().diagonal()).to_event(1))
            pyro.sample("z2", dist.Normal(z1 @ params.E.T + params.e, params.scale_tril2().diagonal()).to_event(1))

    return guide, params


def test_analytic_kl_only_where_the_model_parents_come_first_in_the_guide():
    from pyro_vae.inference.elbo import analytic_kl_allowed

    # a bottom-up guide: z2's model parents (none) come first; z1's parent z2 comes after z1
    assert analytic_kl_allowed(["z2", "z1"], ["z1", "z2"]) == {"z2": True, "z1": False}
    assert analytic_kl_allowed(["z2", "z1"], ["z2", "z1"]) == {"z2": True, "z1": True}
    assert analytic_kl_allowed(["z"], ["z"]) == {"z": True}


@pytest.mark.parametrize("analytic_kl", [False, True], ids=["mc-kl", "analytic-kl"])
def test_elbo_terms_per_site_match_the_closed_forms(analytic_kl):
    """recon, KL(z1) and KL(z2) of elbo_terms average to the closed forms. With analytic_kl
    the z2 term is a closed form given z1 (lower spread), while the z1 term must stay Monte
    Carlo: p(z1|z2) depends on z1 through q(z2|z1), and the closed form KL(q(z1|x) || p(z1|z2))
    at a sampled z2 would be biased."""
    model = chain(seed=3)
    x = model.sample(6, generator=4)
    guide, params = diagonal_guide(model)
    exact = model.decompose(params, x)
    torch.manual_seed(0)
    with torch.no_grad(), pyro.validation_enabled(False):
        draws = [elbo_terms(model.model, guide, x, analytic_kl=analytic_kl) for _ in range(300)]
        torch.manual_seed(0)
        mc = [elbo_terms(model.model, guide, x, analytic_kl=False) for _ in range(300)] if analytic_kl else draws
    for key, truth in (("recon", exact.recon), ("z1", exact.kl_z1), ("z2", exact.kl_z2), ("elbo", exact.elbo)):
        values = [d.recon if key == "recon" else d.elbo if key == "elbo" else d.kl_sites[key] for d in draws]
        mean, stderr = mean_and_stderr(values)
        assert ((mean - truth).abs() < 4 * stderr + 1e-9).all(), key
    spread = {key: torch.stack([d.kl_sites[key] for d in runs]).std(0) for key in ("z1", "z2") for runs in [draws]}
    mc_spread = {key: torch.stack([d.kl_sites[key] for d in mc]).std(0) for key in ("z1", "z2")}
    assert torch.equal(spread["z1"], mc_spread["z1"])  # same noise, z1 Monte Carlo either way
    if analytic_kl:
        assert (spread["z2"] < 0.5 * mc_spread["z2"]).all()
    else:
        assert torch.equal(spread["z2"], mc_spread["z2"])


def test_contract_checks_every_latent_site_of_the_chain():
    model = chain()
    x = model.sample(4, generator=0)
    check_guide(model.model, model.posterior_guide(), x)

    def only_z1(x, num_data=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z1", dist.Normal(torch.zeros(x.shape[0], K1, dtype=F64), 1.0).to_event(1))

    def z2_of_wrong_size(x, num_data=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z1", dist.Normal(torch.zeros(x.shape[0], K1, dtype=F64), 1.0).to_event(1))
            pyro.sample("z2", dist.Normal(torch.zeros(x.shape[0], K1, dtype=F64), 1.0).to_event(1))

    def z2_outside_the_plate(x, num_data=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z1", dist.Normal(torch.zeros(x.shape[0], K1, dtype=F64), 1.0).to_event(1))
        pyro.sample("z2", dist.Normal(torch.zeros(x.shape[0], K2, dtype=F64), 1.0).to_event(1))

    with pytest.raises(
        GuideError,
        match=r"^rule 1 \(site 'z2'\): the guide has no latent sample site 'z2' \(its latent sites: \['z1'\]\)",
    ):
        check_guide(model.model, only_z1, x)
    with pytest.raises(
        GuideError,
        match=r"^rule 3 \(event shape\): site 'z2' has event shape \(3,\), expected \(2,\) \(the model's event shape at site 'z2'\)",
    ):
        check_guide(model.model, z2_of_wrong_size, x)
    with pytest.raises(GuideError, match=r"^rule 2 \(plate 'data'\): site 'z2' is not inside plate 'data'"):
        check_guide(model.model, z2_outside_the_plate, x)
    with pytest.raises(GuideError, match=r"z_dim=3 was given but the model has 2 latent sites"):
        check_guide(model.model, model.posterior_guide(), x, 3)
    with pytest.raises(SiteError, match=r"does not sample the model's latent sites \['z2'\]"):
        elbo_terms(model.model, only_z1, x)


def test_posterior_means_and_kl_per_dimension_choose_a_site():
    model = chain()
    x = model.sample(8, generator=0)
    guide = model.posterior_guide()
    means = posterior_means(guide, x, batch_size=3, site="z1")
    m, _ = guide.joint(x)
    assert torch.allclose(means, m[:, :K1])
    assert posterior_means(guide, x, site="z2").shape == (8, K2)
    with pytest.raises(SiteError, match=r"samples 2 latent sites \['z1', 'z2'\]; pass site="):
        posterior_means(guide, x)
    with pytest.raises(ValueError, match=r"factorized Normal guide; this guide's q\(z2\|x\) is MultivariateNormal"):
        kl_per_dimension(model.model, guide, x, site="z2")


# ---- Pyro's tutorial names: "latent", "obs" -----------------------------------------------------


class TutorialNamed:
    """Probabilistic PCA written the way Pyro's VAE tutorial names its sites: the code is
    "latent", the image "obs", the plate over datapoints is called ``plate_name``."""

    def __init__(self, lg: LinearGaussianModel, plate_name: str = "data", inner_plate: bool = False):
        self.lg, self.plate_name, self.inner_plate = lg, plate_name, inner_plate

    def model(self, x, num_data=None):
        with pyro.plate(self.plate_name, x.shape[0]):
            z = pyro.sample("latent", self.lg.prior().expand([x.shape[0]]))
            if self.inner_plate:  # the pixels as a plate inside the data plate, event shape ()
                with pyro.plate("pixels", self.lg.x_dim, dim=-2):
                    pyro.sample("obs", dist.Normal((z @ self.lg.W.T + self.lg.b).T, self.lg.sigma), obs=x.T)
            else:
                pyro.sample("obs", self.lg.likelihood(z), obs=x)

    def exact_guide(self, x, num_data=None):
        with pyro.plate(self.plate_name, x.shape[0]):
            pyro.sample("latent", self.lg.posterior(x))

    def diagonal_guide(self, x, num_data=None):
        post = self.lg.posterior(x)
        with pyro.plate(self.plate_name, x.shape[0]):
            pyro.sample("latent", dist.Normal(post.loc + 0.1, 0.8 * post.variance.sqrt()).to_event(1))


@pytest.mark.parametrize("plate_name", ["data", "batch"])
def test_tutorial_site_names_work_in_log_likelihood_and_elbo_terms(plate_name):
    g = torch.Generator().manual_seed(0)
    lg = LinearGaussianModel(torch.randn(6, 3, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64), 0.5)
    x = lg.sample(10, generator=1)
    tutorial = TutorialNamed(lg, plate_name)
    truth = lg.log_evidence(x)

    exact = log_likelihood(tutorial.model, tutorial.exact_guide, x, num_samples=32)
    assert (exact.log_likelihood - truth).abs().max() < 1e-6  # measured 1e-14

    terms = elbo_terms(tutorial.model, tutorial.exact_guide, x, analytic_kl=False)
    assert list(terms.kl_sites) == ["latent"]
    assert (terms.elbo - truth).abs().max() < 1e-8

    # a diagonal guide: the KL of site "latent" is analytic and equals the closed form
    post = lg.posterior(x)
    scale_tril = torch.diag_embed(0.8 * post.variance.sqrt())
    closed = lg.analytic_elbo_terms(x, post.loc + 0.1, scale_tril)
    torch.manual_seed(0)
    diagonal = elbo_terms(tutorial.model, tutorial.diagonal_guide, x, num_particles=1)
    assert torch.allclose(diagonal.kl_sites["latent"], closed.kl, atol=1e-10)
    with torch.no_grad(), pyro.validation_enabled(False):
        draws = [elbo_terms(tutorial.model, tutorial.diagonal_guide, x).recon for _ in range(200)]
    mean, stderr = mean_and_stderr(draws)
    assert ((mean - closed.recon).abs() < 4 * stderr).all()


def test_a_plate_inside_the_data_plate_and_the_plate_named_explicitly():
    """Pixels as a plate of their own (dim -2) inside a data plate at dim -1: log-densities
    are summed over it; naming the data plate ``plate=`` picks it over the outermost."""
    g = torch.Generator().manual_seed(1)
    lg = LinearGaussianModel(torch.randn(4, 2, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64), 0.6)
    x = lg.sample(5, generator=2)
    tutorial = TutorialNamed(lg, "batch", inner_plate=True)
    terms = elbo_terms(tutorial.model, tutorial.exact_guide, x, analytic_kl=False)
    assert terms.elbo.shape == (5,)
    assert (terms.elbo - lg.log_evidence(x)).abs().max() < 1e-8
    named = elbo_terms(tutorial.model, tutorial.exact_guide, x, analytic_kl=False, plate="batch")
    assert (named.elbo - lg.log_evidence(x)).abs().max() < 1e-8
    with pytest.raises(SiteError, match=r"not inside a plate named 'images' \(its plates: \['batch', 'pixels'\]\)"):
        elbo_terms(tutorial.model, tutorial.exact_guide, x, plate="images")


def test_models_that_cannot_be_weighted_per_datapoint_are_named():
    def no_plate(x, num_data=None):
        pyro.sample("latent", dist.Normal(torch.zeros(x.shape[0], 2, dtype=F64), 1.0).to_event(2))
        pyro.sample("obs", dist.Normal(torch.zeros_like(x), 1.0).to_event(2), obs=x)

    def guide(x, num_data=None):
        pyro.sample("latent", dist.Normal(torch.zeros(x.shape[0], 2, dtype=F64), 1.0).to_event(2))

    x = torch.zeros(3, 4, dtype=F64)
    with pytest.raises(SiteError, match=r"observed site 'obs' is inside no plate.*pyro\.plate\(\"data\", B\)"):
        elbo_terms(no_plate, guide, x)
    with pytest.raises(SiteError, match=r"observed site 'obs' is inside no plate"):
        log_likelihood(no_plate, guide, x, num_samples=4)

    def global_latent(x, num_data=None):
        w = pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(torch.zeros_like(x) + w[..., None], 1.0).to_event(1), obs=x)

    def global_guide(x, num_data=None):
        pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))

    with pytest.raises(SiteError, match=r"site 'w' of the model is not inside plate 'data'"):
        log_likelihood(global_latent, global_guide, x, num_samples=4)


# ---- the KL weight beta on every latent site --------------------------------------------------


@pytest.mark.parametrize("sites", [None, ("z1",)], ids=["all-latent", "only-z1"])
def test_kl_weighted_scales_the_kl_of_every_latent_site_exactly(sites):
    from pyro import poutine
    from pyro.infer import Trace_ELBO

    from pyro_vae.inference.importance import log_importance_weights
    from pyro_vae.inference.objectives import kl_weighted

    model = chain(seed=4)
    x = model.sample(5, generator=6)
    guide = perturbed_guide(model, seed=7)
    beta = 0.3
    p, q = kl_weighted(model.model, beta, sites), kl_weighted(guide, beta, sites)
    weighted = {"z1", "z2"} if sites is None else set(sites)
    torch.manual_seed(0)
    guide_tr = poutine.trace(q).get_trace(x, num_data=20)
    model_tr = poutine.trace(poutine.replay(p, trace=guide_tr)).get_trace(x, num_data=20)
    for name in ("z1", "z2"):  # the plate's N/B = 4 times beta where weighted
        expected = 4 * (beta if name in weighted else 1.0)
        assert guide_tr.nodes[name]["scale"] == pytest.approx(expected)
        assert model_tr.nodes[name]["scale"] == pytest.approx(expected)
    assert model_tr.nodes["x"]["scale"] == pytest.approx(4.0)

    # Trace_ELBO's loss at the same noise: -(recon - sum over weighted sites of beta KL_l - others)
    torch.manual_seed(1)
    terms = elbo_terms(model.model, guide, x, analytic_kl=False)
    torch.manual_seed(1)
    loss = Trace_ELBO().loss(p, q, x)
    kl = sum((beta if name in weighted else 1.0) * terms.kl_sites[name] for name in ("z1", "z2"))
    assert loss == pytest.approx(-(terms.recon - kl).sum().item(), abs=1e-9)

    # IWAE's weights: log p(x|z) + beta (log p(z) - log q(z|x)) per particle
    torch.manual_seed(2)
    log_w, _ = log_importance_weights(p, q, x, num_particles=3, relative_scale=True)
    torch.manual_seed(2)
    plain, _ = log_importance_weights(model.model, guide, x, num_particles=3)
    torch.manual_seed(2)
    from pyro_vae.inference.importance import _vectorize

    g_tr = poutine.trace(_vectorize(guide, 3)).get_trace(x)
    m_tr = poutine.trace(poutine.replay(_vectorize(model.model, 3), trace=g_tr)).get_trace(x)
    recon = m_tr.nodes["x"]["fn"].log_prob(m_tr.nodes["x"]["value"])
    parts = {
        n: m_tr.nodes[n]["fn"].log_prob(m_tr.nodes[n]["value"]) - g_tr.nodes[n]["fn"].log_prob(g_tr.nodes[n]["value"])
        for n in ("z1", "z2")
    }
    assert torch.allclose(plain, recon + parts["z1"] + parts["z2"], atol=1e-10)
    expected = recon + sum((beta if n in weighted else 1.0) * parts[n] for n in ("z1", "z2"))
    assert torch.allclose(log_w, expected, atol=1e-10)

    # beta is mutable (KL warm-up): at 1 the functions are the plain model and guide
    p.beta = q.beta = 1.0
    torch.manual_seed(1)
    assert Trace_ELBO().loss(p, q, x) == pytest.approx(-terms.elbo.sum().item(), abs=1e-9)


class TutorialShapedVAE(torch.nn.Module):
    """A VAE shaped like the one of Pyro's tutorial: an MLP encoder and decoder, the code at site
    "latent", Bernoulli pixels at site "obs", the plate "data"; nothing of pyro_vae inside."""

    def __init__(self, z_dim=3, hidden=16):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = torch.nn.Sequential(
            torch.nn.Linear(784, hidden), torch.nn.Softplus(), torch.nn.Linear(hidden, 2 * z_dim)
        )
        self.decoder = torch.nn.Sequential(
            torch.nn.Linear(z_dim, hidden), torch.nn.Softplus(), torch.nn.Linear(hidden, 784)
        )

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def moments(self, x):
        loc, raw = self.encoder(x).chunk(2, -1)
        return loc, torch.nn.functional.softplus(raw) + 1e-3

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("latent", dist.Normal(*self.moments(x)).to_event(1))


def test_a_tutorial_shaped_vae_is_evaluated_without_renaming_anything():
    torch.manual_seed(0)
    vae = TutorialShapedVAE()
    x = torch.bernoulli(torch.full((6, 784), 0.3), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        terms = elbo_terms(vae.model, vae.guide, x)
        loc, scale = vae.moments(x)
        closed = 0.5 * (scale.pow(2) + loc.pow(2) - 1 - 2 * scale.log()).sum(-1)  # KL(N(loc, scale^2) || N(0, I))
        assert torch.allclose(terms.kl_sites["latent"], closed, atol=1e-5) and torch.allclose(
            terms.kl, closed, atol=1e-5
        )
        elbo = elbo_terms(vae.model, vae.guide, x, num_particles=100).elbo
    result = log_likelihood(vae.model, vae.guide, x, num_samples=100)
    assert torch.isfinite(result.log_likelihood).all()
    assert (result.log_likelihood > elbo - 4 * result.stderr - 0.1).all()
    per_dim = kl_per_dimension(vae.model, vae.guide, x)
    assert per_dim.sum().item() == pytest.approx(closed.mean().item(), rel=1e-5)
    assert posterior_means(vae.guide, x).shape == (6, 3)


def test_contract_accepts_a_latent_shared_by_all_datapoints_when_the_guide_shares_it_too():
    def model(x, num_data=None):
        w = pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(w.expand(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand_as(x), 1.0).to_event(1), obs=x)

    def guide(x, num_data=None):
        pyro.sample("w", dist.Normal(torch.tensor(0.1, dtype=F64), 0.5))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2, dtype=F64), 1.0).to_event(1))

    def guide_with_w_per_datapoint(x, num_data=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("w", dist.Normal(torch.zeros(x.shape[0], dtype=F64), 1.0))
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2, dtype=F64), 1.0).to_event(1))

    x = torch.zeros(3, 4, dtype=F64)
    check_guide(model, guide, x)
    with pytest.raises(GuideError, match=r"^rule 3 \(batch shape\): site 'w' has batch shape \(2,\)"):
        check_guide(model, guide_with_w_per_datapoint, x)
