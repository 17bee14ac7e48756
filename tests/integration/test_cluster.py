"""The two_tower pipeline on a real Spark standalone cluster, against the same run in local mode
(the test session's one small two_tower run, tests/conftest.py).

A master and two workers (one core each) are started on 127.0.0.1 with the ``spark-class``
launcher that ships in pyspark's wheel. The project is pointed at them by configuration only:
``kedro run --env cluster`` (conf/cluster: the master from ``RECSYS_SPARK_MASTER``, the shared
data root from ``RECSYS_DATA_ROOT``, ``TorchDistributor(local_mode=False, num_processes=2)``),
as a separate process, as a user would run it. Training then runs inside the two executors.

Tolerance: the cluster's metrics equal the local run's within 0.02 (absolute). The data,
splits, shard order and seeds are the same; what differs is each rank's thread count (an
executor rank has the machine's cores to itself), which can change float sums in the last
bits and so, over two epochs, the metrics slightly.

The cluster is stopped in the fixture's teardown, also when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyspark
import pytest
import yaml

from .conftest import make_project
from .test_two_tower_pipeline import SMALL_RUN, write_fixture_inter, write_side_files

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.slow]

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
KEDRO = Path(sys.executable).parent / "kedro"


#: The session's small two_tower run (SMALL_RUN) as a parameters file of the project's cluster
#: environment; ALS is off (its figures are not compared), which changes none of the
#: two-tower's.
RUN_PARAMETERS = {
    "two_tower": {
        **{k: v for k, v in SMALL_RUN.items() if k != "evaluation"},
        "evaluation": {"als": {"enabled": False}},
    }
}
TOLERANCE = 0.02


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandaloneCluster:
    """A Spark standalone master and workers on 127.0.0.1, each daemon in its own process
    group (stopped by process id, never by a pattern)."""

    def __init__(self, workdir: Path, workers: int = 2, worker_memory: str = "3g") -> None:
        self.workdir = workdir
        self.n_workers = workers
        self.worker_memory = worker_memory
        self.port = _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "SPARK_HOME": str(SPARK_CLASS.parent.parent),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(workdir / "logs"),
            "PYSPARK_PYTHON": sys.executable,
        }

    def _daemon(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            [str(SPARK_CLASS), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def master_log(self) -> str:
        return (self.workdir / "master.log").read_text(errors="replace")

    def start(self, timeout_s: float = 120) -> None:
        self._daemon(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--webui-port", str(_free_port()),
        )  # fmt: skip
        for i in range(self.n_workers):
            self._daemon(
                f"worker{i}",
                "org.apache.spark.deploy.worker.Worker",
                self.url,
                "--host", "127.0.0.1",
                "--cores", "1",
                "--memory", self.worker_memory,
                "--webui-port", str(_free_port()),
                "--work-dir", str(self.workdir / f"work{i}"),
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while self.master_log().count("Registering worker") < self.n_workers:
            dead = [p.args[1] for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the standalone cluster did not start ({dead or 'timeout'}):\n"
                    + self.master_log()[-3000:]
                )
            time.sleep(0.5)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def executor_logs(self) -> list[str]:
        """The stderr of every executor the cluster ran (one folder per executor)."""
        return [
            p.read_text(errors="replace")
            for p in sorted(self.workdir.glob("work*/app-*/*/stderr"))
            if p.is_file()
        ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = StandaloneCluster(tmp_path_factory.mktemp("spark_cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _kedro_run(root: Path, env: str, extra_env: dict[str, str]) -> None:
    process = subprocess.run(
        [str(KEDRO), "run", "--pipelines=two_tower", f"--env={env}"],
        cwd=root,
        check=False,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", **extra_env},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    (root / "kedro_run.log").write_text(process.stdout + process.stderr)  # read it after a run
    assert process.returncode == 0, (process.stdout + process.stderr)[-6000:]


def _project(tmp_path_factory, name: str) -> Path:
    root = make_project(tmp_path_factory.mktemp(name))
    write_fixture_inter(root / "data" / "01_raw" / "ml-100k" / "ml-100k.inter")
    write_side_files(root / "data" / "01_raw" / "ml-100k")
    conf = root / "conf" / "cluster" / "parameters_test_run.yml"
    conf.write_text(yaml.safe_dump(RUN_PARAMETERS))
    return root


def _metrics(root: Path) -> dict:
    return json.loads((root / "data/08_reporting/two_tower_metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory, two_tower_project, dlrm_run):
    """The cluster's two_tower run, with the session's dlrm run (another `kedro run`, local
    mode) started just before it: two pipelines at once on this machine."""
    local, _ = two_tower_project
    on_cluster = _project(tmp_path_factory, "cluster_run")
    dlrm_run.start()
    started = time.time()
    _kedro_run(
        on_cluster,
        "cluster",
        {"RECSYS_SPARK_MASTER": cluster.url, "RECSYS_DATA_ROOT": str(on_cluster / "data")},
    )
    (on_cluster / "run_window.json").write_text(json.dumps([started, time.time()]))
    return local, on_cluster


def test_training_ran_inside_the_executors(cluster, runs):
    _, on_cluster = runs
    summary = json.loads(
        (on_cluster / "data/06_models/two_tower_training_summary.json").read_text()
    )
    assert summary["world_size"] == 2 and summary["epochs"] == 2
    # TorchDistributor's cluster mode runs the ranks as the tasks of a barrier stage: one in
    # each executor (one core each), so both executors' logs show a barrier task.
    logs = cluster.executor_logs()
    assert sum("BarrierTaskContext: Task" in log for log in logs) >= 2
    # The checkpoints were written during training and removed once the model was saved.
    assert not any((on_cluster / "data/06_models/checkpoints/two_tower").glob("*/step_*"))


def test_cluster_metrics_match_local_mode(runs):
    local, on_cluster = (_metrics(root) for root in runs)
    assert on_cluster["n_train"] == local["n_train"] and on_cluster["n_test"] == local["n_test"]
    assert on_cluster["popularity_ndcg@10"] == local["popularity_ndcg@10"]  # Spark: exact
    for key in ("test_auc", "recall@10", "ndcg@10", "recall@100"):
        assert abs(on_cluster[key] - local[key]) <= TOLERANCE, (key, on_cluster, local)


def test_two_pipelines_at_once_on_one_machine_both_succeed(runs, dlrm_run):
    """The cluster's two_tower run and the local dlrm run, started together: their Spark
    jobs, exports and training ranks share this machine, Mosaic's shared memory included
    (each run's ranks claim prefixes of their own, and no run cleans up another's). Runs with
    the same outputs are refused instead (tests/test_output_lock.py,
    tests/integration/test_two_tower_pipeline.py)."""
    _, on_cluster = runs
    dlrm_root = dlrm_run.wait()  # fails with the run's output if it did not succeed
    started, ended = json.loads((on_cluster / "run_window.json").read_text())
    assert dlrm_run.started < ended and started < dlrm_run.ended  # at once
    for root, name in ((on_cluster, "two_tower"), (dlrm_root, "dlrm")):
        summary = json.loads((root / f"data/06_models/{name}_training_summary.json").read_text())
        assert summary["world_size"] == 2 and summary["epochs"] >= 1
        assert (root / f"data/08_reporting/{name}_metrics.json").is_file()
