"""One writer per output: a second run that would write the same datasets under the same data
root stops before it starts, naming the first; other runs go on side by side."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import node, pipeline
from kedro_datasets.json import JSONDataset

from recsys_kedro.hooks import RunLockHooks
from recsys_kedro.output_lock import OutputLocks, OutputsInUseError


def test_a_second_writer_of_an_output_is_refused_with_the_first_named(tmp_path):
    first, second = OutputLocks(str(tmp_path)), OutputLocks(str(tmp_path))
    first.acquire(["two_tower.model", "two_tower.metrics"], run="kedro run --pipelines=two_tower")
    with pytest.raises(OutputsInUseError, match=r"'two_tower.model'.*--pipelines=two_tower"):
        second.acquire(["dlrm.model", "two_tower.model"], run="kedro run --pipelines=recommend")
    # Nothing half-taken: the refused run holds no lock (dlrm.model is free).
    OutputLocks(str(tmp_path)).acquire(["dlrm.model"], run="other")
    first.release()
    second.acquire(["two_tower.model"], run="kedro run --pipelines=recommend")
    second.release()


def test_runs_with_no_output_in_common_go_side_by_side(tmp_path):
    a, b, c = (OutputLocks(str(tmp_path / root)) for root in ("x", "x", "y"))
    a.acquire(["two_tower.model"], run="a")
    b.acquire(["dlrm.model"], run="b")  # same data root, other outputs
    c.acquire(["two_tower.model"], run="c")  # same output, other data root
    for locks in (a, b, c):
        locks.release()


HOLD = """
import sys, time
from recsys_kedro.output_lock import OutputLocks
OutputLocks(sys.argv[1]).acquire(["dlrm.model"], run="held by a killed run")
print("locked", flush=True)
time.sleep(600)
"""


def test_a_killed_run_leaves_no_lock_behind(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputsInUseError, match=f"process {holder.pid}"):
            OutputLocks(str(tmp_path)).acquire(["dlrm.model"], run="second")
    finally:
        holder.kill()
        holder.wait()
    OutputLocks(str(tmp_path)).acquire(["dlrm.model"], run="after the kill")


def _hooks(project) -> RunLockHooks:
    hooks = RunLockHooks()
    context = SimpleNamespace(
        config_loader={"globals": {"data_root": "data"}}, project_path=project
    )
    hooks.after_context_created(context)
    return hooks


def test_the_hook_locks_a_runs_persisted_outputs_until_it_ends(tmp_path):
    catalog = DataCatalog(
        datasets={
            "report": JSONDataset(filepath=str(tmp_path / "data" / "report.json")),
            "scratch": MemoryDataset(),
        }
    )
    two_nodes = pipeline(
        [node(lambda: 1, None, "scratch", name="a"), node(lambda x: x, "scratch", "report")]
    )
    run_params = {"pipeline_names": ["demo"]}  # what Kedro 1.x passes
    first, second = _hooks(tmp_path), _hooks(tmp_path)
    first.before_pipeline_run(run_params, two_nodes, catalog)
    with pytest.raises(OutputsInUseError, match=r"'report'.*--pipelines=demo.*globals.yml"):
        second.before_pipeline_run(run_params, two_nodes, catalog)
    # Only persisted outputs are locked: a run writing only the memory dataset goes on.
    only_scratch = pipeline([node(lambda: 1, None, "scratch", name="a")])
    second.before_pipeline_run(run_params, only_scratch, catalog)
    second.after_pipeline_run()
    first.on_pipeline_error()  # a failed run lets go too
    second.before_pipeline_run(run_params, two_nodes, catalog)
    second.after_pipeline_run()
