r"""The reparameterization trick (seed item 11).

A sample of :math:`q(z|x) = \mathcal N(\mu, \operatorname{diag}\sigma^2)` is written as a
deterministic, differentiable function of the parameters and of parameter-free noise,

.. math::

    z = \mu + \sigma \odot \varepsilon, \qquad \varepsilon \sim \mathcal N(0, I),

so that for any differentiable :math:`f`

.. math::

    \nabla_{\mu,\sigma}\, \mathbb E_{q}[f(z)]
    = \mathbb E_{\varepsilon}\big[\nabla_{\mu,\sigma} f(\mu + \sigma \odot \varepsilon)\big],

which a Monte Carlo average estimates with low variance: gradients flow *through*
the sample to :math:`\mu` and :math:`\sigma` (and on to the encoder that produced
them). This is exactly what ``dist.Normal(loc, scale).rsample()`` does: torch draws
``eps = torch.empty(shape).normal_()`` and returns ``loc + eps * scale``, so under
the same random state :func:`reparameterize` and ``rsample`` give the same tensor
(``tests/test_reparameterization.py::test_reparameterize_is_rsample`` checks this). Pyro's ``Trace_ELBO`` uses
``rsample`` for every site whose distribution has ``has_rsample = True``, which is
how the VAE's guide is trained.

Reference: Kingma & Welling (2014), "Auto-Encoding Variational Bayes", section 2.4.
"""

from __future__ import annotations

from typing import Optional

import torch


def reparameterize(
    loc: torch.Tensor,
    scale: torch.Tensor,
    eps: Optional[torch.Tensor] = None,
    sample_shape: torch.Size = torch.Size(),
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Return :math:`z = \mu + \sigma \odot \varepsilon`, differentiable in ``loc`` and ``scale``.

    :param loc: :math:`\mu`.
    :param scale: :math:`\sigma > 0`, broadcastable with ``loc``.
    :param eps: standard-normal noise broadcastable with ``loc`` and ``scale`` (it may
        carry extra leading sample dimensions); drawn if ``None``.
    :param sample_shape: leading shape of the drawn noise, as in ``rsample(sample_shape)``.
    :param generator: random generator used to draw ``eps`` when it is not given.
    """
    if (scale <= 0).any():
        raise ValueError("scale must be positive")
    shape = torch.Size(sample_shape) + torch.broadcast_shapes(loc.shape, scale.shape)
    if eps is None:
        # The same draw as torch's Normal.rsample (torch.distributions.utils._standard_normal).
        eps = torch.empty(shape, dtype=loc.dtype, device=loc.device).normal_(generator=generator)
    return loc + eps * scale
