"""Built-in guides (sites, shapes, densities, training on MNIST) and the guide contract."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_vae import VAE, Trainer
from pyro_vae.inference.guide_contract import GuideError, check_guide
from pyro_vae.inference.importance import log_importance_weights
from pyro_vae.models.guides import (
    GUIDES,
    AmortizedGuide,
    ConvolutionalGuide,
    DiagonalNormalGuide,
    FullCovarianceGuide,
    IAFGuide,
    make_guide,
)

B, Z, H = 5, 4, 32

#: (id, guide class, extra options): every built-in family, the low-rank variant too.
CASES = [
    ("diagonal", DiagonalNormalGuide, {}),
    ("conv", ConvolutionalGuide, {"channels": (16, 32)}),
    ("full_covariance", FullCovarianceGuide, {}),
    ("low_rank", FullCovarianceGuide, {"rank": 2}),
    ("iaf", IAFGuide, {}),
]
IDS = [case[0] for case in CASES]


def binary_batch(b=B, seed=1):
    return torch.bernoulli(torch.full((b, 784), 0.3), generator=torch.Generator().manual_seed(seed))


def build(cls, options, z_dim=Z, hidden=H):
    return cls(784, z_dim, (hidden,), **options)


@pytest.mark.parametrize("_, cls, options", CASES, ids=IDS)
def test_guide_sites_shapes_plate_and_contract(_, cls, options):
    guide = build(cls, options)
    vae = VAE(z_dim=Z, hidden_dims=(16,), guide=guide)
    x = binary_batch()
    trace = poutine.trace(vae.guide).get_trace(x.reshape(B, 1, 28, 28), num_data=50)
    site = trace.nodes["z"]
    fn = site["fn"]
    assert fn.batch_shape == (B,) and fn.event_shape == (Z,) and fn.has_rsample
    assert site["value"].shape == (B, Z) and torch.isfinite(fn.log_prob(site["value"])).all()
    (frame,) = [f for f in site["cond_indep_stack"] if f.name == "data"]
    assert frame.dim == -1 and frame.size == B and frame.full_size == 50
    # every trainable parameter is a Pyro param, and the guide is saved with the VAE
    params = {id(s["value"]) for s in trace.nodes.values() if s["type"] == "param"}
    assert all(id(p) in params for p in guide.parameters())
    assert {id(p) for p in guide.parameters()} <= {id(p) for p in vae.parameters()}
    check_guide(vae.model, guide, x, Z)
    # vectorized particles (IWAE, importance-sampled log-likelihood) broadcast through the guide
    log_w, _ = log_importance_weights(vae.model, vae.guide, x, num_particles=3)
    assert log_w.shape == (3, B) and torch.isfinite(log_w).all()


@pytest.fixture(scope="module")
def mnist_subset(mnist):
    return mnist.train_images[:2000], mnist.test_images[:500]


@pytest.mark.parametrize("_, cls, options", CASES, ids=IDS)
def test_guide_trains_a_vae_on_real_mnist(_, cls, options, mnist_subset):
    train, test = mnist_subset
    guide = build(cls, options, z_dim=8, hidden=128)
    vae = VAE(z_dim=8, hidden_dims=(128,), guide=guide)
    trainer = Trainer(vae, lr=3e-3, seed=0)
    test_x = trainer.prepare_test(test)
    before = trainer.evaluate(test_x)
    for _epoch in range(10):  # 200 Adam steps on minibatches of 100 dynamically binarized digits
        trainer.train_epoch(train, batch_size=100)
    after = trainer.evaluate(test_x)
    print(f"{cls.__name__}{options}: test ELBO {before['elbo']:.1f} -> {after['elbo']:.1f} nats")
    assert before["elbo"] < -450  # an untrained decoder: about 784 ln 2 = 543 nats
    # A decoder trained behind an untrained (or unregistered) guide reaches about -202 nats
    # here, its KL a few nats; an encoder that learned passes information through z.
    assert after["elbo"] > -175 and after["kl"] > 5
    if isinstance(guide, IAFGuide):  # the trained flow is not the identity
        q = guide.distribution(test_x[:50])
        z0 = q.base_dist.sample()
        z = z0
        for t in q.transforms:
            z = t(z)
        log_det = q.base_dist.log_prob(z0) - q.log_prob(z)
        assert log_det.abs().mean() > 0.1


def test_iaf_log_density_is_the_change_of_variables():
    torch.manual_seed(0)
    guide = IAFGuide(784, Z, (H,), num_flows=3)
    x = binary_batch()
    q = guide.distribution(x)
    z0 = q.base_dist.rsample()

    def flow(z):
        for t in q.transforms:
            z = t(z)
        return z

    z = flow(z0)
    # log|det dz/dz0| by autograd: the batch Jacobian is block diagonal, one block per datapoint
    jac = torch.autograd.functional.jacobian(flow, z0.detach())
    log_det = torch.stack([torch.linalg.slogdet(jac[i, :, i, :])[1] for i in range(B)])
    expected = q.base_dist.log_prob(z0) - log_det
    assert torch.allclose(q.log_prob(z), expected, atol=1e-4)  # own sample: the transforms' cache
    assert torch.allclose(q.log_prob(z.detach().clone()), expected, atol=1e-4)  # cache miss: inversion
    # the flow is not the identity: it moves z and its Jacobian has |det| != 1
    assert (z - z0).abs().max() > 1e-2 and log_det.abs().min() > 1e-3
    # the random orderings (permutations, MADE masks) are state: a reloaded guide is the same q
    torch.manual_seed(1)
    reloaded = IAFGuide(784, Z, (H,), num_flows=3)
    assert not torch.allclose(reloaded.distribution(x).log_prob(z.detach()), expected, atol=1e-2)
    reloaded.load_state_dict(guide.state_dict())
    assert torch.allclose(reloaded.distribution(x).log_prob(z.detach()), expected, atol=1e-4)


def test_iaf_density_depends_on_the_flow_weights_and_trace_elbo_uses_its_own_sample():
    torch.manual_seed(0)
    guide = IAFGuide(784, Z, (H,))
    x = binary_batch()
    trace = poutine.trace(guide).get_trace(x)
    fn, z = trace.nodes["z"]["fn"], trace.nodes["z"]["value"]
    # the trace scores the guide's own sample through the cache, and it agrees with inversion
    assert torch.allclose(fn.log_prob(z), fn.log_prob(z.detach().clone()), atol=1e-4)
    density = guide.distribution(x).log_prob(z.detach())
    with torch.no_grad():
        for p in guide.flows.parameters():
            p.add_(0.5 * torch.randn_like(p))
    changed = guide.distribution(x).log_prob(z.detach())
    assert (density - changed).abs().max() > 1e-2
    # one Trace_ELBO step moves the flow's weights
    vae = VAE(z_dim=Z, hidden_dims=(16,), guide=guide)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    before = [p.detach().clone() for p in guide.flows.parameters()]
    assert torch.isfinite(torch.tensor(svi.step(x)))
    assert any(not torch.equal(a, b) for a, b in zip(before, guide.flows.parameters()))


def test_full_covariance_scale_tril_and_correlations():
    guide = FullCovarianceGuide(784, Z, (H,))
    x = binary_batch()
    q = guide.distribution(x)
    L = q.scale_tril
    assert L.shape == (B, Z, Z)
    assert torch.equal(L, L.tril()) and (L.diagonal(dim1=-2, dim2=-1) > 0).all()
    rows, cols = torch.tril_indices(Z, Z, offset=-1)
    assert (L[:, rows, cols] == 0).all()  # starts diagonal: a broad random L leads to collapse

    # The entries below the diagonal are free parameters: one SVI step makes q correlated.
    vae = VAE(z_dim=Z, hidden_dims=(16,), guide=guide)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    svi.step(x)
    q = guide.distribution(x)
    L = q.scale_tril
    assert L[:, rows, cols].abs().min() > 0
    cov = q.covariance_matrix
    assert torch.allclose(cov, L @ L.transpose(-1, -2), atol=1e-6)
    std = cov.diagonal(dim1=-2, dim2=-1).sqrt()
    corr = cov / (std[..., :, None] * std[..., None, :])
    assert corr.tril(-1).abs().max() > 1e-3

    low_rank = FullCovarianceGuide(784, Z, (H,), rank=2).distribution(binary_batch())
    assert isinstance(low_rank, dist.LowRankMultivariateNormal) and low_rank.cov_factor.shape == (B, Z, 2)
    off_diagonal = low_rank.covariance_matrix.tril(-1).abs()
    assert (low_rank.cov_diag > 0).all() and 1e-4 < off_diagonal.max() < 0.1  # small, not the W=0 saddle


def test_make_guide_and_bad_options():
    assert set(GUIDES) == {"diagonal", "conv", "full_covariance", "iaf"}
    for name, cls in GUIDES.items():
        guide = make_guide(name, 784, Z, hidden_dims=(H,), name_prefix="mine")
        assert type(guide) is cls and isinstance(guide, AmortizedGuide) and guide.name == "mine.guide"
    guide = make_guide("diagonal", 784, Z, hidden_dims=(H,))
    guide(binary_batch())
    assert "vae.guide$$$encoder.net.0.weight" in pyro.get_param_store().keys()
    with pytest.raises(ValueError, match="unknown guide 'flow'.*conv.*diagonal.*full_covariance.*iaf"):
        make_guide("flow", 784, Z)
    with pytest.raises(ValueError, match=r"x_dim=100 does not match image_shape=\(1, 28, 28\)"):
        ConvolutionalGuide(100, Z)
    with pytest.raises(ValueError, match="unknown activation") as raised:
        IAFGuide(784, Z, activation="swish")
    assert raised.value.settings == ("activation",)
    # the convolutions' nonlinearity is its own setting, so a front end names the right option
    with pytest.raises(ValueError, match="unknown activation 'swish'") as raised:
        ConvolutionalGuide(784, Z, conv_activation="swish")
    assert raised.value.settings == ("conv_activation",)
    with pytest.raises(ValueError, match=r"unknown activation \['elu'\]"):
        FullCovarianceGuide(784, Z, activation=["elu"])
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        FullCovarianceGuide(784, Z, rank=0)


# ---- the guide contract: one bad guide per rule ------------------------------------------------


def normal(x, z_dim=Z):
    return dist.Normal(torch.zeros(x.shape[0], z_dim), torch.ones(x.shape[0], z_dim))


def plate(x, num_data):
    """The data plate as the model builds it; each bad guide below breaks one rule only."""
    return pyro.plate("data", num_data or x.shape[0], subsample=torch.arange(x.shape[0]))


def no_z(x, num_data=None):
    with plate(x, num_data):
        pyro.sample("code", normal(x).to_event(1))


def no_to_event(x, num_data=None):
    pyro.sample("z", normal(x))


def no_to_event_in_plate(x, num_data=None):
    with plate(x, num_data):
        pyro.sample("z", normal(x))


def one_for_the_batch(x, num_data=None):
    pyro.sample("z", dist.Normal(torch.zeros(Z), 1.0).to_event(1))


def outside_the_plate(x, num_data=None):
    pyro.sample("z", normal(x).to_event(1))


def wrong_plate_name(x, num_data=None):
    with pyro.plate("batch", x.shape[0]):
        pyro.sample("z", normal(x).to_event(1))


def ignores_num_data(x, num_data=None):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", normal(x).to_event(1))


def not_reparameterized(x, num_data=None):
    with plate(x, num_data):
        pyro.sample("z", dist.VonMises(torch.zeros(x.shape[0], Z), torch.ones(x.shape[0], Z)).to_event(1))


def extra_latent(x, num_data=None):
    with plate(x, num_data):
        pyro.sample("z", normal(x).to_event(1))
        pyro.sample("w", dist.Normal(torch.zeros(x.shape[0]), 1.0))


def samples_the_data(x, num_data=None):
    with plate(x, num_data):
        pyro.sample("z", normal(x).to_event(1))
        pyro.sample("x", dist.Bernoulli(torch.full((x.shape[0], 784), 0.5)).to_event(1))


def takes_only_x(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", normal(x).to_event(1))


class Unregistered(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(784, 2 * Z)

    def forward(self, x, num_data=None):
        with plate(x, num_data):
            loc, raw = self.linear(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, raw.exp()).to_event(1))


@pytest.mark.parametrize(
    "guide, message",
    [
        (no_z, r"rule 1 \(site 'z'\).*'code'.*pyro.sample\(\"z\""),
        (no_to_event, r"rule 3 \(event shape\).*\(\).*expected \(4,\).*\.to_event\(1\)"),
        (no_to_event_in_plate, r"raised ValueError.*guide\(x, num_data=None\).*\.to_event\(1\)"),
        (one_for_the_batch, r"rule 3 \(batch shape\).*batch shape \(\).*expected \(2,\)"),
        (outside_the_plate, r"rule 2 \(plate 'data'\).*not inside plate 'data'.*pyro.plate\(\"data\""),
        (wrong_plate_name, r"rule 2 \(plate 'data'\).*not inside plate 'data'.*data_plate"),
        (
            ignores_num_data,
            r"rule 2 \(plate 'data'\): called as guide\(x, num_data=1000\) on a minibatch of 5.*full "
            r"size 2.*model's has 1000.*data_plate",
        ),
        (not_reparameterized, r"rule 4 \(reparameterized\).*Independent\(VonMises\).*rsample"),
        (extra_latent, r"rule 5 \(no extra latent sites\).*'w'.*model has no such site"),
        (samples_the_data, r"rule 5 \(no extra latent sites\).*'x'.*model observes it"),
        (Unregistered(), r"rule 6 \(registered parameters\).*2 trainable.*linear.weight.*pyro.module"),
        (takes_only_x, r"raised TypeError when called as guide\(x, num_data=None\)"),
    ],
    ids=lambda v: None if isinstance(v, str) else getattr(v, "__name__", type(v).__name__),
)
def test_each_contract_violation_names_its_rule(guide, message):
    vae = VAE(z_dim=Z, hidden_dims=(16,))
    with pytest.raises(GuideError, match=message) as info:
        check_guide(vae.model, guide, binary_batch(), Z, num_data=1000)  # a minibatch of 1000 datapoints
    assert isinstance(info.value, ValueError)


def test_a_guide_that_ignores_num_data_is_right_where_no_minibatch_is_scaled():
    vae = VAE(z_dim=Z, hidden_dims=(16,))
    for num_data in (None, B):
        check_guide(vae.model, ignores_num_data, binary_batch(), Z, num_data=num_data)


def test_contract_accepts_good_guides_and_the_score_function_opt_out():
    vae = VAE(z_dim=Z, hidden_dims=(16,))
    x = binary_batch()
    check_guide(vae.model, vae.guide, x, Z)  # the VAE's own guide
    check_guide(vae.model, vae.guide, x.reshape(B, 1, 28, 28), Z)
    check_guide(vae.model, not_reparameterized, x, Z, reparameterized_required=False)
    encoder = torch.nn.Linear(784, 2 * Z)

    def user_guide(x, num_data=None):  # the pattern of the docs: pyro.module + a subsampled plate
        pyro.module("my_encoder", encoder)
        with plate(x, num_data):
            loc, raw = encoder(x.reshape(x.shape[0], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw) + 1e-4).to_event(1))

    check_guide(vae.model, user_guide, x, Z)
    with pytest.raises(GuideError, match=r"expected \(3,\)"):
        check_guide(vae.model, user_guide, x, 3)  # checked against the z_dim it is told
