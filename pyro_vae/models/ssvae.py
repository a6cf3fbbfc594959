r"""The semi-supervised VAE M2 of Kingma et al. (2014), "Semi-Supervised Learning with Deep
Generative Models": the digit's label is a latent variable, observed when known.

Model and guide (:class:`SSVAE`)
--------------------------------
.. math::

    p_\theta(x, y, z) = p(y)\,p(z)\,p_\theta(x|y,z), \qquad
    p(y) = \mathrm{Cat}(1/K), \quad p(z) = \mathcal N(0, I), \quad
    p_\theta(x|y,z) = \mathrm{Bernoulli}(\mathrm{dec}_\theta(y, z)),

    q_\phi(y, z|x) = q_\phi(y|x)\,q_\phi(z|x,y), \qquad
    q_\phi(y|x) = \mathrm{Cat}(\pi_\phi(x)), \quad
    q_\phi(z|x,y) = \mathcal N(\mu_\phi(x,y), \sigma^2_\phi(x,y)).

Objective
---------
A labelled pair :math:`(x, y)` has the ELBO
:math:`-\mathcal L(x,y) = \mathbb E_{q(z|x,y)}[\log p(x,y,z) - \log q(z|x,y)]`; an unlabelled
:math:`x` sums the label out *exactly*,

.. math::

    -\mathcal U(x) = \sum_{y=0}^{K-1} q_\phi(y|x)\,\bigl(-\mathcal L(x,y)\bigr) + \mathcal H(q_\phi(y|x)),

which is what :class:`pyro.infer.TraceEnum_ELBO` computes when the guide's ``"y"`` is
enumerated in parallel (:func:`pyro.infer.config_enumerate`, ``max_plate_nesting=1``): the
``K`` classes become a tensor dimension left of the plate, no label is ever sampled. The
semi-supervised objective over labelled :math:`\mathcal D_l` and unlabelled
:math:`\mathcal D_u` data adds a classification loss with weight :math:`\alpha` on each
labelled image, in Pyro through :class:`pyro.poutine.scale`:

.. math::

    \mathcal J^\alpha = \sum_{(x,y)\in\mathcal D_l} \bigl[\mathcal L(x,y) - \alpha \log q_\phi(y|x)\bigr]
                      + \sum_{x\in\mathcal D_u} \mathcal U(x).

A labelled minibatch of :math:`B_l` out of :math:`N_l` and an unlabelled one of
:math:`B_u` out of :math:`N_u` are each scaled by their own :math:`N/B`
(:func:`pyro_vae.models.plate.data_plate`): each part's minibatch loss is unbiased for its sum, so
the sum of one labelled and one unlabelled minibatch loss is unbiased for :math:`\mathcal J^\alpha`
(:class:`SemiSupervisedELBO`, the loss of each step, on the minibatches of
:class:`~pyro_vae.data.semi_supervised.LabelledBatches`).

Kingma et al. (their Eq. 9) put :math:`\alpha` on the *average* over the labelled images,
so their :math:`\alpha = 0.1N` is :math:`0.1N/N_l` here (60 per image for 100 labels). The
default, :math:`0.1N` per image, is :math:`N_l` times theirs: on full MNIST it trained a
better classifier than theirs at every epoch measured (docs/ssvae.md).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.infer.util import is_validation_enabled
from torch import nn
from torch.nn import functional as F

from pyro_vae.data.batches import Batch
from pyro_vae.data.images import check_finite, check_pixels, flatten_images
from pyro_vae.errors import ConfigError, InvalidDataError, check_positive
from pyro_vae.models.networks import check_hidden_dims, mlp, strided_convolutions
from pyro_vae.models.plate import data_plate, register_module
from pyro_vae.training.program import Program


def check_labels(y: torch.Tensor, num_classes: int, batch: int) -> torch.Tensor:
    """``y`` as a ``[batch]`` long tensor of classes in ``0..num_classes-1``, else one clear error."""
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise InvalidDataError(
            f"labels must be integers, got dtype {str(y.dtype).replace('torch.', '')}; pass y.long()"
        )
    if y.shape != (batch,):
        raise InvalidDataError(f"labels must have shape [{batch}] (one per image), got {tuple(y.shape)}")
    bad = ((y < 0) | (y >= num_classes)).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise InvalidDataError(
            f"label {int(y[i])} at position {i} is outside 0-{num_classes - 1}; "
            f"labels must be class indices 0-{num_classes - 1}"
        )
    return y.long()


class SSVAE(nn.Module):
    r"""M2 of Kingma et al. (2014): the label ``"y"`` a Categorical latent, observed when given.

    Sites, all inside the plate ``"data"`` (:func:`~pyro_vae.models.plate.data_plate`):
    ``"y"`` (Categorical over ``num_classes``; observed in the model when ``y`` is passed,
    else enumerated by the guide), ``"z"`` (diagonal Normal of size ``z_dim``) and ``"x"``
    (Bernoulli over ``x_dim`` pixels). The classifier :math:`q_\phi(y|x)` is
    :meth:`classifier_logits`; its auxiliary loss is :meth:`classifier_model` (with the
    empty :meth:`classifier_guide`).

    :param z_dim: size of the style code ``z``.
    :param hidden_dims: hidden widths of each of the three networks.
    :param num_classes: ``K``, the number of labels.
    :param x_dim: number of pixels.
    :param alpha: the weight :math:`\alpha` of the classification loss.
    :param activation: activation between the hidden layers.
    :param classifier: the network of :math:`q_\phi(y|x)`: ``"mlp"`` (the hidden widths above,
        as in Kingma et al. and Pyro's example) or ``"conv"`` (two 3x3 stride-2 convolutions
        of 32 and 64 channels with ELU, :func:`~pyro_vae.models.networks.strided_convolutions`, then
        the hidden widths; for 28x28 images, ``x_dim=784``). The other two networks stay MLPs:
        they run once per class on unlabelled images, the classifier once per image.
    :param grey_targets: accept grey levels in [0, 1] as the targets of ``"x"``, as Pyro's
        tutorial does (``Bernoulli(validate_args=False)`` of ``x / 255``). Its log-probability
        is then a cross-entropy, not the probability of an image, and the ELBO bounds nothing;
        for comparing with that tutorial only. By default ``x`` must be binary (with Pyro's
        validation on), a draw or threshold of the image (:func:`~pyro_vae.data.images.binarize`).
    """

    name = "ss_vae"

    def __init__(
        self,
        z_dim: int = 50,
        hidden_dims: Sequence[int] = (500,),
        num_classes: int = 10,
        x_dim: int = 784,
        alpha: float = 0.1 * 60000,
        activation: str = "softplus",
        classifier: str = "mlp",
        grey_targets: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(grey_targets, bool):
            raise ConfigError(f"grey_targets must be True or False, got {grey_targets!r}", settings=("grey_targets",))
        self.grey_targets = grey_targets
        self.z_dim = check_positive("z_dim", z_dim, example=50)
        self.num_classes = check_positive("num_classes", num_classes, example=10)
        self.x_dim = check_positive("x_dim", x_dim, example=784)
        self.hidden_dims = check_hidden_dims(hidden_dims)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0 or math.isinf(alpha):
            raise ConfigError(
                f"alpha must be a finite number >= 0, got {alpha!r}; pass e.g. alpha=0.1 * num_train (Kingma et al.)",
                settings=("alpha",),
            )
        self.alpha = float(alpha)
        self.activation = activation
        h = list(self.hidden_dims)
        self.classifier_network = classifier
        #: q(y|x): logits of the label
        if classifier == "mlp":
            self.encoder_y = mlp([x_dim, *h, num_classes], activation)
        elif classifier == "conv":
            if x_dim != 784:
                raise ConfigError(
                    f"classifier='conv' reads 28x28 images (x_dim=784), got x_dim={x_dim}; "
                    f"pass classifier='mlp' for other inputs",
                    settings=("classifier", "x_dim"),
                )
            conv, features = strided_convolutions((1, 28, 28), (32, 64), "elu")
            self.encoder_y = nn.Sequential(
                nn.Unflatten(-1, (1, 28, 28)), conv, mlp([features, *h, num_classes], activation)
            )
        else:
            raise ConfigError(f"unknown classifier {classifier!r}; choose 'mlp' or 'conv'", settings=("classifier",))
        #: q(z|x,y): loc and pre-softplus scale of the style
        self.encoder_z = mlp([x_dim + num_classes, *h, 2 * z_dim], activation)
        #: p(x|y,z): Bernoulli logits of the pixels
        self.decoder = mlp([z_dim + num_classes, *h, x_dim], activation)

    @property
    def config(self) -> Dict[str, Any]:
        """The constructor's arguments, to rebuild the model from a checkpoint."""
        return {
            "z_dim": self.z_dim,
            "hidden_dims": list(self.hidden_dims),
            "num_classes": self.num_classes,
            "x_dim": self.x_dim,
            "alpha": self.alpha,
            "activation": self.activation,
            "classifier": self.classifier_network,
            "grey_targets": self.grey_targets,
        }

    # ---- the door --------------------------------------------------------------------------
    def _enter(self, x: torch.Tensor, y: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        x = flatten_images(x, self.x_dim)
        if x.shape[0] == 0:
            raise InvalidDataError("x is an empty batch (0 images); pass at least one image")
        if is_validation_enabled():
            check_finite(x, "x")
            if self.grey_targets:
                if ((x < 0) | (x > 1)).any():
                    raise InvalidDataError("x must be grey levels in [0, 1]; scale pixels of 0-255 by 1/255")
            elif ((x != 0) & (x != 1)).any():
                raise InvalidDataError(
                    "x must be binary (0 or 1) for the Bernoulli likelihood; binarize it first, "
                    "e.g. pyro_vae.binarize(x, 'dynamic') (or build SSVAE(grey_targets=True) "
                    "for Pyro's tutorial's cross-entropy of grey levels)"
                )
        if y is not None:
            y = check_labels(y, self.num_classes, x.shape[0]).to(x.device)
        return x, y

    def _with_label(self, net: nn.Sequential, y: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``net`` of the concatenation ``[one_hot(y), other]``, without forming it: the first
        layer's label columns are picked by index and added. With the label enumerated
        (``y`` of shape ``[K, 1]``) and ``other = x`` ``[B, 784]``, the 784-wide input layer runs
        once per image instead of once per class; the leading dimensions broadcast."""
        first, k = cast(nn.Linear, net[0]), self.num_classes
        hidden = F.linear(other, first.weight[:, k:], first.bias) + first.weight[:, :k].t()[y]
        return net[1:](hidden)

    # ---- model and guide -------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, num_data: Optional[int] = None) -> None:
        r""":math:`p(y)\,p(z)\,p_\theta(x|y,z)`; ``y`` observed when given."""
        x, y = self._enter(x, y)
        register_module(self.name, self)
        batch = x.shape[0]
        prior_logits = x.new_zeros(self.num_classes)
        with data_plate(batch, num_data, x.device):
            y = pyro.sample("y", dist.Categorical(logits=prior_logits).expand([batch]), obs=y)
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).expand([batch, self.z_dim]).to_event(1))
            logits = self._with_label(self.decoder, y, z)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, num_data: Optional[int] = None) -> None:
        r""":math:`q_\phi(y|x)\,q_\phi(z|x,y)`; ``y`` sampled (enumerated, under
        :class:`~pyro.infer.TraceEnum_ELBO`) only when not given."""
        x, y = self._enter(x, y)
        register_module(self.name, self)
        batch = x.shape[0]
        with data_plate(batch, num_data, x.device):
            if y is None:
                y = pyro.sample("y", dist.Categorical(logits=self.encoder_y(x)))
            loc, scale = self._with_label(self.encoder_z, y, x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, F.softplus(scale) + 1e-6).to_event(1))

    def classifier_model(self, x: torch.Tensor, y: torch.Tensor, num_data: Optional[int] = None) -> None:
        r"""The auxiliary loss: ``y`` observed under :math:`q_\phi(y|x)`, its log-probability
        scaled by :math:`\alpha` (:class:`pyro.poutine.scale`), so that an ELBO of this model
        with :meth:`classifier_guide` is :math:`-\alpha\sum\log q_\phi(y|x)` at the plate's scale."""
        x, y = cast(Tuple[torch.Tensor, torch.Tensor], self._enter(x, y))  # y given: _enter returns it checked
        register_module(self.name, self)
        with data_plate(x.shape[0], num_data, x.device), poutine.scale(scale=self.alpha):
            pyro.sample("y_aux", dist.Categorical(logits=self.encoder_y(x)), obs=y)

    def classifier_guide(self, x: torch.Tensor, y: torch.Tensor, num_data: Optional[int] = None) -> None:
        """Nothing is latent in :meth:`classifier_model`."""

    # ---- uses --------------------------------------------------------------------------------
    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        r"""Logits of :math:`q_\phi(y|x)` for ``[B, ...]`` images."""
        return self.encoder_y(flatten_images(x, self.x_dim))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable label under :math:`q_\\phi(y|x)`."""
        return self.classifier_logits(x).argmax(-1)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
        """Fraction of ``x`` whose :meth:`classify` equals ``y`` (grey levels are fine)."""
        y = check_labels(y, self.num_classes, len(x))
        right = sum(
            int((self.classify(x[i : i + batch_size]) == y[i : i + batch_size]).sum())
            for i in range(0, len(x), batch_size)
        )
        return right / len(x)

    @torch.no_grad()
    def style_code(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""The mean of :math:`q_\phi(z|x,y)`: the digit's style, its label given."""
        x = flatten_images(x, self.x_dim)
        return self._with_label(self.encoder_z, y, x).chunk(2, dim=-1)[0]

    @torch.no_grad()
    def decoded_mean(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathbb E[x|y,z]`, the pixel probabilities."""
        return torch.sigmoid(self._with_label(self.decoder, y, z))


class SemiSupervisedELBO(ELBO):
    r"""The semi-supervised objective :math:`\mathcal J^\alpha` of :class:`SSVAE`, as a
    :class:`pyro.infer.ELBO` the :class:`~pyro_vae.training.trainer.Trainer` optimizes: one step
    on an unlabelled minibatch ``x`` of :math:`N_u` images and a labelled one ``(x_labelled,
    y_labelled)`` of :math:`N_l` (:class:`~pyro_vae.data.semi_supervised.LabelledBatches`) has the loss

    .. math::

        \frac{N_u}{B_u} \sum_{x \in \text{batch}_u} \mathcal U(x)
        + \frac{N_l}{B_l} \sum_{(x,y) \in \text{batch}_l} \bigl[\mathcal L(x,y) - \alpha \log q_\phi(y|x)\bigr],

    unbiased for :math:`\mathcal J^\alpha`: :class:`pyro.infer.TraceEnum_ELBO` sums the unlabelled
    label out (the guide's ``"y"`` enumerated in parallel), :class:`pyro.infer.Trace_ELBO` scores the
    labelled pairs and the classification loss (:meth:`SSVAE.classifier_model`). Kingma et al.
    (2014) take their gradient steps on the same sum of both kinds of data.

    :param vae: the M2 whose classifier the :math:`\alpha` term scores.
    :param num_labelled: :math:`N_l`, the size of the labelled set (``LabelledBatches.num_labelled``).
    """

    #: not an ELBO: the classification loss is added (the Trainer records ``train_objective``)
    is_elbo = False

    def __init__(self, vae: SSVAE, num_labelled: int) -> None:
        super().__init__(max_plate_nesting=1)
        self.vae = vae
        self.num_labelled = check_positive("num_labelled", num_labelled, example=100)
        #: sums the unlabelled label out exactly (the guide's ``"y"`` enumerated in parallel)
        self.unlabelled_elbo = TraceEnum_ELBO(max_plate_nesting=1)
        #: the labelled pairs have nothing to enumerate: their ELBO and the classification loss
        self.labelled_elbo = Trace_ELBO(max_plate_nesting=1)

    def parts(
        self,
        model: Any,
        guide: Any,
        x: torch.Tensor,
        x_labelled: torch.Tensor,
        y_labelled: torch.Tensor,
        num_data: Optional[int] = None,
    ) -> Dict[str, torch.Tensor]:
        r"""The loss's three terms, each differentiable: ``"unlabelled"`` (the label summed out),
        ``"labelled"`` (the labelled ELBO) and ``"classifier"`` (:math:`-\alpha \log q_\phi(y|x)`),
        each at its own scale :math:`N/B`."""
        n_l = self.num_labelled
        out = {
            "unlabelled": self.unlabelled_elbo.differentiable_loss(
                model, config_enumerate(guide, "parallel"), x, num_data=num_data
            ),
            "labelled": self.labelled_elbo.differentiable_loss(model, guide, x_labelled, y_labelled, num_data=n_l),
        }
        if self.vae.alpha > 0:
            out["classifier"] = self.labelled_elbo.differentiable_loss(
                self.vae.classifier_model, self.vae.classifier_guide, x_labelled, y_labelled, num_data=n_l
            )
        return out

    def differentiable_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        if len(args) != 3:
            raise ConfigError(
                f"M2's objective reads each step's data as (x, x_labelled, y_labelled), got "
                f"{len(args)} tensor(s); train with transform=LabelledBatches(labelled images, "
                f"labels) (pyro_vae.data.semi_supervised)",
                settings=("transform",),
            )
        if len(args[1]) > self.num_labelled:
            raise ConfigError(
                f"a labelled minibatch of {len(args[1])} images, but num_labelled={self.num_labelled}; "
                f"pass SemiSupervisedELBO(vae, labelled.num_labelled) for the LabelledBatches "
                f"given as the transform",
                settings=("num_labelled",),
            )
        # a tensor: parts has two terms or three
        return cast(torch.Tensor, sum(self.parts(model, guide, *args, **kwargs).values()))

    def _get_trace(self, model: Any, guide: Any, args: Any, kwargs: Any) -> Any:
        raise NotImplementedError("the objective is a sum of two ELBOs, each with its own traces; see parts()")

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        return float(self.differentiable_loss(model, guide, *args, **kwargs).detach())

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


class SSVAEProgram(Program):
    """M2 as the :class:`~pyro_vae.training.trainer.Trainer` trains it (``Trainer(ssvae, ...)``):
    the training data are the unlabelled images, each minibatch joined by a labelled one
    (``transform=LabelledBatches(...)``), the objective :class:`SemiSupervisedELBO`."""

    def __init__(self, vae: SSVAE) -> None:
        super().__init__(vae.model, vae.guide)
        self.vae = vae

    @property
    def config(self) -> Dict[str, Any]:
        return self.vae.config

    def check_objective(self, elbo: Any) -> None:
        if not isinstance(elbo, SemiSupervisedELBO) or elbo.vae is not self.vae:
            raise ConfigError(
                f"M2 trains on the semi-supervised objective of this very model, got "
                f"{type(elbo).__name__}; pass objective=SemiSupervisedELBO(vae, "
                f"labelled.num_labelled) with transform=labelled, a LabelledBatches",
                settings=("objective",),
            )

    def parts(self, batch: Batch, num_data: int) -> List[Tuple[str, Batch, int]]:
        if len(batch.tensors) != 3:
            raise ConfigError(
                f"M2 steps on unlabelled images each beside a labelled minibatch, (x, x_labelled, "
                f"y_labelled), got {len(batch.tensors)} tensor(s); pass transform=LabelledBatches("
                f"labelled images, labels) (pyro_vae.data.semi_supervised)",
                settings=("transform",),
            )
        x, x_labelled, y_labelled = batch.tensors
        return [
            ("unlabelled", Batch((x,), {}), num_data),
            ("labelled", Batch((x_labelled, y_labelled), {}), len(x_labelled)),
        ]

    def prepare(self, batch: Batch, what: str, binarize: Optional[str]) -> Batch:
        """The unlabelled images alone, flattened, their pixels in [0, 1] (the transform binarizes)."""
        if len(batch.tensors) != 1:
            raise InvalidDataError(
                f"the {what} of M2 are its unlabelled images alone, one tensor (the labelled "
                f"ones come with the transform, LabelledBatches); got {len(batch.tensors)} tensors"
            )
        x = flatten_images(batch.first, self.vae.x_dim)
        check_pixels(x, what)
        return Batch((x,), {})

    def check(self, batch: Batch, num_data: int) -> None:
        """Model and guide run on both parts, with matching sites, the unlabelled part scaled by N/B."""
        for _, part, n in self.parts(batch, num_data):
            super().check(part, n)
