"""recommend: the two-stage funnel, in namespace recommend on top of two_tower's stages.

two_tower (ingestion -> features -> export -> training, and its embeddings) ->
``retrieval`` (FAISS index, candidate lists) -> ``features`` (side features from the train
split, in Spark) -> ``export`` and ``training`` (the shared modular pipelines: the DLRM
ranker on the fit lists, stopped on the holdout lists) -> ``evaluation`` (rerank the serve
lists, top K, report) -> ``serving`` (the funnel as one MLflow pyfunc model).
``rated_pairs``: the ablation, the same ranker (same stages, same parameters) trained
pointwise on the train split's rated pairs. ``refit``: the baseline, the two-tower trained
again on train + validation (the period the ranker's labels come from), whose
full-catalogue order the reranking must beat.
"""

import warnings

from kedro.pipeline import Pipeline, node

from recsys_kedro.pipelines import two_tower as two_tower_pipeline
from recsys_kedro.pipelines.shared import export, training

from .nodes import (
    build_ranker_lists,
    build_rated_pair_splits,
    build_retrieval_index,
    build_side_statistics,
    package_recommender,
    ranker_spec,
    rated_pair_rows,
    rated_pairs_spec,
    recommend_all_users,
    refit_retrieval_metrics,
    refit_rows,
    refit_two_tower,
    rerank_and_evaluate,
    retrieve_candidates,
)

NAMESPACE = "recommend"
TT = "two_tower"
#: The two_tower nodes the funnel needs: everything up to the model, and its embeddings
#: (not its own evaluation: the funnel evaluates what it serves).
_TWO_TOWER_EVALUATION = f"{TT}.evaluation."
_KEEP = {f"{TT}.evaluation.embed_users_and_items"}


def _two_tower_stages() -> Pipeline:
    full = two_tower_pipeline.create_pipeline()
    return Pipeline(
        [n for n in full.nodes if not n.name.startswith(_TWO_TOWER_EVALUATION) or n.name in _KEEP]
    )


#: The ranker's candidate lists (one row per candidate) and their MDS exports: fit lists
#: train it, holdout lists choose its epoch, serve lists are what it re-orders for every user.
_LISTS = {"train": "fit_lists", "validation": "holdout_lists", "test": "serve_lists"}


def _lists_export() -> Pipeline:
    """The shared export stage on the three kinds of lists."""
    return Pipeline(
        export.create_pipeline(),
        inputs={f"{split}_split@spark": f"{lists}@spark" for split, lists in _LISTS.items()},
        outputs={f"{split}_mds": f"{lists}_mds" for split, lists in _LISTS.items()},
    )


def _ranker_training() -> Pipeline:
    """The shared training stage: fit lists to learn, holdout lists to choose the epoch."""
    return Pipeline(
        training.create_pipeline(),
        inputs={"train_mds": "fit_lists_mds", "validation_mds": "holdout_lists_mds"},
    )


def _rated_pairs_ablation() -> Pipeline:
    """The same ranker trained pointwise on the logged rated pairs (namespace
    ``recommend.rated_pairs``; the ranker's own parameters): what the lists are for."""
    splits = Pipeline(
        [
            node(
                build_rated_pair_splits,
                inputs=[
                    "rated_pair_rows@spark",
                    f"{TT}.user_profiles@spark",
                    f"{TT}.item_profiles@spark",
                    "user_statistics@spark",
                    "item_statistics@spark",
                    "feature_summary",
                ],
                outputs=["train_split@spark", "validation_split@spark"],
                name="build_rated_pair_splits",
            )
        ]
    )
    spec = Pipeline(
        [
            node(
                rated_pairs_spec,
                inputs=["feature_summary", "train_split@pandas", "params:model"],
                outputs="model_spec",
                name="rated_pairs_spec",
            )
        ],
        namespace="training",
        prefix_datasets_with_namespace=False,
    )
    # Training reads the train and validation splits only: no test export here.
    exports = Pipeline(
        [n for n in export.create_pipeline().nodes if n.name != "export.export_test"]
    )
    return Pipeline(
        splits + exports + spec + training.create_pipeline(),
        namespace="rated_pairs",
        inputs={
            "rated_pair_rows@spark",
            f"{TT}.user_profiles@spark",
            f"{TT}.item_profiles@spark",
            "user_statistics@spark",
            "item_statistics@spark",
            "feature_summary",
        },
        parameters={
            "params:model": "params:model",
            "params:training": "params:training",
            "params:export": "params:export",
            "params:launch": "params:launch",
        },
    )


def _refit_baseline() -> Pipeline:
    """The two-tower trained again on train + validation, for as many epochs as its run
    kept (namespace ``recommend.refit``), and its full-catalogue order scored on test."""
    nodes = Pipeline(
        [
            node(
                refit_rows,
                inputs=[f"{TT}.train_split@spark", f"{TT}.validation_split@spark"],
                outputs="train_split@spark",
                name="refit_rows",
            ),
            node(
                refit_two_tower,
                inputs=[
                    "train_mds",
                    f"{TT}.validation_mds",
                    f"{TT}.model_spec",
                    f"params:{TT}.training",
                    "params:launch",
                    f"{TT}.training_summary",
                ],
                outputs=["model", "training_summary"],
                name="refit_two_tower",
            ),
            node(
                refit_retrieval_metrics,
                inputs=[
                    "model",
                    f"{TT}.train_split@pandas",
                    f"{TT}.validation_split@pandas",
                    f"{TT}.test_split@pandas",
                    "params:evaluation",
                ],
                outputs="retrieval_metrics",
                name="refit_retrieval_metrics",
            ),
        ]
    )
    export_train = Pipeline(
        [n for n in export.create_pipeline().nodes if n.name == "export.export_train"]
    )
    return Pipeline(
        nodes + export_train,
        namespace="refit",
        inputs=_REFIT_INPUTS,
        parameters={
            "params:export": f"params:{TT}.export",
            f"params:{TT}.training": f"params:{TT}.training",
            "params:launch": "params:launch",
            "params:evaluation": "params:evaluation",
        },
    )


#: The two_tower datasets the refit reads (by their own names, outside its namespace).
_REFIT_INPUTS = {
    f"{TT}.train_split@spark",
    f"{TT}.validation_split@spark",
    f"{TT}.validation_mds",
    f"{TT}.model_spec",
    f"{TT}.training_summary",
    f"{TT}.train_split@pandas",
    f"{TT}.validation_split@pandas",
    f"{TT}.test_split@pandas",
}


def create_pipeline(**kwargs) -> Pipeline:
    # The funnel reads the two_tower pipeline's outputs by their namespaced names (it is
    # built on that model, not on a copy of it); Kedro warns about any dotted name outside
    # a node's own namespace, which is exactly this deliberate cross-namespace read.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        return _create_pipeline()


def _create_pipeline() -> Pipeline:
    retrieval = Pipeline(
        [
            node(
                build_retrieval_index,
                inputs=[f"{TT}.item_embeddings", "params:retrieval.index"],
                outputs="retrieval_index",
                name="build_retrieval_index",
            ),
            node(
                retrieve_candidates,
                inputs=[
                    f"{TT}.user_embeddings@pandas",
                    f"{TT}.item_embeddings",
                    "retrieval_index",
                    f"{TT}.train_split@pandas",
                    f"{TT}.validation_split@pandas",
                    f"{TT}.test_split@pandas",
                    "params:retrieval",
                ],
                outputs=["candidates@pandas", "retrieval_report"],
                name="retrieve_candidates",
            ),
            node(
                rated_pair_rows,
                inputs=[
                    f"{TT}.user_embeddings@pandas",
                    f"{TT}.item_embeddings",
                    f"{TT}.train_split@pandas",
                    f"{TT}.validation_split@pandas",
                ],
                outputs="rated_pair_rows@pandas",
                name="rated_pair_rows",
            ),
        ],
        namespace="retrieval",
        prefix_datasets_with_namespace=False,
    )
    features = Pipeline(
        [
            node(
                build_side_statistics,
                inputs=[
                    f"{TT}.train_split@spark",
                    f"{TT}.user_index@spark",
                    f"{TT}.item_index@spark",
                    f"{TT}.item_profiles@spark",
                    f"{TT}.user_feature_report",
                    f"{TT}.item_feature_report",
                    "params:feature_schema",
                ],
                outputs=["user_statistics@spark", "item_statistics@spark", "feature_summary"],
                name="build_side_statistics",
            ),
            node(
                build_ranker_lists,
                inputs=[
                    "candidates@spark",
                    f"{TT}.user_profiles@spark",
                    f"{TT}.item_profiles@spark",
                    "user_statistics@spark",
                    "item_statistics@spark",
                    "feature_summary",
                ],
                outputs=["fit_lists@spark", "holdout_lists@spark", "serve_lists@spark"],
                name="build_ranker_lists",
            ),
        ],
        namespace="features",
        prefix_datasets_with_namespace=False,
    )
    spec = Pipeline(
        [
            node(
                ranker_spec,
                inputs=[
                    "feature_summary",
                    "fit_lists@pandas",
                    "params:model",
                    "params:training",
                ],
                outputs="model_spec",
                name="ranker_spec",
            )
        ],
        namespace="training",
        prefix_datasets_with_namespace=False,
    )
    evaluation = Pipeline(
        [
            node(
                rerank_and_evaluate,
                inputs=[
                    "model",
                    "rated_pairs.model",
                    "fit_lists@pandas",
                    "holdout_lists@pandas",
                    "serve_lists@pandas",
                    f"{TT}.train_split@pandas",
                    f"{TT}.validation_split@pandas",
                    f"{TT}.test_split@pandas",
                    f"{TT}.user_index@pandas",
                    f"{TT}.item_index@pandas",
                    "retrieval_report",
                    "training_summary",
                    "refit.retrieval_metrics",
                    "params:evaluation",
                ],
                outputs=["recommendations", "metrics", "test_metrics", "run_tags", "metrics_at_k"],
                name="rerank_and_evaluate",
            ),
        ],
        namespace="evaluation",
        prefix_datasets_with_namespace=False,
    )
    serving = Pipeline(
        [
            node(
                package_recommender,
                inputs=[
                    f"{TT}.user_embeddings@pandas",
                    f"{TT}.item_embeddings",
                    "retrieval_index",
                    "model",
                    f"{TT}.user_profiles@pandas",
                    f"{TT}.item_profiles@pandas",
                    "user_statistics@pandas",
                    "item_statistics@pandas",
                    "feature_summary",
                    f"{TT}.train_split@pandas",
                    f"{TT}.validation_split@pandas",
                    "params:retrieval",
                    "params:evaluation",
                ],
                outputs=["recommender", "recommender_logged"],
                name="package_recommender",
            ),
            node(
                recommend_all_users,
                inputs=[f"{TT}.user_index@spark", "recommender"],
                outputs="batch_recommendations",
                name="recommend_all_users",
            ),
        ],
        namespace="serving",
        prefix_datasets_with_namespace=False,
    )
    funnel = Pipeline(
        retrieval
        + features
        + _lists_export()
        + spec
        + _ranker_training()
        + _rated_pairs_ablation()
        + _refit_baseline()
        + evaluation
        + serving,
        namespace=NAMESPACE,
        inputs={
            f"{TT}.item_embeddings",
            f"{TT}.user_embeddings@pandas",
            f"{TT}.train_split@pandas",
            f"{TT}.validation_split@pandas",
            f"{TT}.test_split@pandas",
            f"{TT}.train_split@spark",
            f"{TT}.user_index@spark",
            f"{TT}.item_index@spark",
            f"{TT}.user_index@pandas",
            f"{TT}.item_index@pandas",
            *(f"{TT}.{e}_profiles@{k}" for e in ("user", "item") for k in ("spark", "pandas")),
            f"{TT}.user_feature_report",
            f"{TT}.item_feature_report",
            *_REFIT_INPUTS,
        },
        parameters={
            "params:launch",
            "params:feature_schema",
            f"params:{TT}.export",
            f"params:{TT}.training",
        },
    )
    return _two_tower_stages() + funnel
