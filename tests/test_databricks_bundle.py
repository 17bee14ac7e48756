"""Databricks jobs from the pipelines: `kedro databricks bundle --env databricks`.

The real command runs (kedro-databricks, offline) in a copy of the project; its generated
resources are checked against the registered pipelines (one job each, one task per node,
the node's upstream nodes as `depends_on`), against Kedro's own `run` command (every task's
arguments select its node in its pipeline, in the `databricks` environment) and against
conf/databricks/databricks.yml (the GPU job cluster, the wheel). Each node being a task of
its own, no dataset may cross nodes in memory: checked in every environment.

kedro-mlflow's hooks are left out of these sessions (Dynaconf reads Kedro's settings from
``DYNACONF_*`` variables): with the `databricks` tracking URI they would ask a workspace for
the experiment, and neither the jobs nor the catalog need MLflow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.framework.cli.utils import find_run_command
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from recsys_kedro.pipeline_registry import register_pipelines
from recsys_kedro.settings import CONFIG_LOADER_ARGS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE = PYPROJECT["tool"]["kedro"]["package_name"]
ENV = "databricks"
NO_MLFLOW_HOOKS = {"DYNACONF_DISABLE_HOOKS_FOR_PLUGINS": '["kedro_mlflow"]'}
REMOTE_CONF = "/${workspace.file_path}/conf"  # the bundle's synced copy of conf/
GPUS_PER_NODE = {"g5.xlarge": 1, "g5.2xlarge": 1, "g5.4xlarge": 1, "g5.8xlarge": 1}
PIPELINE_NAMES = sorted(register_pipelines())


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@contextmanager
def _project(env: str | None = None) -> Iterator[dict[str, Pipeline]]:
    """The project as `kedro` sees it, kedro-mlflow's hooks off; Kedro's settings are read
    again on the way out, so later sessions in this process get every hook back."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in NO_MLFLOW_HOOKS.items():
            mp.setenv(key, value)
        try:
            bootstrap_project(ROOT)
            from kedro.framework.project import pipelines

            yield {name: pipelines[name] for name in pipelines}
        finally:
            mp.undo()
            bootstrap_project(ROOT)


@dataclass
class Bundle:
    project: Path
    jobs: dict[str, dict[str, Any]]
    files: list[Path]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    """`kedro databricks bundle --env databricks` in a copy of the project's configuration
    (the package itself is the installed one)."""
    project = tmp_path_factory.mktemp("bundle")
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "src").mkdir()
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    env.update(NO_MLFLOW_HOOKS)
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "databricks", "bundle", "--env", ENV],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    files = sorted((project / "resources").glob("*.yml"))
    jobs: dict[str, dict[str, Any]] = {}
    for path in files:
        assert path.name.startswith(f"target.{ENV}.jobs."), path.name
        for name, job in _yaml(path)["targets"][ENV]["resources"]["jobs"].items():
            assert name not in jobs, f"job {name} generated twice"
            jobs[name] = job
    return Bundle(project=project, jobs=jobs, files=files)


@pytest.fixture(scope="module")
def project_pipelines() -> dict[str, Pipeline]:
    with _project() as found:
        return found


@pytest.fixture(scope="module")
def overrides() -> dict[str, Any]:
    """conf/databricks/databricks.yml: what every job and every task gets."""
    return _yaml(ROOT / "conf" / ENV / "databricks.yml")["resources"]["jobs"]


@pytest.fixture(scope="module")
def root_bundle() -> dict[str, Any]:
    """The root databricks.yml, read by `databricks bundle deploy`."""
    return _yaml(ROOT / "databricks.yml")


def _job_name(pipeline_name: str) -> str:
    """kedro-databricks' job names: the package for `__default__`, else package_pipeline."""
    if pipeline_name == "__default__":
        return PACKAGE
    return f"{PACKAGE}_{pipeline_name.replace('.', '_')}"


def _bundle_variable(root_bundle: dict[str, Any], name: str) -> str:
    target = root_bundle["targets"][ENV]
    return target.get("variables", {}).get(name, root_bundle["variables"][name]["default"])


def _run_options(task: dict[str, Any], root_bundle: dict[str, Any]) -> dict[str, Any]:
    """The options Kedro's `run` (the wheel's entry point) parses from the task's arguments,
    the bundle's variables resolved as `databricks bundle deploy` resolves them."""
    args = list(task["python_wheel_task"]["parameters"])
    at = args.index("--conf-source")
    assert args[at + 1] == REMOTE_CONF, args
    args[at + 1] = str(ROOT / "conf")  # what the bundle uploads there
    args = [
        re.sub(r"\$\{var\.(\w+)\}", lambda m: _bundle_variable(root_bundle, m.group(1)), a)
        for a in args
    ]
    assert not any("${" in a for a in args), args
    with find_run_command(PACKAGE).make_context("run", args) as ctx:
        return dict(ctx.params)


def test_one_job_per_registered_pipeline(bundle, project_pipelines):
    expected = {_job_name(name) for name, p in project_pipelines.items() if p.nodes}
    assert set(bundle.jobs) == expected
    assert len(bundle.files) == len(expected)
    for name, job in bundle.jobs.items():
        assert job["name"] == name


@pytest.mark.parametrize("pipeline_name", PIPELINE_NAMES)
def test_job_tasks_are_the_nodes_and_their_dependencies(
    bundle, project_pipelines, root_bundle, pipeline_name
):
    pipeline = project_pipelines[pipeline_name]
    tasks = bundle.jobs[_job_name(pipeline_name)]["tasks"]
    node_of: dict[str, str] = {}  # task_key -> the node it runs
    for task in tasks:
        options = _run_options(task, root_bundle)
        assert task["task_key"] not in node_of, f"task key {task['task_key']} used twice"
        assert len(options["node_names"]) == 1, options["node_names"]
        node_of[task["task_key"]] = options["node_names"][0]
    assert sorted(node_of.values()) == sorted(n.name for n in pipeline.nodes)

    by_name = {n.name: n for n in pipeline.nodes}
    for task in tasks:
        upstream = [d["task_key"] for d in task.get("depends_on", [])]
        assert set(upstream) <= set(node_of), upstream
        node = by_name[node_of[task["task_key"]]]
        assert {node_of[k] for k in upstream} == {
            parent.name for parent in pipeline.node_dependencies[node]
        }, task["task_key"]
        assert len(upstream) == len(set(upstream))


@pytest.mark.parametrize("pipeline_name", PIPELINE_NAMES)
def test_every_task_runs_its_node_in_its_pipeline_on_databricks(
    bundle, project_pipelines, root_bundle, pipeline_name
):
    """`kedro run --nodes X` looks X up in the pipelines it is given (`__default__` when
    none is): every task must select its own pipeline, in the `databricks` environment."""
    pipeline = project_pipelines[pipeline_name]
    for task in bundle.jobs[_job_name(pipeline_name)]["tasks"]:
        options = _run_options(task, root_bundle)
        assert options["env"] == ENV
        assert options["conf_source"] == str(ROOT / "conf")
        selected = options["pipelines"] or [options["pipeline"] or "__default__"]
        run = sum((project_pipelines[name] for name in selected), Pipeline([]))
        assert {n.name for n in run.nodes} == {n.name for n in pipeline.nodes}, selected
        assert [n.name for n in run.filter(node_names=options["node_names"]).nodes] == (
            options["node_names"]
        )
        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"] == PACKAGE
        assert PYPROJECT["project"]["scripts"][wheel_task["entry_point"]] == (
            f"{PACKAGE}.__main__:main"
        )


def test_jobs_run_on_the_gpu_cluster_of_conf_databricks(bundle, overrides):
    default = overrides["default"]
    default_task = next(t for t in default["tasks"] if t["task_key"] == "default")
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in default["job_clusters"]}
    for name, job in bundle.jobs.items():
        assert job["job_clusters"] == default["job_clusters"], name
        for task in job["tasks"]:
            assert task["job_cluster_key"] == default_task["job_cluster_key"], task["task_key"]
            assert "new_cluster" not in task and "existing_cluster_id" not in task
            assert sorted(map(json.dumps, task["libraries"])) == sorted(
                map(json.dumps, default_task["libraries"])
            ), task["task_key"]

    cluster = clusters[default_task["job_cluster_key"]]
    assert re.fullmatch(r"\d+\.\d+\.x-gpu-ml-scala2\.1\d", cluster["spark_version"])
    assert cluster["node_type_id"] in GPUS_PER_NODE, "an AWS GPU node type (see GPUS_PER_NODE)"
    assert cluster["driver_node_type_id"] in GPUS_PER_NODE
    assert cluster["spark_conf"]["spark.task.resource.gpu.amount"] == "1"
    assert cluster["data_security_mode"] == "SINGLE_USER"


def test_the_cluster_has_a_gpu_for_every_training_rank(overrides):
    cluster = overrides["default"]["job_clusters"][0]["new_cluster"]
    gpus = cluster["num_workers"] * GPUS_PER_NODE[cluster["node_type_id"]]
    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    parameters = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env=ENV, **args)["parameters"]
    launch = parameters["launch"]  # every model's training launches with these
    assert launch["local_mode"] is False and launch["use_gpu"] is True
    assert launch["num_processes"] == gpus, (launch["num_processes"], gpus)


def test_tasks_install_the_wheel_and_the_gpu_stack(bundle, overrides, root_bundle):
    """Library paths are relative to the generated file (resources/): the wheel is what the
    bundle's artifact builds into dist/, the requirements file is the project's."""
    default_task = next(t for t in overrides["default"]["tasks"] if t["task_key"] == "default")
    libraries = {k: v for lib in default_task["libraries"] for k, v in lib.items()}
    resources = bundle.files[0].parent
    assert (resources / Path(libraries["whl"]).parent).resolve() == bundle.project / "dist"
    assert Path(libraries["whl"]).name == "*.whl"
    assert (resources / libraries["requirements"]).resolve().relative_to(bundle.project) == (
        Path("requirements-databricks.txt")
    )
    assert (ROOT / "requirements-databricks.txt").is_file()
    artifact = root_bundle["artifacts"]["default"]
    assert artifact["type"] == "whl" and artifact["build"] == "kedro package"
    # `databricks bundle deploy` reads every generated file, for the databricks target
    assert all(
        any(fnmatch(f"resources/{path.name}", pattern) for pattern in root_bundle["include"])
        for path in bundle.files
    )
    assert _bundle_variable(root_bundle, "environment") == ENV


def _requirements(path: Path) -> dict[str, Requirement]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    reqs = [Requirement(line) for line in lines if line and not line.startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


def test_cluster_requirements_follow_requirements_txt():
    """The cluster installs the local pins, with the CUDA fbgemm build in place of the CPU
    one; pyspark is the runtime's own, kedro-viz a local UI."""
    local = _requirements(ROOT / "requirements.txt") | _requirements(
        ROOT / "requirements-torchrec.txt"
    )
    cluster = _requirements(ROOT / "requirements-databricks.txt")
    assert "fbgemm-gpu-cpu" not in cluster and "pyspark" not in cluster
    assert str(cluster.pop("fbgemm-gpu").specifier) == str(local.pop("fbgemm-gpu-cpu").specifier)
    for name in ("pyspark", "kedro-viz"):
        local.pop(name)
    assert set(cluster) == set(local)
    for name, requirement in local.items():
        assert str(cluster[name]) == str(requirement), name


def _crossing(pipeline: Pipeline) -> set[str]:
    """Datasets one node writes and another reads (transcoded names count as one dataset)."""
    outputs = {o for n in pipeline.nodes for o in n.outputs}
    inputs = {i for n in pipeline.nodes for i in n.inputs if not i.startswith("params:")}
    produced = {o.split("@")[0] for o in outputs}
    consumed = {i.split("@")[0] for i in inputs}
    return {d for d in outputs | inputs if d.split("@")[0] in produced & consumed}


@pytest.fixture(scope="module")
def session_catalog():
    """The catalog a `kedro run --env <env>` session builds (datasets made, none loaded)."""
    catalogs = {}

    def get(env: str):
        if env not in catalogs:
            with _project(), KedroSession.create(project_path=ROOT, env=env) as session:
                catalogs[env] = session.load_context().catalog
        return catalogs[env]

    return get


@pytest.mark.parametrize("env", ["local", ENV])
@pytest.mark.parametrize("pipeline_name", PIPELINE_NAMES)
def test_no_dataset_crosses_nodes_in_memory(session_catalog, project_pipelines, env, pipeline_name):
    """A Databricks task is a process of its own: what a node hands to another must be
    persisted (locally too, so a local run behaves as the job does)."""
    catalog = session_catalog(env)
    crossing = _crossing(project_pipelines[pipeline_name])
    assert crossing, pipeline_name
    in_memory = {
        name: type(catalog.get(name)).__name__
        for name in sorted(crossing)
        if catalog.get(name) is None or isinstance(catalog.get(name), MemoryDataset)
    }
    assert not in_memory, f"{pipeline_name} hands these over in memory in {env}: {in_memory}"
