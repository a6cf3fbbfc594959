r"""The linear Gaussian latent variable model (probabilistic PCA): a VAE whose posterior is exact.

The model has the VAE's structure (seed items 5 and 10) with a linear decoder,

.. math::

    z \sim p(z) = \mathcal N(0, I_k), \qquad
    x \mid z \sim p(x \mid z) = \mathcal N(W z + b, \sigma^2 I_d),

and, unlike the VAE (seed item 6), everything is tractable:

* the evidence :math:`p(x) = \int p(x|z)\,p(z)\,dz = \mathcal N(b,\; W W^\top + \sigma^2 I_d)`;
* the posterior by Bayes' rule (seed item 1), :math:`p(z|x) = p(x|z)\,p(z)/p(x)`.
  As a function of :math:`z`,

  .. math::

      \log p(z) + \log p(x|z)
      = -\tfrac12 z^\top \Lambda z + z^\top W^\top (x - b)/\sigma^2 + \text{const},
      \qquad \Lambda = I_k + W^\top W / \sigma^2,

  a Gaussian in :math:`z` up to a constant; completing the square gives
  :math:`p(z|x) = \mathcal N\big(\Lambda^{-1} W^\top (x - b)/\sigma^2,\; \Lambda^{-1}\big)`,
  and the constant that normalizes it is :math:`\log p(x)`;
* for any Gaussian :math:`q(z|x) = \mathcal N(m, S)`, :math:`S = L L^\top`, the ELBO
  (seed items 8 and 9) in closed form,

  .. math::

      \mathbb E_q[\log p(x|z)] = -\tfrac d2 \log(2\pi\sigma^2)
          - \frac{\lVert x - b - W m\rVert^2 + \operatorname{tr}(W S W^\top)}{2\sigma^2},
      \qquad
      \mathrm{KL}(q\,\|\,p(z)) = \tfrac12\big(\operatorname{tr} S + m^\top m - k - \log\det S\big),

  and the gap :math:`\mathrm{KL}(q\,\|\,p(z|x)) = \tfrac12\big(\operatorname{tr}(\Lambda S)
  + (\mu - m)^\top \Lambda (\mu - m) - k - \log\det S - \log\det\Lambda\big)`, so that
  :math:`\log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}(q\,\|\,p(z|x))` (seed item 8) can be
  checked to rounding error.

:class:`LinearGaussianModel.model` uses the VAE's site names and plate (``"z"``,
``"x"``, ``pyro.plate("data")``, the same ``num_data`` scaling), so the guides and
objectives written for :class:`~pyro_vae.models.vae.VAE` run on it unchanged and can be
measured against these exact answers. :class:`LinearGaussianGuide` is an amortized
guide whose family contains the exact posterior whenever :math:`W^\top W` is
diagonal (orthogonal columns of :math:`W`): then :math:`\Lambda` is diagonal and
the posterior mean is linear in :math:`x`. Its two-layer version, on which models with
several latent sites are checked, is :mod:`pyro_vae.models.linear_gaussian_chain`.

Reference: Tipping & Bishop (1999), "Probabilistic Principal Component Analysis";
Bishop (2006), *Pattern Recognition and Machine Learning*, section 2.3.3 and 12.2.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from pyro_vae.errors import InvalidDataError
from pyro_vae.inference.elbo import ELBOTerms, elbo_terms
from pyro_vae.models.plate import data_plate, register_module


def _check_data(x: torch.Tensor, x_dim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InvalidDataError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != x_dim or not x.is_floating_point():
        raise InvalidDataError(f"x must be a float tensor of shape [batch, {x_dim}], got {tuple(x.shape)} {x.dtype}")
    return x


class LinearGaussianModel(nn.Module):
    r"""Probabilistic PCA: :math:`z \sim \mathcal N(0, I_k)`, :math:`x|z \sim \mathcal N(Wz + b, \sigma^2 I)`.

    The parameters are fixed buffers (``.double()`` converts them); the class answers
    every question of seed items 1 and 6-8 exactly.

    :param W: ``[d, k]`` loading matrix.
    :param b: ``[d]`` offset.
    :param sigma: observation noise standard deviation, ``> 0``.
    """

    W: torch.Tensor
    b: torch.Tensor
    sigma: torch.Tensor

    def __init__(
        self,
        W: torch.Tensor,
        b: torch.Tensor,
        sigma: Union[float, torch.Tensor],
    ) -> None:
        super().__init__()
        W = torch.as_tensor(W)
        if not W.is_floating_point():
            W = W.to(torch.get_default_dtype())
        if W.dim() != 2:
            raise ValueError(f"W must be a [x_dim, z_dim] matrix, got shape {tuple(W.shape)}")
        b = torch.as_tensor(b, dtype=W.dtype, device=W.device)
        if b.shape != W.shape[:1]:
            raise ValueError(f"b must have shape [{W.shape[0]}], got {tuple(b.shape)}")
        sigma = torch.as_tensor(sigma, dtype=W.dtype, device=W.device)
        if sigma.dim() != 0 or not sigma > 0:
            raise ValueError(f"sigma must be a positive scalar, got {sigma}")
        self.register_buffer("W", W)
        self.register_buffer("b", b)
        self.register_buffer("sigma", sigma)

    @property
    def x_dim(self) -> int:
        return self.W.shape[0]

    @property
    def z_dim(self) -> int:
        return self.W.shape[1]

    # ---- the generative model (seed items 5 and 1's numerator) ------------------------------

    def prior(self) -> dist.TorchDistribution:
        r"""The prior :math:`p(z) = \mathcal N(0, I_k)`, event shape ``(k,)``."""
        zeros = self.W.new_zeros(self.z_dim)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        r"""The likelihood :math:`p(x|z) = \mathcal N(Wz + b, \sigma^2 I_d)`, event shape (d,)."""
        return dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1)

    def model(self, x: torch.Tensor, num_data: Optional[int] = None) -> torch.Tensor:
        r"""The joint :math:`p(x, z) = p(z)\,p(x|z)` as a Pyro model with the VAE's sites and plate."""
        x = _check_data(x, self.x_dim)
        batch_size = x.shape[0]
        with data_plate(batch_size, num_data, x.device):
            prior = dist.Normal(x.new_zeros(()), x.new_ones(())).expand([batch_size, self.z_dim])
            z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", self.likelihood(z), obs=x)
        return z

    def sample(self, num_samples: int, generator: Union[int, torch.Generator, None] = None) -> torch.Tensor:
        r"""Draw ``[num_samples, d]`` data by ancestral sampling: :math:`z \sim p(z)`, then
        :math:`x \sim p(x|z)`.

        :param generator: a ``torch.Generator``, an integer seed, or ``None`` (global RNG).
        """
        if isinstance(generator, int):
            generator = torch.Generator(device=self.W.device).manual_seed(generator)
        opts: Dict[str, Any] = dict(dtype=self.W.dtype, device=self.W.device, generator=generator)
        z = torch.randn(num_samples, self.z_dim, **opts)
        noise = torch.randn(num_samples, self.x_dim, **opts)
        return z @ self.W.T + self.b + self.sigma * noise

    # ---- exact inference (seed items 1 and 6) ----------------------------------------------

    def evidence(self) -> dist.MultivariateNormal:
        r"""The evidence :math:`p(x) = \int p(x|z)p(z)\,dz = \mathcal N(b, W W^\top + \sigma^2 I)`."""
        eye = torch.eye(self.x_dim, dtype=self.W.dtype, device=self.W.device)
        covariance = self.W @ self.W.T + self.sigma**2 * eye
        return dist.MultivariateNormal(self.b, covariance_matrix=covariance)

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x_i)` per datapoint, shape ``[batch]``."""
        return self.evidence().log_prob(_check_data(x, self.x_dim))

    def posterior_precision(self) -> torch.Tensor:
        r"""The posterior precision :math:`\Lambda = I_k + W^\top W/\sigma^2`, the same for every x."""
        eye = torch.eye(self.z_dim, dtype=self.W.dtype, device=self.W.device)
        return eye + self.W.T @ self.W / self.sigma**2

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        r"""The exact posterior :math:`p(z|x) = p(x|z)\,p(z)/p(x)` by Bayes' rule (seed item 1).

        Completing the square in :math:`\log p(z) + \log p(x|z)` (see the module
        docstring) gives :math:`\mathcal N(\Lambda^{-1} W^\top (x-b)/\sigma^2, \Lambda^{-1})`
        with :math:`\Lambda = I + W^\top W/\sigma^2`. Batch shape ``[batch]``, event ``(k,)``.
        """
        x = _check_data(x, self.x_dim)
        precision = self.posterior_precision()
        chol = torch.linalg.cholesky(precision)
        # Solve Λ μ = Wᵀ(x − b)/σ² for every row of x at once.
        loc = torch.cholesky_solve(((x - self.b) @ self.W / self.sigma**2).T, chol).T
        return dist.MultivariateNormal(loc, precision_matrix=precision)

    def posterior_guide(self, x: torch.Tensor, num_data: Optional[int] = None) -> torch.Tensor:
        r"""A guide sampling ``"z"`` from the exact posterior: with it the ELBO is :math:`\log p(x)`."""
        x = _check_data(x, self.x_dim)
        with data_plate(x.shape[0], num_data, x.device):
            return pyro.sample("z", self.posterior(x))

    # ---- the ELBO and its gap in closed form (seed items 7-9) ------------------------------

    def _check_q(
        self, x: torch.Tensor, q_loc: torch.Tensor, q_scale_tril: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = _check_data(x, self.x_dim)
        k = self.z_dim
        if q_loc.shape != (x.shape[0], k):
            raise ValueError(f"q_loc must have shape [{x.shape[0]}, {k}], got {tuple(q_loc.shape)}")
        if q_scale_tril.shape[-2:] != (k, k) or q_scale_tril.dim() not in (2, 3):
            raise ValueError(
                f"q_scale_tril must be [{k}, {k}] or [batch, {k}, {k}], "
                f"got {tuple(q_scale_tril.shape)}; "
                "for a diagonal q pass torch.diag_embed(scale)"
            )
        diag = q_scale_tril.diagonal(dim1=-2, dim2=-1)
        if not torch.equal(q_scale_tril, q_scale_tril.tril()) or not (diag > 0).all():
            raise ValueError("q_scale_tril must be lower triangular with a positive diagonal")
        return x, q_loc, q_scale_tril

    def analytic_elbo_terms(self, x: torch.Tensor, q_loc: torch.Tensor, q_scale_tril: torch.Tensor) -> ELBOTerms:
        r"""Closed forms of :math:`\mathbb E_q[\log p(x_i|z)]`, :math:`\mathrm{KL}(q\|p(z))` and the ELBO.

        For :math:`q(z|x_i) = \mathcal N(m_i, L_i L_i^\top)`, any lower-triangular
        :math:`L_i` (``torch.diag_embed(scale)`` for a diagonal guide).
        """
        x, m, L = self._check_q(x, q_loc, q_scale_tril)
        d, k = self.x_dim, self.z_dim
        var = self.sigma**2
        resid = x - self.b - m @ self.W.T
        # tr(W S Wᵀ) = ‖W L‖²_F: the decoder's spread of q's uncertainty.
        trace_wsw = (self.W @ L).pow(2).sum((-2, -1))
        expected_sq_error = resid.pow(2).sum(-1) + trace_wsw  # E_q ‖x − b − W z‖²
        recon = -0.5 * d * torch.log(2 * math.pi * var) - expected_sq_error / (2 * var)
        log_det_s = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        kl = 0.5 * (L.pow(2).sum((-2, -1)) + m.pow(2).sum(-1) - k - log_det_s)
        return ELBOTerms(recon=recon, kl=kl, elbo=recon - kl)

    def analytic_elbo(self, x: torch.Tensor, q_loc: torch.Tensor, q_scale_tril: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathrm{ELBO}_i = \mathbb E_q[\log p(x_i|z)] - \mathrm{KL}(q(z|x_i)\|p(z))`, ``[batch]``."""
        return self.analytic_elbo_terms(x, q_loc, q_scale_tril).elbo

    def kl_to_posterior(self, x: torch.Tensor, q_loc: torch.Tensor, q_scale_tril: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathrm{KL}(q(z|x_i)\,\|\,p(z|x_i))` in closed form, ``[batch]`` (seed items 7-8)."""
        x, m, L = self._check_q(x, q_loc, q_scale_tril)
        precision = self.posterior_precision()
        mu = self.posterior(x).loc
        delta = mu - m
        trace_term = ((precision @ L) * L).sum((-2, -1))  # tr(Λ L Lᵀ)
        mahalanobis = ((delta @ precision) * delta).sum(-1)
        log_det_s = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_det_precision = torch.logdet(precision)
        return 0.5 * (trace_term + mahalanobis - self.z_dim - log_det_s - log_det_precision)


class ExactDecomposition(NamedTuple):
    r"""Per-datapoint terms of :math:`\log p(x_i) = \mathrm{ELBO}_i + \mathrm{KL}(q(z|x_i)\,\|\,p(z|x_i))`, in nats."""

    log_evidence: torch.Tensor  #: log p(x_i), exact
    elbo: torch.Tensor  #: recon - kl_prior
    kl_posterior: torch.Tensor  #: KL(q(z|x_i) || p(z|x_i)), the gap of the bound
    recon: torch.Tensor  #: E_q[log p(x_i|z)]
    kl_prior: torch.Tensor  #: KL(q(z|x_i) || p(z))
    exact: bool  #: True when every term is a closed form (Gaussian q), False for MC estimates


def _gaussian_loc_scale_tril(q: Any) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(loc, scale_tril)`` of a diagonal or full-covariance Gaussian, else ``None``."""
    if isinstance(q, dist.MultivariateNormal):
        return q.loc, q.scale_tril
    base, reinterpreted = q, 0
    while isinstance(base, dist.Independent):
        reinterpreted += base.reinterpreted_batch_ndims
        base = base.base_dist
    if isinstance(base, dist.Normal) and reinterpreted == 1:
        return base.loc, torch.diag_embed(base.scale)
    return None


def decompose(
    model: "LinearGaussianModel",
    guide: Callable[..., Any],
    x: torch.Tensor,
    num_particles: int = 1000,
) -> ExactDecomposition:
    r"""Split the exact :math:`\log p(x_i)` into the ELBO of ``guide`` and its gap (seed items 7-9).

    ``guide`` is any guide with the VAE's site ``"z"`` and plate ``"data"``. When its
    :math:`q(z|x)` is Gaussian (``Normal(...).to_event(1)`` or ``MultivariateNormal``)
    every term is a closed form; otherwise the ELBO is estimated with
    ``num_particles`` samples by :func:`pyro_vae.inference.elbo.elbo_terms` and the gap is
    :math:`\log p(x) - \mathrm{ELBO}`.
    """
    q = poutine.trace(guide).get_trace(x).nodes["z"]["fn"]
    log_evidence = model.log_evidence(x)
    params = _gaussian_loc_scale_tril(q)
    if params is not None:
        loc, scale_tril = params
        terms = model.analytic_elbo_terms(x, loc, scale_tril.expand(x.shape[0], -1, -1))
        gap = model.kl_to_posterior(x, loc, scale_tril.expand(x.shape[0], -1, -1))
        return ExactDecomposition(log_evidence, terms.elbo, gap, terms.recon, terms.kl, True)
    terms = elbo_terms(model.model, guide, x, num_particles=num_particles)
    return ExactDecomposition(log_evidence, terms.elbo, log_evidence - terms.elbo, terms.recon, terms.kl, False)


class LinearGaussianGuide(nn.Module):
    r"""Amortized linear guide :math:`q(z|x) = \mathcal N(A x + c, \operatorname{diag}(\mathrm{softplus}(s))^2)`.

    Linear in :math:`x` with an :math:`x`-independent diagonal covariance: the family
    of :class:`LinearGaussianModel`'s exact posterior when that posterior is diagonal
    (:math:`W` with orthogonal columns). For a general :math:`W` the posterior
    covariance :math:`\Lambda^{-1}` is not diagonal and the best such guide keeps a
    positive :math:`\mathrm{KL}(q\|p(z|x))`.

    Call it as ``guide(x, num_data=None)``; it samples ``"z"`` in the VAE's plate and
    registers its parameters with ``pyro.module(name, ...)``.
    """

    def __init__(self, x_dim: int, z_dim: int, name: str = "linear_gaussian_guide") -> None:
        super().__init__()
        self.x_dim, self.z_dim, self.name = x_dim, z_dim, name
        self.linear = nn.Linear(x_dim, z_dim)  # A and c
        self.raw_scale = nn.Parameter(torch.zeros(z_dim))  # s; softplus keeps the scale positive

    def loc_scale(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The mean ``[B, k]`` and standard deviation ``[B, k]`` of :math:`q(z|x)`."""
        loc = self.linear(x)
        return loc, F.softplus(self.raw_scale).expand_as(loc)

    def loc_scale_tril(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(q_loc, q_scale_tril)`` in the form :meth:`LinearGaussianModel.analytic_elbo` takes."""
        loc, scale = self.loc_scale(x)
        return loc, torch.diag_embed(scale)

    def forward(self, x: torch.Tensor, num_data: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        x = _check_data(x, self.x_dim)
        register_module(self.name, self)
        with data_plate(x.shape[0], num_data, x.device):
            loc, scale = self.loc_scale(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
        return loc, scale
