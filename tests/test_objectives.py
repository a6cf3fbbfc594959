"""Objectives by name, the IWAE bound (per datapoint, N/B-scaled), and KL weighting."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from pyro_vae import VAE, Callback, LinearGaussianGuide, LinearGaussianModel, Trainer, elbo_terms
from pyro_vae.inference.objectives import IWAE_ELBO, get_objective, kl_weighted

F64 = torch.float64


def exact_setup(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    model = LinearGaussianModel(torch.randn(5, 2, generator=g, dtype=F64), torch.randn(5, generator=g, dtype=F64), 0.5)
    x = model.sample(n, generator=seed + 1)
    guide = LinearGaussianGuide(5, 2).double()  # untrained: a poor proposal
    return model, guide, x


def test_objectives_by_name_and_alias():
    assert type(get_objective("elbo")) is Trace_ELBO and type(get_objective("Trace_ELBO")) is Trace_ELBO
    assert type(get_objective("meanfield")) is TraceMeanField_ELBO
    assert type(get_objective("jit_elbo")) is JitTrace_ELBO
    iwae = get_objective("iwae", 50)
    assert isinstance(iwae, IWAE_ELBO) and iwae.num_particles == 50
    assert get_objective("elbo", 4).num_particles == 4
    with pytest.raises(ValueError, match="unknown objective 'vi'.*iwae"):
        get_objective("vi")
    with pytest.raises(ValueError, match="num_particles must be a positive integer"):
        get_objective("iwae", 0)


def test_iwae_is_above_the_elbo_rises_with_k_and_stays_below_log_evidence():
    torch.manual_seed(0)
    model, _, x = exact_setup()
    shift, inflate = 0.3, 1.5  # an imperfect proposal: the exact posterior, shifted and widened

    def guide(x, num_data=None):
        post = model.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "z", pyro.distributions.MultivariateNormal(post.loc + shift, scale_tril=inflate * post.scale_tril)
            )

    post = model.posterior(x)
    log_px = model.log_evidence(x).sum().item()
    elbo = model.analytic_elbo(x, post.loc + shift, inflate * post.scale_tril.expand(len(x), -1, -1)).sum().item()
    means, ses = {}, {}
    with torch.no_grad():
        for k in (1, 5, 50, 500):
            draws = torch.tensor([-IWAE_ELBO(k).loss(model.model, guide, x) for _ in range(200)])
            means[k], ses[k] = draws.mean().item(), draws.std().item() / math.sqrt(200)
    assert abs(means[1] - elbo) < 4 * ses[1]  # L_1 is the ELBO
    assert elbo < means[5] < means[50] < means[500] < log_px
    assert log_px - means[500] < 0.1 * (log_px - elbo)  # the gap closes as K grows


def test_iwae_is_exact_with_the_exact_posterior_for_every_k():
    model, _, x = exact_setup(seed=3)
    for k in (1, 7):
        bound = -IWAE_ELBO(k).loss(model.model, model.posterior_guide, x)
        assert bound == pytest.approx(model.log_evidence(x).sum().item(), abs=1e-9)


def test_iwae_scales_a_minibatch_by_n_over_b_where_renyi_elbo_does_not():
    pyro.clear_param_store()
    model, guide, x = exact_setup(seed=1, n=8)
    torch.manual_seed(0)
    full = IWAE_ELBO(20).loss(model.model, guide, x)
    torch.manual_seed(0)
    scaled = IWAE_ELBO(20).loss(model.model, guide, x, num_data=80)
    assert scaled == pytest.approx(10 * full, rel=1e-12)
    # Without subsampling Pyro's RenyiELBO(alpha=0) estimates the same per-datapoint bound.
    renyi = torch.tensor(
        [RenyiELBO(alpha=0, num_particles=20, vectorize_particles=True).loss(model.model, guide, x) for _ in range(100)]
    )
    ours = torch.tensor([IWAE_ELBO(20).loss(model.model, guide, x) for _ in range(100)])
    se = math.sqrt(renyi.var() / 100 + ours.var() / 100)
    assert abs(renyi.mean() - ours.mean()) < 4 * se


def test_iwae_trains_the_exact_model_guide():
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide, x = exact_setup(seed=2, n=200)
    svi = SVI(model.model, guide, pyro.optim.Adam({"lr": 0.02}), IWAE_ELBO(5))
    before = model.kl_to_posterior(x, *guide.loc_scale_tril(x)).mean().item()
    for _ in range(300):
        svi.step(x)
    after = model.kl_to_posterior(x, *guide.loc_scale_tril(x)).mean().item()
    assert after < 0.1 * before


def test_beta_scales_exactly_the_kl_terms_on_a_trace():
    vae = VAE(z_dim=4, hidden_dims=(16,))
    x = torch.bernoulli(torch.full((6, 784), 0.3), generator=torch.Generator().manual_seed(0))
    beta = 0.3
    model, guide = kl_weighted(vae.model, beta), kl_weighted(vae.guide, beta)
    torch.manual_seed(1)
    guide_tr = poutine.trace(guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    assert guide_tr.nodes["z"]["scale"] == beta and model_tr.nodes["z"]["scale"] == beta
    assert model_tr.nodes["x"]["scale"] == 1.0

    # Trace_ELBO: -(recon - beta (log q - log p)) at the same noise
    torch.manual_seed(1)
    terms = elbo_terms(vae.model, vae.guide, x, analytic_kl=False)
    torch.manual_seed(1)
    loss = Trace_ELBO().loss(model, guide, x)
    assert loss == pytest.approx(-(terms.recon - beta * terms.kl).sum().item(), abs=1e-3)

    # TraceMeanField_ELBO: the analytic KL times beta
    torch.manual_seed(1)
    terms = elbo_terms(vae.model, vae.guide, x, analytic_kl=True)
    torch.manual_seed(1)
    loss = TraceMeanField_ELBO().loss(model, guide, x)
    assert loss == pytest.approx(-(terms.recon - beta * terms.kl).sum().item(), abs=1e-3)


def test_kl_warmup_follows_its_linear_schedule(mnist):
    x = mnist.train_images[:256]
    trainer = Trainer(VAE(z_dim=4, hidden_dims=(16,)), objective="meanfield", beta=0.5, kl_warmup=2)
    seen = []

    class RecordBeta(Callback):  # the weight each step used
        def on_step_end(self, trainer, step, loss):
            seen.append(trainer.current_beta)

    for _ in range(3):
        trainer.train_epoch(x, batch_size=64, callbacks=[RecordBeta()])
    expected = [0.5 * min(1.0, (e + s / 4) / 2) for e in range(3) for s in range(4)]
    assert seen == pytest.approx(expected)
    assert seen[0] == 0.0 and seen[-1] == 0.5


@pytest.mark.parametrize("name", ["elbo", "meanfield", "iwae", "jit_elbo", "jit_meanfield"])
def test_every_objective_trains_the_vae(name, mnist):
    x = mnist.train_images[:512]
    pyro.set_rng_seed(0)
    trainer = Trainer(VAE(z_dim=8, hidden_dims=(64,)), objective=name)
    test = trainer.prepare_test(mnist.test_images[:256])
    before = trainer.evaluate(test)["elbo"]
    for _ in range(3):
        trainer.train_epoch(x, batch_size=64)
    assert trainer.evaluate(test)["elbo"] > before + 50


def test_jit_with_warmup_is_refused():
    with pytest.raises(ValueError, match="JIT-compiled objective"):
        Trainer(VAE(z_dim=4, hidden_dims=(16,)), objective="jit_elbo", kl_warmup=3)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_two_jit_trainers_stepped_in_turns_each_update_their_own_vae(mnist):
    """Pyro's JIT objective reads parameters from the global param store by name; two VAEs
    with the same names, trained in turns, must each update their own tensors."""
    x = (mnist.train_images[:32] > 0.5).float()
    a = Trainer(VAE(z_dim=4, hidden_dims=(16,)), objective="jit_elbo", binarize="none")
    b = Trainer(VAE(z_dim=4, hidden_dims=(16,)), objective="jit_elbo", binarize="none")
    for stepped, other in ((a, b), (b, a), (a, b), (b, a)):
        before = {k: v.clone() for k, v in stepped.vae.state_dict().items()}
        untouched = {k: v.clone() for k, v in other.vae.state_dict().items()}
        stepped.step(x, 1000)
        assert all(not torch.equal(before[k], v) for k, v in stepped.vae.state_dict().items())
        assert all(torch.equal(untouched[k], v) for k, v in other.vae.state_dict().items())


def test_the_objective_is_set_in_one_place_by_name_or_instance():
    vae = VAE(z_dim=4, hidden_dims=(16,))
    # an instance goes through the same checks as a name: a JIT one refuses warm-up
    with pytest.raises(ValueError, match=r"kl_warmup changes the KL weight every step.*'jit_elbo'"):
        Trainer(vae, objective=JitTrace_ELBO(), kl_warmup=3)
    with pytest.raises(TypeError):
        Trainer(vae, loss=JitTrace_ELBO())  # the second way to set it is gone
    with pytest.raises(ValueError, match=r"num_particles=3 but the objective Trace_ELBO has num_particles=2"):
        Trainer(vae, objective=Trace_ELBO(num_particles=2), num_particles=3)
    with pytest.raises(ValueError, match=r"objective must be a name .* or a pyro.infer ELBO instance, got int"):
        Trainer(vae, objective=5)
    trainer = Trainer(vae, objective=Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1))
    assert trainer.config.objective_name == "elbo" and trainer.config.num_particles == 2
    assert trainer.state_dict()["trainer"]["objective"] == "elbo"
    x = torch.bernoulli(torch.full((32, 784), 0.3), generator=torch.Generator().manual_seed(0))
    assert math.isfinite(trainer.step(x, num_data=32))


def test_a_new_beta_recompiles_the_jit_objective_given_not_a_default_one():
    x = torch.bernoulli(torch.full((32, 784), 0.3), generator=torch.Generator().manual_seed(0))
    given = JitTrace_ELBO(ignore_jit_warnings=True, max_plate_nesting=1)
    trainer = Trainer(VAE(z_dim=4, hidden_dims=(16,)), objective=given)
    trainer.step(x, num_data=32)
    compiled = trainer.loss
    trainer.set_beta(0.5)
    assert type(trainer.loss) is JitTrace_ELBO and trainer.loss is not compiled  # recompiled, same class
    assert trainer.loss.max_plate_nesting == 1 and trainer.loss.ignore_jit_warnings  # with the given settings
    # the recompiled objective uses the new weight: its loss is the beta-weighted one, computed eagerly
    trainer.loss_module(x, num_data=32)  # the first call compiles
    torch.manual_seed(1)
    jit_loss = trainer.loss_module(x, num_data=32).item()
    eager = kl_weighted(trainer.vae.model, 0.5), kl_weighted(trainer.vae.guide, 0.5)
    torch.manual_seed(1)
    eager_loss = Trace_ELBO(max_plate_nesting=1).differentiable_loss(*eager, x, num_data=32).item()
    assert jit_loss == pytest.approx(eager_loss, rel=1e-5)


@pytest.mark.parametrize("objective", ["meanfield", "jit_meanfield"])
def test_a_closed_form_kl_objective_is_refused_where_it_would_be_biased(objective):
    from pyro_vae.models.hvae import HVAE

    x = torch.bernoulli(torch.full((8, 784), 0.3), generator=torch.Generator().manual_seed(0))
    trainer = Trainer(HVAE(z_dims=(6, 3), hidden_dims=((16,), (8,))), objective=objective)
    with pytest.raises(ValueError, match=r"biased for site\(s\) \['z1'\].*use objective='elbo'") as err:
        trainer.step(x, num_data=8)
    assert err.value.settings == ("objective",)
    assert math.isfinite(Trainer(HVAE(z_dims=(6, 3), hidden_dims=((16,), (8,))), objective="elbo").step(x, 8))
