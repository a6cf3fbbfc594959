"""pyro_vae: the variational autoencoder written as a Pyro model and guide.

``from pyro_vae import VAE`` gives the model/guide pair, with built-in or your own
guides (:mod:`pyro_vae.models.guides`, :mod:`pyro_vae.inference.guide_contract`); :class:`Trainer` fits
it by SVI on the ELBO or another objective (:mod:`pyro_vae.inference.objectives`);
:func:`log_likelihood` estimates test log-likelihoods; :func:`load_mnist` finds the data. :mod:`pyro_vae.inference.information`
computes information, entropy and KL; :mod:`pyro_vae.models.linear_gaussian` is an exact
model on which every identity of the ELBO can be checked. The equations of the seed
(docs/equations.md) map onto these modules one concept each.
"""

from pyro_vae.data.images import MNISTData, balanced_prefix, binarize, load_mnist
from pyro_vae.errors import (
    CheckpointError,
    ConfigError,
    DataNotFoundError,
    InvalidDataError,
    NonFiniteError,
    OutputDirError,
    PyroVAEError,
    TrainingInterrupted,
)
from pyro_vae.inference.elbo import ELBOTerms, bits_per_dim, elbo_terms
from pyro_vae.inference.evaluate import (
    LogLikelihood,
    active_units,
    active_units_per_site,
    kl_per_dimension,
    log_likelihood,
    posterior_means,
)
from pyro_vae.inference.guide_contract import GuideError, check_guide
from pyro_vae.inference.information import cross_entropy, entropy, information_content, kl_divergence
from pyro_vae.inference.objectives import IWAE_ELBO, get_objective, kl_weighted
from pyro_vae.inference.reparameterization import reparameterize
from pyro_vae.inference.sites import SiteError
from pyro_vae.models.cvae import CVAE
from pyro_vae.models.guides import ConvolutionalGuide, DiagonalNormalGuide, FullCovarianceGuide, IAFGuide
from pyro_vae.models.hvae import HVAE
from pyro_vae.models.linear_gaussian import LinearGaussianGuide, LinearGaussianModel
from pyro_vae.models.linear_gaussian_chain import HierarchicalLinearGaussianGuide, HierarchicalLinearGaussianModel
from pyro_vae.models.plate import data_plate, register_module
from pyro_vae.models.priors import VampPrior
from pyro_vae.models.registry import MODELS, build_model, get_model
from pyro_vae.models.ssvae import SSVAE
from pyro_vae.models.vae import VAE, VAEBase
from pyro_vae.training import (
    Callback,
    ConsoleLog,
    EarlyStopping,
    MetricsFile,
    ProgressBar,
    TrainConfig,
    Trainer,
    WeightAveraging,
)
from pyro_vae.training.checkpoint import load_model

__version__ = "0.1.0"

__all__ = [
    "load_model",
    "VAE",
    "VAEBase",
    "HVAE",
    "VampPrior",
    "SSVAE",
    "CVAE",
    "MODELS",
    "build_model",
    "get_model",
    "data_plate",
    "register_module",
    "DiagonalNormalGuide",
    "ConvolutionalGuide",
    "FullCovarianceGuide",
    "IAFGuide",
    "check_guide",
    "GuideError",
    "Trainer",
    "TrainConfig",
    "Callback",
    "ProgressBar",
    "ConsoleLog",
    "MetricsFile",
    "EarlyStopping",
    "WeightAveraging",
    "get_objective",
    "IWAE_ELBO",
    "kl_weighted",
    "log_likelihood",
    "LogLikelihood",
    "active_units",
    "kl_per_dimension",
    "active_units_per_site",
    "posterior_means",
    "load_mnist",
    "MNISTData",
    "balanced_prefix",
    "binarize",
    "elbo_terms",
    "ELBOTerms",
    "bits_per_dim",
    "information_content",
    "entropy",
    "cross_entropy",
    "kl_divergence",
    "reparameterize",
    "LinearGaussianModel",
    "LinearGaussianGuide",
    "HierarchicalLinearGaussianModel",
    "HierarchicalLinearGaussianGuide",
    "SiteError",
    "PyroVAEError",
    "DataNotFoundError",
    "InvalidDataError",
    "CheckpointError",
    "ConfigError",
    "OutputDirError",
    "NonFiniteError",
    "TrainingInterrupted",
]
