"""Stages shared by every model pipeline: ``export`` (splits -> Mosaic MDS) and ``training``
(TorchDistributor -> the shared TorchRec trainer). Each is a modular pipeline instantiated
inside a model's namespace."""
