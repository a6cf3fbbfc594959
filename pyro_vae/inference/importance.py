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
data plate keeps ``dim=-1`` and every site's log-density has shape ``[K, B]``. The sites
are those of any model (:mod:`pyro_vae.inference.sites`): every observed and latent site, whatever
its name, enters :math:`\log p(x_i, z_{ik})`, and every guide site :math:`\log q`.
Pyro's own ``RenyiELBO`` / ``vectorized_importance_weights`` either sum the batch
into one weight or mishandle the ``N/B`` minibatch scale; these weights stay per
datapoint and leave the scale to the caller.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_vae.errors import check_positive
from pyro_vae.inference.sites import SiteError, data_plate_name, frame_named, observed_sites

PARTICLE_DIM = -2


def _vectorize(fn: Callable[..., Any], num_particles: int) -> Callable[..., Any]:
    def vectorized(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate("particles", num_particles, dim=PARTICLE_DIM):
            return fn(*args, **kwargs)

    return vectorized


def _sum_sites(trace, shape: torch.Size, relative_scale: bool, plate: str, role: str) -> Tuple[torch.Tensor, float]:
    """Sum each sample site's log-density (over event dims) into a ``[K, B]`` tensor.

    Every site must be inside the data plate ``plate`` at ``dim=-1`` (one log-density per
    datapoint). With ``relative_scale`` each site is multiplied by its scale relative to
    the data plate's ``N/B`` (that is, by any ``poutine.scale`` factor such as a KL weight
    beta), and the data scale is returned separately.
    """
    total = None
    data_scale = None
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        frame = frame_named(site, plate)
        if frame is None:
            raise SiteError(
                f"site {name!r} of the {role} is not inside plate {plate!r}, the plate over datapoints; "
                f"importance weights are per datapoint, so every sample site must be inside it "
                f"(a latent shared by all datapoints has no per-datapoint weight)"
            )
        if frame.dim != -1:
            raise SiteError(
                f"plate {plate!r} has dim={frame.dim} at site {name!r}; the particles of importance "
                f"sampling take dim {PARTICLE_DIM}, so the plate over datapoints must have dim=-1 "
                f"(the default for the first plate a model enters) and no plate inside it"
            )
        log_prob = site["fn"].log_prob(site["value"])
        if log_prob.dim() < 2:
            raise SiteError(
                f"site {name!r} of the {role} has log-density shape {tuple(log_prob.shape)} under "
                f"vectorized particles; every site must have one log-density per datapoint of plate {plate!r}"
            )
        plate_scale = 1.0
        if frame.full_size is not None:
            plate_scale = frame.full_size / frame.size  # N / B of a subsampled plate
        data_scale = plate_scale if data_scale is None else data_scale
        scale = site["scale"] / plate_scale if relative_scale else 1.0
        total = scale * log_prob if total is None else total + scale * log_prob
    if total is None:
        raise SiteError(f"the {role} has no sample sites to weight")
    return total.expand(shape), (1.0 if data_scale is None else data_scale)


def log_importance_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_particles: int,
    relative_scale: bool = False,
    plate: Optional[str] = None,
    **kwargs: Any,
) -> Tuple[torch.Tensor, float]:
    r"""``(log_w, data_scale)``: :math:`\log w_{ik}` as a ``[num_particles, batch]`` tensor.

    :math:`\log p(x_i, z_{ik})` sums every sample site of the model (all its observed sites
    and all its latent sites, whatever their names: :mod:`pyro_vae.inference.sites`) and
    :math:`\log q(z_{ik}|x_i)` every sample site of the guide, per datapoint of the data plate
    (``plate``, else found from the model's trace).

    ``data_scale`` is the data plate's :math:`N/B` (1 without ``num_data``): the
    caller multiplies a sum over datapoints by it to estimate a full-data sum.
    The weights are differentiable (reparameterized guide samples).
    """
    check_positive("num_particles", num_particles, example=5)
    guide_trace = poutine.trace(_vectorize(guide, num_particles)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(_vectorize(model, num_particles), trace=guide_trace)).get_trace(
        *args, **kwargs
    )
    plate = data_plate_name(model_trace, plate)
    data_site = model_trace.nodes[observed_sites(model_trace)[0]]
    frame = frame_named(data_site, plate)
    assert frame is not None  # data_plate_name found the plate around the data
    shape = torch.Size((num_particles, frame.size))
    log_p, data_scale = _sum_sites(model_trace, shape, relative_scale, plate, "model")
    log_q, _ = _sum_sites(guide_trace, shape, relative_scale, plate, "guide")
    return log_p - log_q, data_scale
