"""The `databricks` environment resolves every dataset of every pipeline (no workspace needed).

Only the configuration is tested here: the datasets are instantiated, not loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog

from recsys_kedro.pipeline_registry import register_pipelines
from recsys_kedro.settings import CONFIG_LOADER_ARGS

CONF = Path(__file__).resolve().parents[1] / "conf"


def _loader(env: str) -> OmegaConfigLoader:
    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    return OmegaConfigLoader(conf_source=str(CONF), env=env, **args)


@pytest.fixture(scope="module")
def databricks():
    loader = _loader("databricks")
    return loader, DataCatalog.from_config(loader["catalog"])


def _datasets():
    names = set()
    for name, pipeline in register_pipelines().items():
        if name != "__default__":
            names |= {d for d in pipeline.datasets() if not d.startswith("params:")}
    return sorted(names)


@pytest.mark.parametrize("name", _datasets())
def test_every_dataset_resolves_in_databricks(databricks, name):
    _, catalog = databricks
    dataset = catalog.get(name)
    assert dataset is not None, f"{name} does not resolve in conf/databricks + conf/base"


def test_dlrm_on_databricks_trains_on_gpus_from_volumes(databricks):
    loader, catalog = databricks
    launch = loader["parameters"]["launch"]
    assert launch["use_gpu"] is True and launch["local_mode"] is False
    assert launch["staging_dir"].startswith("/Volumes/")
    assert loader["parameters"]["dlrm"]["training"]["batch_size"] == 8192  # the model's own
    assert str(catalog.get("dlrm.train_mds")._describe()["filepath"]).startswith("/Volumes/")
    # base parameters still apply where databricks does not override them
    base = yaml.safe_load((CONF / "base" / "parameters_dlrm.yml").read_text())
    architecture = base["dlrm"]["model"]["architecture"]
    assert loader["parameters"]["dlrm"]["model"]["architecture"] == architecture


def test_databricks_reads_unity_catalog_and_writes_volumes(databricks):
    loader, catalog = databricks
    described = str(catalog.get("raw_interactions"))
    assert "main.recsys.item_ratings" in described
    for split in ("train", "validation", "test"):
        mds = catalog.get(f"two_tower.{split}_mds")
        desc = mds._describe()
        assert str(desc["filepath"]).startswith("/Volumes/"), desc
        assert desc["local_cache"].startswith("/local_disk0/"), desc
        assert str(
            catalog.get(f"two_tower.{split}_split@spark")._describe()["filepath"]
        ).startswith("/Volumes/")


def test_databricks_tracking_and_gpu_training_parameters(databricks):
    loader, _ = databricks
    assert loader["mlflow"]["server"]["mlflow_tracking_uri"] == "databricks"
    launch = loader["parameters"]["launch"]
    assert launch["use_gpu"] is True and launch["local_mode"] is False
    assert launch["cache_dir"].startswith("/local_disk0/")
    # base launch settings still apply where databricks does not override them
    assert launch["checkpoints"]["keep_last"] == 2
    # base parameters still apply where databricks does not override them
    assert loader["parameters"]["two_tower"]["evaluation"]["ks"] == [10, 20, 100]
    spark = loader["spark"]
    assert spark["spark.master"] is None  # the cluster's session, not local[2]


def test_local_environment_keeps_the_embedded_defaults():
    loader = _loader("local")
    assert loader["mlflow"]["server"]["mlflow_tracking_uri"] == "sqlite:///mlflow.db"
    assert loader["spark"]["spark.master"] == "local[2]"
    assert loader["parameters"]["launch"]["local_mode"] is True


def _paths(catalog) -> dict[str, str]:
    """Dataset name -> the folder or file it reads and writes (datasets that have one)."""
    out = {}
    for name in _datasets():
        match = re.search(r"filepath=(?:PurePosixPath\()?'([^']+)'", str(catalog.get(name)))
        if match:
            out[name] = match.group(1)
    return out


def test_one_setting_moves_every_layer_to_the_volume():
    """globals.yml's data_root: every path of every layer (01 to 08) is on the volume in
    databricks, and under data/ locally; nothing is declared twice to move it."""
    # A fresh loader, read before any other is made: OmegaConf's `globals` resolver is
    # process-wide, and the last loader created answers it (one per process in a real run).
    loader = _loader("databricks")
    catalog = DataCatalog.from_config(loader["catalog"])
    root = loader["globals"]["data_root"]
    assert root.startswith("/Volumes/")
    paths = _paths(catalog)
    layers = {re.search(r"/(0\d)_", p).group(1) for p in paths.values() if re.search(r"/0\d_", p)}
    assert layers >= {"02", "03", "04", "05", "06", "07", "08"}, layers
    off_volume = {n: p for n, p in paths.items() if not p.startswith(root + "/")}
    assert not off_volume, off_volume
    assert loader["parameters"]["launch"]["staging_dir"] == f"{root}/06_models/staging"
    local = _loader("local")
    local_paths = _paths(DataCatalog.from_config(local["catalog"]))
    assert all("data/0" in p for p in local_paths.values()), local_paths
    assert local_paths["raw_interactions"].endswith("data/01_raw/ml-100k/ml-100k.inter")
