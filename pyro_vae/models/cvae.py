r"""The conditional VAE of Sohn et al. (2015), "Learning Structured Output Representation using
Deep Conditional Generative Models": complete a digit from some of its quadrants.

The input :math:`x` is the pixels of 1, 2 or 3 quadrants of a digit (:func:`split_quadrants`),
the output :math:`y` the pixels of the missing ones.

Model and guide (:class:`CVAE`)
-------------------------------
.. math::

    p_\theta(y, z|x) = p_\theta(z|x)\,p_\theta(y|x,z), \qquad
    p_\theta(z|x) = \mathcal N(\mu^p_\theta(x), \sigma^p_\theta(x)^2), \quad
    p_\theta(y|x,z) = \mathrm{Bernoulli}(g_\theta(x, z)),

    q_\phi(z|x,y) = \mathcal N(\mu_\phi(x,y), \sigma_\phi(x,y)^2).

The prior is a *learned network of the input* (the "prior network"): which completions are
plausible depends on what is seen. :math:`x` is an argument of both programs, never a sample
site, so the ELBO is the conditional one,

.. math::

    \log p_\theta(y|x) \ge \mathbb E_{q_\phi(z|x,y)}[\log p_\theta(y|x,z)]
    - \mathrm{KL}(q_\phi(z|x,y)\,\|\,p_\theta(z|x)),

and the importance sampler (:func:`pyro_vae.inference.importance.log_importance_weights`, which weights
every site of the model and the guide whatever the programs' arguments) estimates the
conditional log-likelihood :math:`\log p_\theta(y|x)` (:func:`conditional_log_likelihood`).

The baseline (:class:`Baseline`) is one deterministic network :math:`f(x)`, trained on
:math:`-\log \mathrm{Bernoulli}(y; f(x))`: it predicts the conditional *mean* of the missing
pixels, a blur of all the digits that agree with the input.

Both are trained by :class:`~pyro_vae.training.trainer.Trainer`, each batch of digits split into
``(x, y)`` on the data side by :class:`QuadrantPairs`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.nn import functional as F

from pyro_vae.data.batches import Batch, Source
from pyro_vae.data.images import binarize as binarize_images
from pyro_vae.data.images import flatten_images
from pyro_vae.errors import ConfigError, InvalidDataError, check_positive
from pyro_vae.inference.importance import log_importance_weights
from pyro_vae.models.networks import check_hidden_dims, mlp
from pyro_vae.models.plate import data_plate, register_module

#: Quadrants by index: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right. With ``k``
#: input quadrants the input is the first ``k`` of this order (bottom-left, top-left,
#: top-right): 1 = bottom-left, 2 = the left half, 3 = all but the bottom-right -- the layout
#: of Pyro's CVAE tutorial, so that its table compares.
INPUT_ORDER = (2, 0, 1, 3)
QUADRANT = 14 * 14


def quadrant_mask(num_inputs: int) -> torch.Tensor:
    """``[784]`` booleans, True on the pixels of the ``num_inputs`` input quadrants."""
    if isinstance(num_inputs, bool) or num_inputs not in (1, 2, 3):
        raise ConfigError(
            f"num_inputs must be 1, 2 or 3 input quadrants, got {num_inputs!r}; pass one of 1, 2, 3",
            settings=("num_inputs",),
        )
    mask = torch.zeros(28, 28, dtype=torch.bool)
    for q in INPUT_ORDER[:num_inputs]:
        row, col = divmod(q, 2)
        mask[14 * row : 14 * row + 14, 14 * col : 14 * col + 14] = True
    return mask.flatten()


def split_quadrants(images: torch.Tensor, num_inputs: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: the input quadrants' pixels ``[N, 196 k]`` and the missing ones' ``[N, 196 (4 - k)]``."""
    images = flatten_images(images, 784)
    mask = quadrant_mask(num_inputs)
    return images[:, mask], images[:, ~mask]


def join_quadrants(x: torch.Tensor, y: torch.Tensor, num_inputs: int) -> torch.Tensor:
    """The inverse of :func:`split_quadrants`: ``[N, 784]`` images."""
    mask = quadrant_mask(num_inputs)
    images = x.new_empty(x.shape[0], 784)
    images[:, mask] = x
    images[:, ~mask] = y
    return images


class QuadrantPairs:
    """The CVAE's data-side transform (:mod:`pyro_vae.data.transforms`): each batch of images,
    binarized as ``binarize`` says, split into ``(x, y)``, the pixels of its ``num_inputs`` input
    quadrants and of the missing ones (:func:`split_quadrants`). Training images are binarized
    afresh at every step (``"dynamic"``), held-out images thresholded at 0.5, once (or, with
    ``"none"``, grey levels throughout)."""

    def __init__(self, num_inputs: int, binarize: str = "dynamic") -> None:
        quadrant_mask(num_inputs)  # 1, 2 or 3, else a ConfigError naming num_inputs
        if binarize not in ("dynamic", "none"):
            raise ConfigError(
                f"binarize must be 'dynamic' or 'none' for the CVAE, got {binarize!r}", settings=("binarize",)
            )
        self.num_inputs, self.binarize = num_inputs, binarize

    def _split(self, batch: Batch, images: torch.Tensor) -> Batch:
        return Batch(split_quadrants(images, self.num_inputs), {})

    def train(self, batch: Batch, generator: torch.Generator) -> Batch:
        return self._split(batch, binarize_images(batch.first, self.binarize, generator))

    def evaluation(self, data: Source) -> Source:
        mode = "fixed" if self.binarize == "dynamic" else "none"
        return data.map(lambda batch: self._split(batch, binarize_images(batch.first, mode)))


class QuadrantDoor(nn.Module):
    """The door of both conditional models: checks the shapes of ``x`` (the ``num_inputs`` given
    quadrants) and ``y`` (the missing ones) before the model or guide runs."""

    num_inputs: int

    def _check(self, x: torch.Tensor, y: Optional[torch.Tensor]) -> None:
        k = self.num_inputs
        if x.dim() != 2 or x.shape[-1] != QUADRANT * k:
            raise InvalidDataError(
                f"x must be the pixels of {k} input quadrant(s), shape [B, {QUADRANT * k}], got {tuple(x.shape)}; "
                f"split images with pyro_vae.models.cvae.split_quadrants(images, {k})"
            )
        if x.shape[0] == 0:
            raise InvalidDataError("x is an empty batch (0 inputs); pass at least one")
        if y is not None and (y.shape != (x.shape[0], QUADRANT * (4 - k))):
            raise InvalidDataError(
                f"y must be the pixels of the {4 - k} missing quadrant(s), shape [{x.shape[0]}, {QUADRANT * (4 - k)}], "
                f"got {tuple(y.shape)}; split images with pyro_vae.models.cvae.split_quadrants(images, {k})"
            )


class CVAE(QuadrantDoor):
    r"""Sohn et al.'s CVAE: sites ``"z"`` (Normal from the prior network :math:`p_\theta(z|x)`) and
    ``"y"`` (Bernoulli over the missing pixels, observed when given), in the plate ``"data"``.

    :param num_inputs: input quadrants, 1-3.
    :param z_dim: latent size.
    :param hidden_dims: hidden widths of each of the three networks (prior, recognition, generation).
    """

    name = "cvae"

    def __init__(
        self, num_inputs: int, z_dim: int = 20, hidden_dims: Sequence[int] = (500, 500), activation: str = "relu"
    ) -> None:
        super().__init__()
        quadrant_mask(num_inputs)  # refuses a bad count
        self.num_inputs = num_inputs
        self.z_dim = check_positive("z_dim", z_dim, example=20)
        self.hidden_dims = check_hidden_dims(hidden_dims)
        self.activation = activation
        x_dim, y_dim, h = QUADRANT * num_inputs, QUADRANT * (4 - num_inputs), list(self.hidden_dims)
        self.prior_net = mlp([x_dim, *h, 2 * z_dim], activation)
        self.recognition_net = mlp([x_dim + y_dim, *h, 2 * z_dim], activation)
        self.generation_net = mlp([x_dim + z_dim, *h, y_dim], activation)

    @property
    def config(self) -> Dict[str, Any]:
        """The constructor's arguments, to rebuild the network from a checkpoint."""
        return {
            "num_inputs": self.num_inputs,
            "z_dim": self.z_dim,
            "hidden_dims": list(self.hidden_dims),
            "activation": self.activation,
        }

    @staticmethod
    def _normal(params: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = params.chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(scale) + 1e-6).to_event(1)

    def prior(self, x: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`p_\theta(z|x)`."""
        return self._normal(self.prior_net(x))

    def generate(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r"""Logits of :math:`p_\theta(y|x,z)`; ``x`` broadcast against leading particle dimensions of ``z``."""
        return self.generation_net(torch.cat([x.expand(*z.shape[:-1], x.shape[-1]), z], dim=-1))

    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, num_data: Optional[int] = None) -> torch.Tensor:
        r""":math:`p_\theta(z|x)\,p_\theta(y|x,z)`, ``y`` observed when given."""
        self._check(x, y)
        register_module(self.name, self)
        with data_plate(x.shape[0], num_data, x.device):
            z = pyro.sample("z", self.prior(x))
            logits = self.generate(x, z)
            return pyro.sample("y", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor, num_data: Optional[int] = None) -> None:
        r""":math:`q_\phi(z|x,y)`."""
        self._check(x, y)
        register_module(self.name, self)
        with data_plate(x.shape[0], num_data, x.device):
            pyro.sample("z", self._normal(self.recognition_net(torch.cat([x, y], dim=-1))))

    @torch.no_grad()
    def complete(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        r"""``[num_samples, B, 196 (4 - k)]`` completions: the mean pixels of
        :math:`p_\theta(y|x,z)` at draws :math:`z \sim p_\theta(z|x)`."""
        z = self.prior(x).sample((num_samples,))
        return torch.sigmoid(self.generate(x, z))


class Baseline(QuadrantDoor):
    r"""The deterministic network :math:`f(x)`, as a model with one observed site
    ``"y"`` ~ Bernoulli(:math:`f(x)`) and no latent (its guide is empty): the ELBO is
    exactly :math:`\log p(y|x)`."""

    name = "cvae_baseline"

    def __init__(self, num_inputs: int, hidden_dims: Sequence[int] = (500, 500), activation: str = "relu") -> None:
        super().__init__()
        quadrant_mask(num_inputs)
        self.num_inputs = num_inputs
        self.hidden_dims = check_hidden_dims(hidden_dims)
        self.activation = activation
        self.net = mlp([QUADRANT * num_inputs, *self.hidden_dims, QUADRANT * (4 - num_inputs)], activation)

    @property
    def config(self) -> Dict[str, Any]:
        """The constructor's arguments, to rebuild the network from a checkpoint."""
        return {"num_inputs": self.num_inputs, "hidden_dims": list(self.hidden_dims), "activation": self.activation}

    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, num_data: Optional[int] = None) -> torch.Tensor:
        self._check(x, y)
        register_module(self.name, self)
        with data_plate(x.shape[0], num_data, x.device):
            return pyro.sample("y", dist.Bernoulli(logits=self.net(x), validate_args=False).to_event(1), obs=y)

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, num_data: Optional[int] = None) -> None:
        """Nothing is latent."""

    @torch.no_grad()
    def complete(self, x: torch.Tensor) -> torch.Tensor:
        """The one prediction: the mean of the missing pixels."""
        return torch.sigmoid(self.net(x))


def conditional_log_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    y: torch.Tensor,
    num_samples: int = 100,
    batch_size: int = 500,
) -> torch.Tensor:
    r"""Per pair, :math:`\log \hat p_K(y_i|x_i) = \operatorname{logsumexp}_k \log w_{ik} - \log K` with
    :math:`\log w_{ik} = \log p(z_{ik}|x_i) + \log p(y_i|x_i, z_{ik}) - \log q(z_{ik}|x_i, y_i)`,
    :math:`z_{ik} \sim q(z|x_i, y_i)`: the library's importance sampler with ``(x, y)`` as the
    programs' arguments. A model without latent sites (the baseline) gives the exact value."""
    check_positive("num_samples", num_samples, example=100)
    out: List[torch.Tensor] = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            if not _has_sample_sites(guide, xb, yb):  # nothing latent: log p(y|x) is the model's own density
                trace = poutine.trace(model).get_trace(xb, yb)
                log_p = sum(
                    cast(dist.TorchDistribution, site["fn"]).log_prob(cast(torch.Tensor, site["value"]))
                    for site in trace.nodes.values()
                    if site["type"] == "sample" and not site_is_subsample(site)
                )
                out.append(cast(torch.Tensor, log_p))  # a tensor: the model observes y, so it has a sample site
                continue
            log_w, _ = log_importance_weights(model, guide, xb, yb, num_particles=num_samples)
            out.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
    return torch.cat(out)


def _has_sample_sites(guide: Callable[..., Any], x: torch.Tensor, y: torch.Tensor) -> bool:
    trace = poutine.trace(guide).get_trace(x, y)
    return any(site["type"] == "sample" and not site_is_subsample(site) for site in trace.nodes.values())
