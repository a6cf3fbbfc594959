"""The log-based softplus against float64 ground truth, torch's layer, and its derivatives."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.models.likelihoods import BernoulliPixels
from pyro_vae.models.networks import mlp
from pyro_vae.models.softplus import Softplus, softplus, softplus_sum

FLOAT32_ULP = 2.0**-23


def test_float32_within_two_ulps_of_the_float64_truth_over_the_normal_range():
    # from e^-86 (one above the smallest normal float32, e^-87.3) far into the linear part, plus
    # the points where log(1 + u) alone would round to zero (|x| > 17) or lose digits (|x| near 0)
    x = torch.cat([torch.linspace(-86.0, 120.0, 200_001), torch.tensor([0.0, 1e-30, -1e-30, 1e-8, -17.5, 17.5])])
    truth = torch.log1p(torch.exp(-x.double().abs())) + x.double().clamp(min=0)
    relative = ((softplus(x).double() - truth).abs() / truth).max().item()
    assert relative < 2 * FLOAT32_ULP
    # below, e^x is floored at e^-86.3 (exp is slow there): off by less than 4e-38 in absolute terms
    far = torch.linspace(-200.0, -86.0, 1001)
    absolute = (softplus(far).double() - torch.exp(far.double())).abs().max().item()
    assert 0 < absolute < 4e-38
    # log(1 + e^x) computed naively is 0 below x = -17: the correction is what keeps e^x
    assert softplus(torch.tensor(-50.0)).item() == pytest.approx(math.exp(-50.0), rel=1e-6)


def test_float64_input_keeps_float64_accuracy():
    x = torch.linspace(-700.0, 700.0, 10_001, dtype=torch.float64)
    assert torch.allclose(softplus(x), F.softplus(x, threshold=1e9), rtol=1e-14, atol=0.0)


@pytest.mark.parametrize("d", [784, 13, 787, 300])  # seven blocks of 112; one block; a prime: a shorter last block
def test_the_sum_as_a_log_of_products_matches_the_float64_sum(d):
    """softplus_sum's products of 1 + e^-|x| in blocks: within its documented 1e-4 nats over 784
    float32 pixels of the float64 truth, as close as the float32 sum of softplus itself; no overflow
    where every factor is 2 (x = 0) and no loss where every factor rounds to 1 (x far below 0)."""
    g = torch.Generator().manual_seed(d)
    for x in (
        torch.randn(64, 3, d, generator=g) * 8 - 6,  # a decoder's logits: mostly background
        torch.randn(64, 3, d, generator=g) * 30,
        torch.zeros(64, 3, d),
        torch.full((64, 3, d), -60.0),
    ):
        truth = (torch.log1p(torch.exp(-x.double().abs())) + x.double().clamp(min=0)).sum(-1)
        ours, elementwise = softplus_sum(x).double(), softplus(x).sum(-1).double()
        assert ours.shape == (64, 3)
        assert (ours - truth).abs().max() <= max(1e-4, 2 * (elementwise - truth).abs().max().item())
        assert ((ours - truth).abs() <= 1e-6 * truth + 1e-4).all()
    x64 = torch.randn(5, d, generator=g, dtype=torch.float64) * 10
    truth = F.softplus(x64, threshold=1e9).sum(-1)
    assert torch.allclose(softplus_sum(x64), truth, rtol=1e-13, atol=0.0)
    assert softplus_sum(x64[0]).shape == ()  # one vector: its sum


def test_the_sum_keeps_the_gradient_where_one_is_asked_for():
    x = (torch.randn(4, 784, dtype=torch.float64) * 5).requires_grad_()
    softplus_sum(x).sum().backward()
    assert torch.allclose(x.grad, torch.sigmoid(x.detach()), rtol=1e-12, atol=0.0)


def test_gradient_is_the_sigmoid_and_second_derivatives_work():
    x = (torch.randn(64, dtype=torch.float64) * 8).requires_grad_()
    assert torch.autograd.gradcheck(softplus, (x,))
    assert torch.autograd.gradgradcheck(softplus, (x,))
    (grad,) = torch.autograd.grad(softplus(x).sum(), x)
    assert torch.allclose(grad, torch.sigmoid(x), rtol=1e-15, atol=0.0)


def test_input_is_left_unchanged_with_and_without_a_graph():
    x = torch.randn(100) * 30
    before = x.clone()
    softplus(x)
    softplus(x.requires_grad_())
    assert torch.equal(x.detach(), before)


def test_layer_is_a_drop_in_for_torch_softplus():
    torch.manual_seed(0)
    net = mlp([5, 7, 3], "softplus")
    assert isinstance(net[1], Softplus) and isinstance(net[1], nn.Softplus)
    reference = nn.Sequential(net[0], nn.Softplus(), net[2])
    x = torch.randn(11, 5)
    assert torch.allclose(net(x), reference(x), rtol=1e-6, atol=1e-6)
    grads = torch.autograd.grad(net(x).sum(), list(net.parameters()))
    ref_grads = torch.autograd.grad(reference(x).sum(), list(reference.parameters()))
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-6)


def test_layer_without_gradients_is_within_two_epsilons_absolutely():
    """Without gradients the layer skips log1p's correction term: within two float32 epsilons of the
    float64 truth in absolute terms (relative above 1), over the whole range, but not relatively
    where the activation is tiny."""
    x = torch.linspace(-100.0, 100.0, 200_001)
    with torch.no_grad():
        ours = Softplus()(x).double()
    truth = F.softplus(x.double(), threshold=1e9)
    eps = torch.finfo(torch.float32).eps
    assert ((ours - truth).abs() <= 2 * eps * truth.clamp(min=1)).all()
    assert ((ours - truth).abs() / truth).max() > 1e-3  # e^-20: 0 here, where softplus() keeps 2 ulp


def test_bernoulli_pixels_under_many_particles_match_torch_bernoulli():
    torch.manual_seed(0)
    logits = torch.randn(30, 4, 784, dtype=torch.float64) * 20  # [particles, images, pixels]
    x = (torch.rand(4, 784) < 0.3).double()
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum(-1)
    assert torch.allclose(BernoulliPixels(logits).log_prob(x), expected, rtol=1e-12, atol=1e-9)


def test_binary_pixels_without_gradients_take_the_signed_sum_and_keep_the_value():
    """Binary pixels scored without a graph: one signed softplus sum, -sum log(1 + e^((1 - 2x) l)),
    against torch's Bernoulli in float64 (1e-12) and float32 (the einsum path's own rounding);
    grey pixels, an expanded value and a graph take or keep the general path."""
    torch.manual_seed(1)
    logits = torch.randn(30, 4, 784, dtype=torch.float64) * 20
    x = (torch.rand(4, 784) < 0.3).double()
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum(-1)
    with torch.no_grad():
        assert torch.allclose(BernoulliPixels(logits).log_prob(x), expected, rtol=1e-12, atol=1e-9)
        assert torch.allclose(BernoulliPixels(logits).log_prob(x.expand(30, 4, 784)), expected, rtol=1e-12, atol=1e-9)
        general = torch.einsum("...d,...d->...", logits.float(), x.float()) - softplus_sum(logits.float())
        signed = BernoulliPixels(logits.float()).log_prob(x.float())
        assert ((signed.double() - expected).abs() <= 2 * (general.double() - expected).abs().max() + 1e-4).all()
        grey = x * 0.5 + 0.25  # not binary: cross-entropy against grey targets, the general path
        grey_expected = (logits * grey - F.softplus(logits, threshold=1e9)).sum(-1)
        scored = BernoulliPixels(logits, validate_args=False).log_prob(grey)
        assert torch.allclose(scored, grey_expected, rtol=1e-12, atol=1e-9)
    with_graph = logits.clone().requires_grad_()
    value = BernoulliPixels(with_graph).log_prob(x)
    assert torch.allclose(value.detach(), expected, rtol=1e-12, atol=1e-9)
    (grad,) = torch.autograd.grad(value.sum(), with_graph)
    assert torch.allclose(grad, x - torch.sigmoid(logits), rtol=1e-12, atol=1e-12)


def test_the_signed_sum_is_the_sum_of_softplus_of_the_signed_values():
    torch.manual_seed(2)
    x = torch.randn(6, 5, 784, dtype=torch.float64) * 10
    sign = torch.where(torch.rand(5, 784) < 0.5, 1.0, -1.0).double()
    truth = F.softplus(x * sign, threshold=1e9).sum(-1)
    assert torch.allclose(softplus_sum(x, sign=sign), truth, rtol=1e-13, atol=0.0)
    with_graph = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(softplus_sum(with_graph, sign=sign).sum(), with_graph)
    assert torch.allclose(grad, sign * torch.sigmoid(x * sign), rtol=1e-12, atol=0.0)
