r""":func:`write_explorer` writes a latent-space explorer: one self-contained HTML page (no
network, no server: it opens from ``file://``) to move through :math:`z` and watch the decoder:

* a map of the test digits' posterior means :math:`\mathbb E_q[z|x]`, coloured by label:
  :math:`z` itself for ``z_dim`` 1 or 2, else the projection :math:`u = (\mu - m) V^\top`
  on the first two principal axes :math:`V` of the means (:math:`m` their average),
  over the prior's density contours (the prior projected into the map's plane is
  :math:`\mathcal N(-m V^\top, I_2)`, as :math:`V` has orthonormal rows);
* the decoder mean :math:`\mathbb E[x|z]` computed in the page, in plain JavaScript,
  from the decoder's weights, live as a cursor is dragged over the map or sliders set
  the coordinates of :math:`z` (for ``z_dim > 2`` the cursor moves in the plane
  :math:`z = m + u_1 v_1 + u_2 v_2`);
* for a clicked digit: its reconstruction, its posterior as the ellipses of the
  projected covariance :math:`V \Sigma V^\top`, decoded draws :math:`z \sim q(z|x)` and
  its ELBO split into reconstruction and KL (:func:`~pyro_vae.inference.elbo.elbo_terms`).

The page template is ``pyro_vae/figures/explorer.html``; see docs/explorer.md.
"""

from __future__ import annotations

import base64
import json
import math
import os
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import Independent, LowRankMultivariateNormal, MultivariateNormal, Normal, kl_divergence
from torch.nn import functional as F

from pyro_vae.errors import ConfigError, InvalidDataError, check_positive
from pyro_vae.files import write_text
from pyro_vae.inference.elbo import elbo_terms
from pyro_vae.inference.evaluate import principal_plane
from pyro_vae.models.softplus import Softplus
from pyro_vae.models.vae import VAE
from pyro_vae.rng import rng_fork
from pyro_vae.training.checkpoint import check_writable_dir

SAMPLE_ROW = 8  #: decoded draws z ~ q(z|x) shown for a clicked digit
MC_DRAWS = 64  #: draws that estimate the mean and covariance of a guide with no closed form
ELBO_PARTICLES = 16  #: draws of z per digit in the Monte Carlo reconstruction term
_PLACEHOLDER = "__EXPLORER_DATA__"
_FLOAT16_MAX = 65504.0
# pyro_vae's Softplus computes nn.Softplus's function (beta 1), only faster
_ACTIVATIONS = (nn.Softplus, Softplus, nn.ReLU, nn.Tanh, nn.ELU)


def write_explorer(
    vae: VAE,
    test_x: torch.Tensor,
    test_y: Any,
    path: Union[str, os.PathLike],
    max_points: int = 2000,
    seed: int = 0,
    shape: Optional[Sequence[int]] = None,
) -> str:
    """Write the latent-space explorer of ``vae`` on the first ``max_points`` test digits
    to the HTML file ``path`` (its directory is created); returns the path.

    :param test_x: test images ``[N, x_dim]`` or ``[N, ...]``, in the likelihood's support.
    :param test_y: their ``N`` integer labels (colours of the map).
    :param shape: one image's ``(channels, height, width)``, 1 or 3 channels (:class:`pyro_vae.data.sources.Data`'s
        ``shape``); None: grey, the most square factoring of ``x_dim``.
    :param seed: seed of every Monte Carlo draw (posterior moments, sample rows, the
        ELBO's reconstruction term), so the same VAE and data give the same page. The draws
        run on their own stream (:func:`~pyro_vae.rng.rng_fork`): the caller's is untouched.
    :raises InvalidDataError: an empty test set, labels that do not match the images, or
        images the VAE refuses (shape, dtype, device, the likelihood's support).
    :raises OutputDirError: a directory for ``path`` that cannot be created or written.
    :raises ConfigError: a model other than a one-layer VAE under the standard Normal prior.

    The VAE runs in eval mode without gradients and is put back in the mode it was in.
    """
    check_positive("max_points", max_points, example=2000)
    model, prior = vae.config.get("model", "vae"), vae.config.get("prior", "standard")
    if (model, prior) != ("vae", "standard"):
        raise ConfigError(
            f"the explorer draws one latent layer under the prior N(0, I), but this is model {model!r} with "
            f"prior {prior!r}; write it for a one-layer VAE with prior='standard'",
            settings=("model", "prior"),
        )
    channels, image_shape = (1, _image_shape(vae.x_dim)) if shape is None else _given_shape(shape, vae.x_dim)
    x, labels = _checked_test_set(vae, test_x, test_y, max_points)
    check_writable_dir(os.path.dirname(os.path.abspath(path)))
    was_training = vae.training
    vae.eval()
    try:
        with torch.no_grad():
            data = _page_data(vae, x, labels, seed)
    finally:
        vae.train(was_training)
    data["imageShape"], data["channels"] = image_shape, channels
    template = resources.files("pyro_vae.figures").joinpath("explorer.html").read_text(encoding="utf-8")
    # "<" escaped: no "</script>" inside the data can end its <script> element early.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return write_text(path, template.replace(_PLACEHOLDER, payload, 1))


def _checked_test_set(vae: VAE, test_x: Any, test_y: Any, max_points: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``max_points`` images, flattened and on the VAE's device, and their labels."""
    test_x = torch.as_tensor(test_x)
    if test_x.dim() > 0 and len(test_x) == 0:
        raise InvalidDataError("test_x is an empty test set (0 images); pass at least one test image to write_explorer")
    x = vae.flatten(test_x)  # refuses a wrong shape, dtype or device, naming the fix
    labels = torch.as_tensor(test_y).reshape(-1)
    if len(labels) != len(x):
        raise InvalidDataError(
            f"test_y has {len(labels)} labels but test_x has {len(x)} images; pass one label per image"
        )
    if labels.is_floating_point() and not bool((labels == labels.round()).all()):
        raise InvalidDataError("test_y holds non-integer labels; pass integer class labels (e.g. digits 0-9)")
    return x[:max_points], labels[:max_points].long().cpu()


def _page_data(vae: VAE, x: torch.Tensor, labels: torch.Tensor, seed: int) -> Dict[str, Any]:
    with rng_fork(seed):
        posterior = _posterior_summary(vae, x)
    with rng_fork(seed):
        terms = elbo_terms(vae.model, vae.guide, x, num_particles=ELBO_PARTICLES, analytic_kl=True)
    mean = posterior["mean"]
    view = _map_view(mean, labels, seed)
    # The covariance in the map's plane, A Σ A^T, as (var_u, cov_uw, var_w); only var_u for z_dim = 1.
    projected_cov = (view["axes"] @ posterior["cov"] @ view["axes"].T).reshape(len(x), -1)
    cov2 = projected_cov[:, [0, 1, 3]] if projected_cov.shape[1] == 4 else F.pad(projected_cov, (0, 2))
    decoder = _decoder_spec(vae)
    data: Dict[str, Any] = {
        "zDim": vae.z_dim,
        "imageShape": _image_shape(vae.x_dim),
        "labels": labels.tolist(),
        "images": _encode_images(x.cpu()),
        "means": _b64(mean, "<f4"),
        "coords": _b64(view["coords"], "<f4"),
        "cov2": _b64(cov2, "<f4"),
        "view": view["name"],
        "planeMean": view["plane_mean"].tolist(),
        "planeAxes": view["axes"].tolist(),
        "axisTitles": view["axis_titles"],
        "elbo": {
            k: [round(v, 4) if math.isfinite(v) else None for v in getattr(terms, k).cpu().tolist()]
            for k in ("recon", "kl", "elbo")
        },
        "samples": posterior["samples"],
        "decoder": decoder,
        "seed": seed,
        "captions": {
            "view": view["caption"],
            "posterior": posterior["caption"],
            "decoder": decoder["caption"],
            "samples": posterior["samples_caption"],
            "elbo": _elbo_caption(posterior["kl_analytic"]),
        },
    }
    if not decoder["supported"]:  # the page cannot decode: ship the reconstructions as pictures
        data["reconstructions"] = _b64((vae.decoded_mean(mean.to(x)).clamp(0, 1) * 255).round(), "u1")
    return data


def _posterior_summary(vae: VAE, x: torch.Tensor) -> Dict[str, Any]:
    """Mean ``[n, d]`` and covariance ``[n, d, d]`` of each q(z|x), and how the page samples it."""
    q = vae.posterior(x)  # the guide contract has checked its event shape, (z_dim,)
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        mean, std = q.mean, q.base_dist.scale.expand_as(q.mean)
        cov = torch.diag_embed(std**2)
        samples = {"kind": "diagonal", "count": SAMPLE_ROW, "std": _b64(std.clamp(max=_FLOAT16_MAX), "<f2")}
        caption = "q(z|x) is a diagonal Gaussian: the ellipses use its exact covariance."
        samples_caption = (
            f"{SAMPLE_ROW} draws z = μ + σ ⊙ ε from the diagonal Gaussian, drawn in this page "
            f"(seeded per digit) and decoded live."
        )
    else:
        if isinstance(q, (MultivariateNormal, LowRankMultivariateNormal)):
            mean, cov, draws = q.mean, q.covariance_matrix, q.sample((SAMPLE_ROW,))
            caption = f"q(z|x) is a Gaussian ({type(q).__name__}): the ellipses use its exact covariance."
            source = "the Gaussian"
        else:  # a flow or a custom family: no closed-form moments
            draws = q.sample((MC_DRAWS,))
            mean = draws.mean(0)
            centred = draws - mean
            cov = torch.einsum("sni,snj->nij", centred, centred) / (MC_DRAWS - 1)
            caption = (
                f"q(z|x) ({type(q).__name__}) has no closed-form covariance: its mean and covariance are "
                f"estimated from {MC_DRAWS} draws, and the ellipses are the Gaussian with those moments."
            )
            source = f"the first {SAMPLE_ROW} of those {MC_DRAWS} draws"
            draws = draws[:SAMPLE_ROW]
        samples = _quantized_draws(draws, mean)
        samples_caption = (
            f"{SAMPLE_ROW} draws z ~ q(z|x): {source}, drawn in Python and stored as 8-bit "
            f"offsets from the mean, decoded live."
        )
    prior = dist.Normal(x.new_zeros(()), x.new_ones(())).expand([len(x), vae.z_dim]).to_event(1)  # the model's
    try:
        kl_divergence(q, prior)
        kl_analytic = True
    except NotImplementedError:
        kl_analytic = False  # elbo_terms falls back to Monte Carlo, as here
    return {
        "mean": mean.cpu().float(),
        "cov": cov.cpu().float(),
        "samples": samples,
        "caption": caption,
        "samples_caption": samples_caption,
        "kl_analytic": kl_analytic,
    }


def _quantized_draws(draws: torch.Tensor, mean: torch.Tensor) -> Dict[str, Any]:
    """Draws ``[s, n, d]`` as int8 offsets from the mean, one float16 step per digit and coordinate:
    each offset is within half a step (1/254 of that coordinate's largest offset) of the draw."""
    offsets = (draws - mean).cpu().float()
    step = (offsets.abs().amax(0) / 127).clamp(max=_FLOAT16_MAX).half().float()
    safe_step = torch.where(step > 0, step, torch.ones_like(step))
    codes = (offsets / safe_step).round().clamp(-127, 127)
    return {"kind": "draws", "count": draws.shape[0], "codes": _b64(codes, "i1"), "step": _b64(step, "<f2")}


def _map_view(mean: torch.Tensor, labels: torch.Tensor, seed: int) -> Dict[str, Any]:
    """The map's 2-D coordinates of each posterior mean, and the plane (or line) ``z = m + u @ axes``."""
    n, d = mean.shape
    plural = "s" if n > 1 else ""
    if d == 1:
        # The label on the vertical axis, jittered so that equal codes of one digit stay apart.
        jitter = 0.12 * torch.randn(n, generator=torch.Generator().manual_seed(seed))
        return {
            "name": "z1",
            "coords": torch.stack([mean[:, 0], labels.float() + jitter], 1),
            "plane_mean": torch.zeros(1),
            "axes": torch.ones(1, 1),
            "axis_titles": ["z", "digit label (jittered)"],
            "caption": (
                f"z_dim = 1: the horizontal axis is z itself; the vertical position is the digit's "
                f"label plus a fixed random jitter, so only the horizontal position is a code. "
                f"{n} posterior mean{plural}."
            ),
        }
    if d == 2:
        return {
            "name": "z",
            "coords": mean,
            "plane_mean": torch.zeros(2),
            "axes": torch.eye(2),
            "axis_titles": ["z₁", "z₂"],
            "caption": f"z_dim = 2: the map is z itself, showing the posterior means of {n} test digit{plural}.",
        }
    plane = principal_plane(mean)
    if plane is None:  # no principal axes: show z₁, z₂ through m
        centre, axes = mean.mean(0), torch.eye(d)[:2]
        return {
            "name": "axes",
            "coords": (mean - centre) @ axes.T,
            "plane_mean": centre,
            "axes": axes,
            "axis_titles": ["z₁ − m₁", "z₂ − m₂"],
            "caption": (
                f"z_dim = {d}, but PCA has no axes ({n} posterior mean{plural}, all equal): the map "
                f"shows the plane of z₁ and z₂ through their mean m = E[μ(x)]; the cursor moves "
                f"z = m + u e₁ + w e₂ in it."
            ),
        }
    explained = [100 * fraction for fraction in plane.explained]
    return {
        "name": "pca",
        "coords": plane.project(mean),
        "plane_mean": plane.centre,
        "axes": plane.axes,
        "axis_titles": [f"PC 1 ({explained[0]:.1f}% of variance)", f"PC 2 ({explained[1]:.1f}% of variance)"],
        "caption": (
            f"z_dim = {d}: PCA of the posterior means of {n} test digit{plural}: the map shows them "
            f"on their first two principal axes v₁, v₂, which explain {explained[0]:.1f}% and "
            f"{explained[1]:.1f}% of their variance. The cursor moves z = m + u v₁ + w v₂ in the "
            f"plane through their mean m; the sliders move z anywhere."
        ),
    }


def _decoder_spec(vae: VAE) -> Dict[str, Any]:
    """The decoder as layers the page runs, with its weights as one float32 array, or why it cannot."""
    layers: List[Dict[str, Any]] = []
    weights: List[np.ndarray] = []
    offset = 0
    unsupported: Optional[str] = None
    if vae.likelihood.name not in ("bernoulli", "continuous_bernoulli"):
        unsupported = f"the likelihood {vae.likelihood.name!r}"
    modules = list(vae.decoder) if isinstance(vae.decoder, nn.Sequential) else [vae.decoder]
    for module in modules:
        if isinstance(module, nn.Linear):
            w = module.weight.detach().cpu().float().numpy()
            b = (
                module.bias.detach().cpu().float().numpy()
                if module.bias is not None
                else np.zeros(w.shape[0], np.float32)
            )
            layers.append(
                {"kind": "linear", "in": w.shape[1], "out": w.shape[0], "weight": offset, "bias": offset + w.size}
            )
            weights += [w.ravel(), b]
            offset += w.size + b.size
        elif type(module) in _ACTIVATIONS:  # exact types: a subclass may compute something else
            layer: Dict[str, Any] = {"kind": type(module).__name__.lower()}
            if isinstance(module, nn.Softplus):
                layer.update(beta=float(module.beta), threshold=float(module.threshold))
            elif isinstance(module, nn.ELU):
                layer.update(alpha=float(module.alpha))
            layers.append(layer)
        elif unsupported is None:
            unsupported = f"a {type(module).__name__} module in the decoder"
    if unsupported is not None:
        return {
            "supported": False,
            "caption": (
                f"The page cannot run this decoder ({unsupported}; it runs nn.Linear, Softplus, ReLU, Tanh and ELU, "
                f"with a Bernoulli or continuous Bernoulli likelihood): live decoding, sliders and samples are off; "
                f"the map, the digits, their reconstructions (computed in Python) and ELBOs still work."
            ),
        }
    return {
        "supported": True,
        "likelihood": vae.likelihood.name,
        "layers": layers,
        "weights": _b64(np.concatenate(weights), "<f4"),
        "caption": f"Decoder run in this page: {_describe(layers)}, then the {vae.likelihood.name} mean.",
    }


def _describe(layers: List[Dict[str, Any]]) -> str:
    linear = [layer for layer in layers if layer["kind"] == "linear"]
    sizes = [linear[0]["in"]] + [layer["out"] for layer in linear]
    activations = sorted({layer["kind"] for layer in layers if layer["kind"] != "linear"})
    return "-".join(map(str, sizes)) + (f" ({', '.join(activations)})" if activations else "")


def _elbo_caption(kl_analytic: bool) -> str:
    kl = "KL in closed form" if kl_analytic else "KL by Monte Carlo (no closed form for this guide)"
    return (
        f"ELBO = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)), in nats, by pyro_vae.inference.elbo.elbo_terms: the "
        f"reconstruction term averages {ELBO_PARTICLES} draws of q(z|x); {kl}."
    )


def _given_shape(shape: Sequence[int], x_dim: int) -> Tuple[int, List[int]]:
    """Channels, and height and width, of the images of ``shape``: grey or colour; a table is refused."""
    if len(shape) != 3 or shape[0] not in (1, 3) or math.prod(shape) != x_dim:
        what = f"a table of {math.prod(shape)} features" if len(shape) == 1 else f"data of shape {tuple(shape)}"
        raise ConfigError(
            f"the explorer draws images of x_dim={x_dim} values, grey or colour (1 or 3 channels of "
            f"height x width); {what} cannot be drawn there: read the run's figures instead",
            settings=("shape",),
        )
    return int(shape[0]), [int(shape[1]), int(shape[2])]


def _image_shape(x_dim: int) -> List[int]:
    """Height and width of an image: square when ``x_dim`` is a square, else the most square factoring."""
    height = max(h for h in range(1, math.isqrt(x_dim) + 1) if x_dim % h == 0)
    return [height, x_dim // height]


def _encode_images(x: torch.Tensor) -> Dict[str, str]:
    """Binary pixels as bits (8 per byte), grey pixels as bytes 0-255."""
    pixels = x.float().numpy()
    if np.isin(pixels, (0.0, 1.0)).all():
        return {"kind": "bits", "data": _b64(np.packbits(pixels.astype(np.uint8), axis=1), "u1")}
    return {"kind": "uint8", "data": _b64(np.round(np.clip(pixels, 0, 1) * 255), "u1")}


def _b64(values: Any, dtype: str) -> str:
    """Little-endian binary of ``values`` as base64 (a typed array in the page)."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype)).tobytes()).decode("ascii")
