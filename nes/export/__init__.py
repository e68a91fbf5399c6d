"""Ensemble bundles: the model, reading and checking a bundle, writing one, the model card, ONNX,
and the images `predict` reads. Imports the core and `nes.method`."""
