r"""The softplus :math:`\log(1 + e^x)`, faster on the CPU than :func:`torch.nn.functional.softplus`.

Softplus is the VAE's most frequent non-linearity: between the layers of the encoder and the
decoder, and in every Bernoulli pixel's log-probability,
:math:`\log p(x_d \mid z) = x_d \ell_d - \log(1 + e^{\ell_d})`. Torch computes it with
``log1p``, which on this CPU build (torch 2.14) runs many times slower than ``log``. At
``k = 5000`` importance samples the softplus of ``[5000, 784]`` decoder logits per test image
was a large share of an evaluation.
Here it is written with ``log``, kept as exact as ``log1p``:

.. math::

    \operatorname{softplus}(x) = \max(x, 0) + \log(1 + u), \qquad u = e^{-|x|} \in (0, 1],

and :math:`\log(1 + u)` from :math:`v = 1 \oplus u` (the rounded sum) as
:math:`\log v + (u - (v \ominus 1)) / v`: the second term is the rounding error of :math:`1 + u`
(exactly representable, by Sterbenz's lemma) to first order, so the result keeps ``log1p``'s
relative accuracy to a few ulps even where :math:`u` is far below the float's epsilon (where
:math:`v = 1` it is :math:`u` itself). The argument of ``exp`` is floored one above the log of
the smallest normal float (:math:`-86.3` in float32): below it ``exp`` takes a slow path, many
times slower whether or not subnormals are flushed, and a trained decoder's background logits go
there; the floor changes the result by less than :math:`10^{-37}`. The gradient is
:math:`\sigma(x)`, computed directly rather than through the formula's own graph.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """The value, without a graph: in place after the first two tensors, since at ``k = 5000``
    every new ``[particles, images, 784]`` tensor costs page faults as well as arithmetic."""
    # exp near and below the smallest normal (e^-87.3 in float32) takes a slow path, 10-25 times
    # slower, also with subnormals flushed; the floor e^-86.3 changes softplus by less than 1e-37
    u = x.abs().neg_().clamp_(min=math.log(torch.finfo(x.dtype).tiny) + 1).exp_()
    v = u + 1
    correction = (v - 1).neg_().add_(u).div_(v)  # (u - (v - 1)) / v, exact but for the division
    out = v.log_().add_(correction)
    return out.add_(torch.clamp(x, min=0, out=u))


class _SoftplusFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return _softplus(x.detach())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)  # differentiable itself: second derivatives work


def softplus(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(1 + e^x)`, elementwise, to within a few ulps of :func:`torch.nn.functional.softplus`
    (module docstring), with gradient :math:`\sigma(x)`."""
    if x.requires_grad and torch.is_grad_enabled():
        return _SoftplusFunction.apply(x)
    return _softplus(x)


def _block(d: int, most: int) -> int:
    """Features per product: a divisor of ``d`` of at most ``most`` and at least half of it (784: 112,
    a view without copies), else ``most`` and a shorter last block."""
    blocks = -(-d // most)
    for n in range(blocks, 2 * blocks + 1):
        if d % n == 0:
            return d // n
    return most


def softplus_sum(x: torch.Tensor, sign: Optional[torch.Tensor] = None) -> torch.Tensor:
    r""":math:`\sum_d \log(1 + e^{s_d x_d})` over the last dimension, without a graph, with signs
    :math:`s_d = \pm 1` (``sign``, broadcast against ``x``; default all :math:`+1`): a Bernoulli
    likelihood at evaluation, where a ``[particles, images, 784]`` tensor of logits is summed and
    never differentiated. With :math:`s_d = 1 - 2 x_d` for binary pixels :math:`x_d`,
    :math:`x_d \ell_d - \log(1 + e^{\ell_d}) = -\log(1 + e^{s_d \ell_d})`, so the whole
    log-likelihood is one such sum (:class:`~pyro_vae.models.likelihoods.BernoulliPixels`).

    With :math:`\operatorname{softplus}(x) = \max(x, 0) + \log(1 + e^{-|x|})`, the logarithms of a
    block of :math:`b` features are one logarithm of their product,
    :math:`\sum_{d \in \text{block}} \log(1 + u_d) = \log \prod_{d} (1 + u_d)`: each factor lies in
    :math:`(1, 2]`, so with :math:`b \le \lfloor \log_2 \text{max float} \rfloor - 1` (126 in
    float32; 112 for 784 pixels, seven equal blocks) the product cannot overflow. That is 7
    logarithms for 784 pixels instead of 784, and eight passes over the tensor instead of
    thirteen: about twice as fast at ``k = 5000``. Its rounding: at most :math:`b\epsilon` relative
    in each product and :math:`\epsilon/2` per feature where :math:`1 + u_d` rounds to 1, about
    :math:`10^{-4}` nats over 784 float32 pixels at worst, below the rounding of the float32 sum
    itself. The sign changes only the :math:`\max(s_d x_d, 0)` part, since :math:`|s_d x_d| = |x_d|`.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return softplus(x if sign is None else x * sign).sum(-1)  # the product's gradient would need the factors again
    d = x.shape[-1]
    block = _block(d, int(math.log2(torch.finfo(x.dtype).max)) - 1)
    # exp's slow range below the smallest normal is floored, as in _softplus
    factors = x.abs().neg_().clamp_(min=math.log(torch.finfo(x.dtype).tiny) + 1).exp_().add_(1)  # 1 + e^-|x|
    whole = d - d % block
    logs = factors[..., :whole].reshape(*x.shape[:-1], whole // block, block).prod(-1).log_().sum(-1)
    if whole < d:
        logs += factors[..., whole:].prod(-1).log_()
    positive = torch.clamp(x, min=0, out=factors) if sign is None else torch.mul(x, sign, out=factors).clamp_(min=0)
    return positive.sum(-1).add_(logs)  # in the factors' memory, used up


def _softplus_rounded(x: torch.Tensor) -> torch.Tensor:
    r"""The value as :math:`\max(\log(1 + e^{\min(x, 20)}), x)`, each step rounded: five passes instead of
    thirteen, to within about the float's epsilon absolutely (not relatively: where :math:`e^x` is
    below half of it the result is 0, dropping a term smaller than the rounding of anything it is
    added to). Above 20 the maximum is :math:`x`, which the softplus exceeds by less than
    :math:`e^{-20}`; the floor keeps ``exp`` out of its slow range, as in :func:`softplus`."""
    y = x.clamp(min=math.log(torch.finfo(x.dtype).tiny) + 1, max=20.0).exp_().add_(1).log_()
    return torch.maximum(y, x, out=y)


class Softplus(nn.Softplus):
    r""":class:`torch.nn.Softplus` (``beta = 1``) as a hidden layer's activation, faster on the CPU.

    With gradients it is :func:`softplus`, to within a few ulps. Without them (evaluation: an
    importance-sampled likelihood runs the decoder's two hidden layers on 5,000 particles an
    image) it is :math:`\max(\log(1 + e^{\min(x, 20)}), x)` in five passes, without the correction
    term: an absolute error of at most about one float epsilon (:math:`1.2 \times 10^{-7}` in
    float32) in each output, relative above 1.
    The next linear layer cannot see it: each of its outputs is a sum of hundreds of activations
    times weights, rounded to a relative epsilon of that sum. It would be wrong for a quantity
    read on its own where it is tiny, such as a scale: use :func:`softplus` there.
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.requires_grad and torch.is_grad_enabled():
            return softplus(input)
        return _softplus_rounded(input)
