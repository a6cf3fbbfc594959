"""Data: where MNIST and your own data are found, and data in any form made into minibatches for training.

=======================  ==============================================================
:mod:`.images`           MNIST: look-up, the embedded sample, binarization, checks, shifts
:mod:`.batches`          a tensor, a tuple or dict of tensors, a Dataset or DataLoader as
                         minibatches of a model's arguments
:mod:`.transforms`       data-side transforms: the images' binarization, per batch
:mod:`.semi_supervised`  partly labelled data: the labelled split, and a labelled
                         minibatch beside every unlabelled one (M2)
:mod:`.sources`          your data: named sets, arrays, CSV tables, folders of images,
                         as rows and the shape of one datapoint
=======================  ==============================================================
"""
