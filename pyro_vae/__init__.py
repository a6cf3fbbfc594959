"""pyro_vae: the variational autoencoder written as a Pyro model and guide.

``from pyro_vae import VAE`` gives the model/guide pair; :class:`Trainer` fits it
by SVI on the ELBO; :func:`load_mnist` finds the data. The equations of the seed
(docs/equations.md) map onto these modules one concept each.
"""

from .data import MNISTData, binarize, load_mnist
from .elbo import ELBOTerms, bits_per_dim, elbo_terms
from .errors import CheckpointError, DataNotFoundError, InvalidDataError, PyroVAEError
from .train import Trainer
from .vae import VAE

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "Trainer",
    "load_mnist",
    "MNISTData",
    "binarize",
    "elbo_terms",
    "ELBOTerms",
    "bits_per_dim",
    "PyroVAEError",
    "DataNotFoundError",
    "InvalidDataError",
    "CheckpointError",
]
