"""Kedro pipelines: one package per runnable model pipeline (``two_tower``,
``two_tower_tune``, ``dlrm``, ``recommend``) with the stages that are its own, and
``shared/`` for the stages every model uses (``export``, ``training``).

Nodes here are thin: the work is done by Kedro-free packages (``recsys_kedro.data``,
``training``, ``evaluation``, ...); a node adapts parameters and adds the hint that names
a pipeline, node or conf file."""
