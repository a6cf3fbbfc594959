"""Figures and the page: what a run draws (matplotlib) and the latent-space explorer (HTML).

===================  ==============================================================
:mod:`.plots`        the VAE's figures: ELBO curves, reconstructions, samples, latent map
:mod:`.ssvae_plots`  M2's: accuracy per epoch, styles, the confusion matrix
:mod:`.cvae_plots`   the CVAE's: completions of a quadrant
:mod:`.explorer`     ``explorer.html``, an interactive page of the latent space
===================  ==============================================================
"""
