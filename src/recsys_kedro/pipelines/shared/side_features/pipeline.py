"""Side features (shared): the user and item profiles of the feature schema, from the side
tables ``raw_users`` / ``raw_items`` and the model's id indexes.

A modular pipeline: instantiate it inside a model's namespace, where ``user_index@spark``,
``user_profiles@spark`` ... resolve to that model's datasets; ``raw_users``, ``raw_items`` and
``params:feature_schema`` stay global.
"""

from kedro.pipeline import Pipeline, node

from .nodes import build_item_profiles, build_user_profiles


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                build_user_profiles,
                inputs=["raw_users", "user_index@spark", "params:feature_schema"],
                outputs=["user_profiles@spark", "user_feature_report"],
                name="build_user_profiles",
            ),
            node(
                build_item_profiles,
                inputs=["raw_items", "item_index@spark", "params:feature_schema"],
                outputs=["item_profiles@spark", "item_feature_report"],
                name="build_item_profiles",
            ),
        ],
        namespace="side_features",
        prefix_datasets_with_namespace=False,
    )
