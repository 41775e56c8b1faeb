"""Training of the promptable network: an nnU-Net v2 trainer with one extra prompt channel.

* :mod:`lesionlocator.train.simulate` simulates point, box and mask prompts from ground truth;
* :mod:`lesionlocator.train.trainer` is the nnU-Net trainer class that adds them to each batch;
* :mod:`lesionlocator.train.run` plans, preprocesses, trains and exports a trained-model folder;
* :mod:`lesionlocator.train.evaluate_model` scores a model per prompt type against the classical segmenter.
"""
