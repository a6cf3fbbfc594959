"""The two neural networks of the VAE: decoder (for p(x|z)) and encoder (for q(z|x)).

They are plain :class:`torch.nn.Module` s; the probabilistic meaning is given to
them in :mod:`pyro_vae.models.vae`, where the model and guide register them with Pyro.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.errors import ConfigError
from pyro_vae.models.softplus import Softplus

# softplus: torch.nn.Softplus's outputs, three times faster on the CPU (pyro_vae.models.softplus)
ACTIVATIONS = {"softplus": Softplus, "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def check_hidden_dims(hidden_dims: Sequence[int]) -> Tuple[int, ...]:
    """Hidden-layer widths as a tuple of positive ints (a single int is one layer)."""
    if isinstance(hidden_dims, int) and not isinstance(hidden_dims, bool):
        hidden_dims = (hidden_dims,)
    if isinstance(hidden_dims, (str, bytes)) or not isinstance(hidden_dims, Sequence):
        raise ConfigError(
            f"hidden_dims must be a sequence of layer widths, got {hidden_dims!r}; pass e.g. hidden_dims=(400,)",
            settings=("hidden_dims",),
        )
    for h in hidden_dims:
        if isinstance(h, bool) or not isinstance(h, int) or h <= 0:
            raise ConfigError(
                f"each hidden size must be a positive integer, got {h!r} in hidden_dims="
                f"{tuple(hidden_dims)!r}; pass e.g. hidden_dims=(400,)",
                settings=("hidden_dims",),
            )
    return tuple(hidden_dims)


def check_activation(activation: str, setting: str = "activation") -> str:
    """``activation`` if it names one of ``ACTIVATIONS`` (softplus, relu, tanh, elu).

    :raises ConfigError: naming ``setting``, the option that chose it.
    """
    if not isinstance(activation, str) or activation not in ACTIVATIONS:  # a list is not even hashable
        raise ConfigError(
            f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}", settings=(setting,)
        )
    return activation


def mlp(sizes: Sequence[int], activation: str = "softplus") -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]``, the activation between them."""
    check_activation(activation)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def strided_convolutions(
    image_shape: Tuple[int, int, int], channels: Sequence[int], activation: str = "elu"
) -> Tuple[nn.Sequential, int]:
    """3x3 convolutions of stride 2 (each halves height and width, rounding up), the
    activation after each, then flattened: the network and the size of its output for
    ``[B, *image_shape]`` images. Where it is a setting, the activation is ``conv_activation``."""
    check_activation(activation, "conv_activation")
    layers = []
    c, h, w = image_shape
    for c_out in channels:
        layers += [nn.Conv2d(c, c_out, kernel_size=3, stride=2, padding=1), ACTIVATIONS[activation]()]
        c, h, w = c_out, (h + 1) // 2, (w + 1) // 2  # 3x3, stride 2, padding 1: ceil(size / 2)
    return nn.Sequential(*layers, nn.Flatten(1)), c * h * w


class GaussianEncoder(nn.Module):
    r"""Maps ``x`` to the mean :math:`\mu(x)` and scale :math:`\sigma(x)` of a diagonal Normal.

    The scale is ``softplus(.) + 1e-6``: smooth, positive, and it never underflows
    to zero (which would put the sample outside the Normal's support).
    """

    def __init__(self, x_dim: int, z_dim: int, hidden_dims: Sequence[int], activation: str):
        super().__init__()
        self.net = mlp([x_dim, *hidden_dims, 2 * z_dim], activation)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # Contiguous halves: softplus and the Normal's arithmetic on a strided view of the
        # output run 2-5x slower (bench/levers.py: "contiguous encoder heads").
        loc, raw_scale = (half.contiguous() for half in self.net(x).chunk(2, dim=-1))
        return loc, F.softplus(raw_scale) + 1e-6
