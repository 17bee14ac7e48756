"""two_tower_tune's wiring: the two_tower pipeline's own data stages, then the study, which
reads nothing of the test split."""

from __future__ import annotations

from recsys_kedro.pipelines import two_tower, two_tower_tune


def _by_name(pipeline):
    return {n.name: n for n in pipeline.nodes}


def test_the_data_stages_are_the_two_tower_pipelines_own_nodes():
    tune, model = _by_name(two_tower_tune.create_pipeline()), _by_name(two_tower.create_pipeline())
    stages = {name for name in tune if name != "two_tower.tuning.tune_two_tower"}
    assert stages and all(n.startswith(("two_tower.ingestion.", "two_tower.features.",
                                        "two_tower.side_features.", "two_tower.export."))
                          for n in stages)  # fmt: skip
    # the towers' side tables too: a trial trains the model the two_tower pipeline trains
    assert "two_tower.side_tables" in _by_name(two_tower_tune.create_pipeline())[
        "two_tower.tuning.tune_two_tower"].inputs  # fmt: skip
    for name in stages:  # the same nodes: same function, same datasets
        assert tune[name].func is model[name].func, name
        assert tune[name].inputs == model[name].inputs and tune[name].outputs == model[name].outputs


def test_the_study_reads_train_and_validation_only():
    study = _by_name(two_tower_tune.create_pipeline())["two_tower.tuning.tune_two_tower"]
    assert "two_tower.train_mds" in study.inputs and "two_tower.validation_mds" in study.inputs
    assert not [name for name in study.inputs if "test" in name]
    assert "params:launch" in study.inputs  # the environment's launch settings, not a copy
