r"""Per-datapoint importance weights of a guide as proposal (Burda et al., 2015).

For datapoint :math:`x_i` and :math:`K` draws :math:`z_{ik} \sim q(z|x_i)`,

.. math::

    \log w_{ik} = \log p(x_i, z_{ik}) - \log q(z_{ik}|x_i),
    \qquad
    \log \hat p_K(x_i) = \log \frac1K \sum_{k=1}^K w_{ik}
    = \operatorname{logsumexp}_k \log w_{ik} - \log K .

:math:`\mathbb E[\log \hat p_K(x_i)]` is the importance-weighted bound
:math:`\mathcal L_K`: :math:`\mathcal L_1` is the ELBO (seed item 8),
:math:`\mathcal L_K \le \mathcal L_{K+1} \le \log p(x_i)`, and
:math:`\hat p_K(x_i) \to p(x_i)` as :math:`K \to \infty`.

:func:`log_importance_weights` draws the :math:`K` particles in one vectorized pass:
model and guide run inside an outer ``pyro.plate("particles", K, dim=-2)``, so the
data plate keeps ``dim=-1`` and every site's log-density has shape ``[K, B]``.
Pyro's own ``RenyiELBO`` / ``vectorized_importance_weights`` either sum the batch
into one weight or mishandle the ``N/B`` minibatch scale; these weights stay per
datapoint and leave the scale to the caller.
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from .errors import check_positive

PARTICLE_DIM = -2


def _vectorize(fn: Callable[..., Any], num_particles: int) -> Callable[..., Any]:
    def vectorized(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate("particles", num_particles, dim=PARTICLE_DIM):
            return fn(*args, **kwargs)

    return vectorized


def _sum_sites(trace, shape: torch.Size, relative_scale: bool) -> Tuple[torch.Tensor, float]:
    """Sum each sample site's log-density (over event dims) into a ``[K, B]`` tensor.

    With ``relative_scale`` each site is multiplied by its scale relative to the
    data plate's ``N/B`` (that is, by any ``poutine.scale`` factor such as a KL
    weight beta), and the data scale is returned separately.
    """
    total = None
    data_scale = None
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        log_prob = site["fn"].log_prob(site["value"])
        if log_prob.dim() < 2:
            raise ValueError(
                f"site {name!r} has log-density shape {tuple(log_prob.shape)}; every site of a "
                f"VAE-style model must be inside plate 'data' (one value per datapoint)"
            )
        plate_scale = 1.0
        for frame in site["cond_indep_stack"]:
            if frame.name == "data" and frame.full_size is not None:
                plate_scale = frame.full_size / frame.size  # N / B of a subsampled plate
        data_scale = plate_scale if data_scale is None else data_scale
        scale = site["scale"] / plate_scale if relative_scale else 1.0
        total = scale * log_prob if total is None else total + scale * log_prob
    if total is None:
        raise ValueError("the trace has no sample sites to weight")
    return total.expand(shape), (1.0 if data_scale is None else data_scale)


def log_importance_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_particles: int,
    relative_scale: bool = False,
    **kwargs: Any,
) -> Tuple[torch.Tensor, float]:
    r"""``(log_w, data_scale)``: :math:`\log w_{ik}` as a ``[num_particles, batch]`` tensor.

    ``data_scale`` is the data plate's :math:`N/B` (1 without ``num_data``): the
    caller multiplies a sum over datapoints by it to estimate a full-data sum.
    The weights are differentiable (reparameterized guide samples).
    """
    check_positive("num_particles", num_particles, example=5)
    guide_trace = poutine.trace(_vectorize(guide, num_particles)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(
        poutine.replay(_vectorize(model, num_particles), trace=guide_trace)
    ).get_trace(*args, **kwargs)
    x_site = model_trace.nodes.get("x")
    if x_site is None:
        raise ValueError("the model has no observed site 'x'")
    shape = x_site["fn"].batch_shape
    if len(shape) != 2 or shape[0] != num_particles:
        raise ValueError(
            f"site 'x' has batch shape {tuple(shape)} under {num_particles} vectorized particles; "
            f"expected ({num_particles}, batch): is it inside plate 'data'?"
        )
    log_p, data_scale = _sum_sites(model_trace, shape, relative_scale)
    log_q, _ = _sum_sites(guide_trace, shape, relative_scale)
    return log_p - log_q, data_scale
