r"""The variational autoencoder as a Pyro model and guide.

The *model* is the generative story (seed items 5 and 10)

.. math::

    z_i \sim p(z) = \mathcal N(0, I), \qquad x_i \mid z_i \sim p_\theta(x \mid z_i),

with the decoder network inside :math:`p_\theta`. The *guide* is the amortized
approximate posterior (seed items 6 and 10)

.. math::

    q_\phi(z \mid x_i) = \mathcal N\big(\mu_\phi(x_i), \operatorname{diag} \sigma_\phi(x_i)^2\big).

Both sample the latent site ``"z"`` inside ``pyro.plate("data")``; the model
observes site ``"x"``. :class:`pyro.infer.Trace_ELBO` run on the pair estimates
the ELBO (seed item 8), and SVI ascends it in the encoder's parameters
:math:`\phi` and the decoder's :math:`\theta` jointly.

Every call of either passes one door (:meth:`VAEBase.flatten`, :meth:`VAEBase.check_input`,
:meth:`VAEBase.check_guide`): the input is checked (shape, dtype, device, an empty batch; NaN
and the likelihood's support while Pyro's validation is on), and the first call checks
the guide contract, so a raw ``SVI(vae.model, vae.guide, ...)`` refuses a broken guide
or bad data with a one-line error naming the fix. The door is the base class
:class:`VAEBase`, which the hierarchical VAE (:mod:`pyro_vae.models.hvae`) shares.

The prior is a choice (``prior=``): ``"standard"``, the :math:`\mathcal N(0, I)` above, or
``"vamp"``, the learned mixture of the guide's posteriors at pseudo-inputs
:math:`p_\lambda(z) = \frac1K\sum_k q_\phi(z|u_k)` (:mod:`pyro_vae.models.priors`), whose KL
every ELBO then estimates by Monte Carlo.

Reference: Kingma & Welling (2014), "Auto-Encoding Variational Bayes".
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, cast

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.util import is_validation_enabled
from torch import nn

from pyro_vae.data.images import check_finite, flatten_images
from pyro_vae.errors import ConfigError, InvalidDataError, check_positive
from pyro_vae.inference.evaluate import distribution_mean
from pyro_vae.inference.guide_contract import check_guide
from pyro_vae.models.guides import make_guide
from pyro_vae.models.likelihoods import Likelihood, get_likelihood
from pyro_vae.models.networks import check_hidden_dims, mlp
from pyro_vae.models.plate import data_plate, register_module, registration_skipped
from pyro_vae.models.priors import VampPrior, check_prior, standard_normal
from pyro_vae.rng import rng_fork

#: How a tensor of each floating dtype is converted (``x.float()``, ``vae.double()``).
_DTYPE_METHODS = {torch.float16: "half", torch.bfloat16: "bfloat16", torch.float32: "float", torch.float64: "double"}


def _refuse_empty(x: torch.Tensor) -> None:
    if x.shape[0] == 0:  # a plate of size 0 would fail deep inside Pyro, with ZeroDivisionError
        raise InvalidDataError("x is an empty batch (0 images); pass at least one image")


class VAEBase(nn.Module):
    r"""The door and the conveniences every model of pyro_vae shares.

    A subclass builds ``decoder`` (the network from the bottom code to the likelihood's
    logits; its first layer gives the parameters' dtype and device), sets ``x_dim``,
    ``z_dim`` (the size of the bottom code, the one the decoder reads), ``likelihood``,
    ``name``, ``require_reparameterized`` and ``guide_checked = False``, and writes the
    model and the guide as ``_model(x, num_data)`` and ``_guide(x, num_data)`` on flattened
    pixels. :meth:`model` and :meth:`guide` wrap them in the door: input checks on every
    call, the guide contract (:mod:`pyro_vae.inference.guide_contract`) on the first.
    """

    #: the latent site holding the bottom code, whose distribution under the guide :meth:`~pyro_vae.models.vae.VAEBase.posterior` returns
    code_site: str = "z"
    #: the event shape ``(z_dim,)`` the contract requires of a one-latent model, or ``None``
    #: to require the model's own event shapes at every latent site
    _contract_z_dim: Optional[int] = None

    x_dim: int
    z_dim: int
    name: str
    require_reparameterized: bool
    guide_checked: bool
    #: whether the contract was also checked on a call that scales a minibatch (rule 2's scale)
    guide_scale_checked: bool = False
    decoder: nn.Sequential
    likelihood: Likelihood

    @property
    def config(self) -> Dict[str, Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError(f"{type(self).__name__} must define config")

    def _model(self, x: torch.Tensor, num_data: Optional[int] = None) -> Any:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must define _model")

    def _guide(self, x: torch.Tensor, num_data: Optional[int] = None) -> Any:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must define _guide")

    def sample_prior(self, num_samples: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must define sample_prior")

    # ---- the door: every call of the model and the guide passes here ------------------
    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, ...]`` images to ``[B, x_dim]`` pixels (:func:`pyro_vae.data.images.flatten_images`),
        refusing a dtype or device other than the parameters'."""
        x = flatten_images(x, self.x_dim)
        weight = cast(nn.Linear, self.decoder[0]).weight  # the first Linear: cheaper than next(parameters())
        if x.dtype != weight.dtype:
            fix = f"x.{_DTYPE_METHODS.get(weight.dtype, 'to')}()"
            other = f" or call vae.{_DTYPE_METHODS[x.dtype]}()" if x.dtype in _DTYPE_METHODS else ""
            raise InvalidDataError(
                f"x is {str(x.dtype).replace('torch.', '')} but the VAE's parameters are "
                f"{str(weight.dtype).replace('torch.', '')}; pass {fix}{other}"
            )
        if x.device != weight.device:
            raise InvalidDataError(
                f"x is on {x.device} but the VAE's parameters are on {weight.device}; pass "
                f"x.to({str(weight.device)!r}) or move the VAE with vae.to({str(x.device)!r})"
            )
        return x

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse an empty batch, NaN/infinite pixels and pixels outside the likelihood's
        support, each in one line.

        :meth:`model` and :meth:`guide` call it while Pyro's validation is on (the default),
        before any network sees ``x``: a NaN pixel is named as such, not as a NaN ``loc``
        of the encoder's Normal.
        """
        _refuse_empty(x)
        check_finite(x, "x")
        self.likelihood.check_support(x)

    def check_guide(self, x: torch.Tensor, num_data: Optional[int] = None) -> None:
        """Check the guide contract (:mod:`pyro_vae.inference.guide_contract`) for the call
        ``guide(x, num_data)`` on two rows of ``x``: once, and once more at the first call
        that scales a minibatch (``num_data`` above the batch), whose plate rule it judges.

        Runs on its own RNG stream and hidden from any enclosing Pyro handler (an SVI
        step's trace, a KL weight), so checking changes no number that training draws;
        afterwards it costs an attribute look-up per call.

        :raises GuideError: naming the rule the guide breaks and the fix.
        """
        scaled = num_data is not None and num_data > x.shape[0]
        if self.guide_checked and (self.guide_scale_checked or not scaled):
            return
        x = self.flatten(x)
        self.check_input(x[:2])  # bad data is the data's fault, not the guide's
        with rng_fork(0), poutine.block(), registration_skipped(False), pyro.validation_enabled(True):
            check_guide(
                self._model,
                self._guide,
                x,
                self._contract_z_dim,
                self.require_reparameterized,
                num_data=num_data if scaled else None,
            )
        self.guide_checked = True
        self.guide_scale_checked = self.guide_scale_checked or scaled

    def _enter(self, x: torch.Tensor, num_data: Optional[int]) -> torch.Tensor:
        x = self.flatten(x)
        if is_validation_enabled():
            self.check_input(x)
        else:
            _refuse_empty(x)
        if not self.guide_scale_checked:
            self.check_guide(x, num_data)
        return x

    def model(self, x: torch.Tensor, num_data: Optional[int] = None) -> Any:
        r"""The joint :math:`p(x, z)` (seed item 5), ``x`` observed, behind the door."""
        return self._model(self._enter(x, num_data), num_data)

    def guide(self, x: torch.Tensor, num_data: Optional[int] = None) -> Any:
        r"""The amortized posterior :math:`q(z|x)` (seed items 6 and 10), behind the door."""
        return self._guide(self._enter(x, num_data), num_data)

    # ---- conveniences built on the two programs ---------------------------------------------

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        r"""The guide's distribution of the bottom code (site ``code_site``) for a batch."""
        trace = pyro.poutine.trace(self.guide).get_trace(x)
        if self.code_site not in trace.nodes:
            raise ValueError(f"the guide did not sample a site named {self.code_site!r}")
        return cast(dist.TorchDistribution, trace.nodes[self.code_site]["fn"])

    def decode(self, z: torch.Tensor) -> dist.TorchDistribution:
        r"""The likelihood :math:`p_\theta(x|z)` as a distribution over images."""
        return self.likelihood(self.decoder(z))

    def decoded_mean(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathbb E[x|z]` under the decoder."""
        return self.likelihood.mean(self.decoder(z))

    def posterior_mean(self, x: torch.Tensor, num_samples: int = 64) -> torch.Tensor:
        r""":math:`\mathbb E_q[z|x]`: exact where the guide's distribution has a mean
        (Gaussian guides), else a Monte Carlo average of ``num_samples`` draws (flows)."""
        return distribution_mean(self.posterior(x), num_samples)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        r"""Mean reconstruction :math:`\mathbb E[x|z=\mathbb E_q[z|x]]` at the posterior mean."""
        return self.decoded_mean(self.posterior_mean(x))


class VAE(VAEBase):
    r"""A VAE written as a Pyro ``model`` (prior and decoder) and ``guide`` (encoder).

    :param x_dim: number of pixels; inputs may be ``[B, x_dim]`` or images whose
        trailing dimensions multiply to ``x_dim`` (e.g. ``[B, 1, 28, 28]``).
    :param z_dim: dimension of the latent code ``z``.
    :param hidden_dims: widths of the hidden layers of encoder and decoder.
    :param likelihood: ``"bernoulli"`` (binary pixels) or ``"continuous_bernoulli"``
        (grey-level pixels in [0, 1]); see :mod:`pyro_vae.models.likelihoods`.
    :param guide: the approximate posterior :math:`q(z|x)`: ``None`` or ``"diagonal"``
        for the diagonal-Normal MLP encoder, another built-in by name (``"conv"``,
        ``"full_covariance"``, ``"iaf"``; see :mod:`pyro_vae.models.guides`), or your own
        callable ``guide(x, num_data=None)`` that samples site ``"z"`` (event shape
        ``(z_dim,)``) inside :func:`~pyro_vae.models.plate.data_plate` exactly as :meth:`model`
        does (:mod:`pyro_vae.inference.guide_contract`). An :class:`~torch.nn.Module` guide
        becomes a submodule, so its parameters are saved with the VAE.
    :param activation: hidden-layer nonlinearity (``softplus``, ``relu``, ``tanh``, ``elu``).
    :param name: prefix of this VAE's parameter names in Pyro's param store.
    :param require_reparameterized: whether the guide contract requires site ``"z"`` to
        be reparameterized (rule 4). Every objective of :mod:`pyro_vae.inference.objectives` needs
        it; pass ``False`` for a score-function guide trained with your own SVI and, e.g.,
        :class:`pyro.infer.TraceGraph_ELBO`.
    :param prior: ``"standard"`` for :math:`p(z) = \mathcal N(0, I)`, or ``"vamp"`` for the
        VampPrior :math:`\frac1K \sum_k q(z|u_k)` over learned pseudo-inputs
        (:class:`~pyro_vae.models.priors.VampPrior`; it needs a built-in guide, or a guide module with
        a ``distribution(x)`` method, to evaluate :math:`q(z|u_k)`).
    :param num_pseudo_inputs: :math:`K` of the VampPrior (500 in Tomczak & Welling).

    The guide contract is checked once, on the first call of :meth:`model` or
    :meth:`guide` (:meth:`check_guide`), whichever path calls them: raw
    :class:`pyro.infer.SVI`, :class:`~pyro_vae.training.trainer.Trainer`, :func:`~pyro_vae.inference.elbo.elbo_terms`
    or :func:`~pyro_vae.inference.evaluate.log_likelihood`.
    """

    def __init__(
        self,
        x_dim: int = 784,
        z_dim: int = 50,
        hidden_dims: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        guide: Optional[Callable[..., Any]] = None,
        activation: str = "softplus",
        name: str = "vae",
        require_reparameterized: bool = True,
        prior: str = "standard",
        num_pseudo_inputs: int = 500,
    ) -> None:
        super().__init__()
        self.x_dim = check_positive("x_dim", x_dim, example=784)
        self.z_dim = check_positive("z_dim", z_dim, example=50)
        self._contract_z_dim = self.z_dim
        self.prior = check_prior(prior)
        self.hidden_dims = check_hidden_dims(hidden_dims)
        self.likelihood = get_likelihood(likelihood, self.x_dim)
        self.activation = activation
        self.name = name
        self.decoder = mlp([self.z_dim, *self.hidden_dims, self.x_dim * self.likelihood.params_per_feature], activation)
        if guide is None or isinstance(guide, str):
            # A built-in guide by name (see pyro_vae.models.guides.GUIDES): an nn.Module encoder.
            self.guide_name = guide or "diagonal"
            self.encoder: Optional[nn.Module] = make_guide(
                self.guide_name, self.x_dim, self.z_dim, self.hidden_dims, activation, name_prefix=name
            )
            self._guide_fn: Optional[Callable[..., Any]] = None
        elif callable(guide):
            self.guide_name = f"custom:{getattr(guide, '__name__', type(guide).__name__)}"
            guide_z_dim = getattr(guide, "z_dim", self.z_dim)
            if guide_z_dim != self.z_dim:
                raise ConfigError(
                    f"the guide has z_dim={guide_z_dim} but the VAE has z_dim={self.z_dim}; "
                    f"build both with the same z_dim"
                )
            # An nn.Module guide becomes a submodule: its parameters are saved with the VAE.
            self.encoder = guide if isinstance(guide, nn.Module) else None
            self._guide_fn = None if isinstance(guide, nn.Module) else guide
        else:
            raise TypeError(
                f"guide must be None, the name of a built-in guide, or a callable "
                f"guide(x, num_data=None); got {type(guide).__name__}"
            )
        self.require_reparameterized = bool(require_reparameterized)
        self.guide_checked = False  #: set by the first :meth:`check_guide` that passes
        self.vamp: Optional[VampPrior] = None
        if self.prior == "vamp":
            if not callable(getattr(self.encoder, "distribution", None)):
                raise ConfigError(
                    f"prior='vamp' evaluates the guide's q(z|u) at pseudo-inputs, so it needs a built-in "
                    f"guide or a guide module with a distribution(x) method; {self.guide_name} has none",
                    settings=("prior", "guide"),
                )
            self.vamp = VampPrior(num_pseudo_inputs, self.x_dim)
            self._check_vamp_guide()

    def _check_vamp_guide(self) -> None:
        """Refuse a guide whose q(z|u) cannot be scored at codes of other datapoints, which the
        VampPrior's density needs: a flow conditioned on its input (``guide="iaf"``)."""
        codes = cast(nn.Linear, self.decoder[0]).weight.new_zeros(2, self.z_dim)
        try:
            with torch.no_grad():
                self.prior_distribution(codes.new_zeros(2, self.x_dim)).log_prob(codes)
        except (RuntimeError, ValueError, NotImplementedError) as err:
            raise ConfigError(
                f"prior='vamp' needs the guide's density q(z|u_k) at every code z for each pseudo-input u_k, "
                f"which the {self.guide_name} guide cannot give for a batch of codes (a flow conditioned on "
                f"its input); use guide='diagonal', 'conv' or 'full_covariance' with it",
                settings=("prior", "guide"),
            ) from err

    @property
    def config(self) -> Dict[str, Any]:
        """What is needed to rebuild this VAE (stored in checkpoints); the prior's keys only
        when it is not the standard Normal, so earlier checkpoints keep their configuration."""
        config = {
            "x_dim": self.x_dim,
            "z_dim": self.z_dim,
            "hidden_dims": list(self.hidden_dims),
            "likelihood": self.likelihood.name,
            "activation": self.activation,
            "guide": self.guide_name,
        }
        if self.vamp is not None:
            config.update(prior=self.prior, num_pseudo_inputs=self.vamp.num_pseudo_inputs)
        return config

    # The door and the conveniences of VAEBase, named on VAE too: the API pages document
    # (and the docs link) them as VAE.check_guide, VAE.posterior, ...
    flatten = VAEBase.flatten
    check_input = VAEBase.check_input
    check_guide = VAEBase.check_guide
    posterior = VAEBase.posterior
    decode = VAEBase.decode
    decoded_mean = VAEBase.decoded_mean
    posterior_mean = VAEBase.posterior_mean
    reconstruct = VAEBase.reconstruct

    # ---- the model: p(z) p(x|z) ---------------------------------------------------------

    def model(self, x: torch.Tensor, num_data: Optional[int] = None) -> torch.Tensor:
        r"""The joint :math:`p(x, z) = p(z)\,p_\theta(x|z)` (seed item 5), ``x`` observed.

        Returns the decoder logits for the sampled ``z``.
        """
        return self._model(self._enter(x, num_data), num_data)

    def prior_distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        r"""The prior :math:`p(z)` for each row of ``x`` (``[B, x_dim]``): batch ``(B,)``, event ``(z_dim,)``.

        :math:`\mathcal N(0, I)`, or the VampPrior :math:`\frac1K\sum_k q(z|u_k)` with
        ``prior="vamp"`` (:mod:`pyro_vae.models.priors`).
        """
        if self.vamp is None:
            return standard_normal(x, x.shape[0], self.z_dim)
        # with a VampPrior the encoder has distribution(x) (checked in __init__)
        return self.vamp.distribution(cast(Any, self.encoder).distribution).expand([x.shape[0]])

    def _model(self, x: torch.Tensor, num_data: Optional[int] = None) -> torch.Tensor:
        register_module(f"{self.name}.decoder", self.decoder)
        if self.vamp is not None:
            register_module(f"{self.name}.prior", self.vamp)
        batch_size = x.shape[0]
        with data_plate(batch_size, num_data, x.device):
            z = pyro.sample("z", self.prior_distribution(x))
            logits = self.decoder(z)
            pyro.sample("x", self.likelihood(logits), obs=x)
        return logits

    # ---- the guide: q(z|x) ----------------------------------------------------------------

    def guide(self, x: torch.Tensor, num_data: Optional[int] = None) -> Any:
        r"""The amortized posterior :math:`q_\phi(z|x)` (seed items 6 and 10).

        Runs the guide given at construction on ``x`` flattened to ``[B, x_dim]``; it
        samples site ``"z"`` in the model's plate (the contract: :mod:`pyro_vae.inference.guide_contract`).
        """
        return self._guide(self._enter(x, num_data), num_data)

    def _guide(self, x: torch.Tensor, num_data: Optional[int] = None) -> Any:
        guide = self.encoder if self.encoder is not None else self._guide_fn
        assert guide is not None  # __init__ sets the encoder or the guide function
        return guide(x, num_data=num_data)

    def sample_prior(self, num_samples: int) -> torch.Tensor:
        r"""Decoder means of ``num_samples`` codes :math:`z \sim p(z)` (the standard Normal or the VampPrior)."""
        device = next(self.decoder.parameters()).device
        if self.vamp is None:
            return self.decoded_mean(torch.randn(num_samples, self.z_dim, device=device))
        with torch.no_grad():
            # with a VampPrior the encoder has distribution(x) (checked in __init__)
            z = self.vamp.distribution(cast(Any, self.encoder).distribution).sample((num_samples,))
        return self.decoded_mean(z)
