"""Training (shared by every model): TorchDistributor -> the shared TorchRec trainer.

A modular pipeline: instantiate it inside a model's namespace, next to that model's spec node
(which writes ``model_spec``). Free inputs: ``train_mds``, ``validation_mds``, ``model_spec``,
``training_checkpoints`` (the folder of its sharded checkpoints), ``params:training`` (the
model's optimisation settings) and ``params:launch`` (the environment's launch settings,
global: keep it out of the model's namespace with ``parameters={"params:launch"}``);
outputs: ``model``, ``epoch_metrics``, ``training_summary``, ``training_curves``.
"""

from kedro.pipeline import Pipeline, node

from .nodes import plot_training_curves, train_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_model,
                inputs=[
                    "train_mds",
                    "validation_mds",
                    "model_spec",
                    "params:training",
                    "params:launch",
                    "training_checkpoints",
                ],
                outputs=["model", "epoch_metrics", "training_summary"],
                name="train_model",
            ),
            node(
                plot_training_curves,
                inputs="training_summary",
                outputs="training_curves",
                name="plot_training_curves",
            ),
        ],
        namespace="training",
        prefix_datasets_with_namespace=False,
    )
