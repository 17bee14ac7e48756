"""launch(): TorchDistributor with 2 gloo processes (needs the Spark session): in local mode,
and in cluster mode, where the ranks are the tasks of a Spark barrier stage."""

from __future__ import annotations

import pytest

from recsys_kedro.training.launch import (
    _failure_message,
    _outcomes,
    _RankGuard,
    _writable,
    launch,
    resolve_use_gpu,
)


def test_launch_returns_the_agreed_result_of_all_ranks(spark):
    def world(scale):  # pickled by value by cloudpickle, run in each rank
        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo")
        t = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(t)
        size = dist.get_world_size()
        dist.destroy_process_group()
        return {"sum": float(t) * scale, "world_size": size}

    assert launch(world, 10, num_processes=2, local_mode=True, use_gpu=False) == {
        "sum": 30.0,
        "world_size": 2,
    }


def test_a_crashed_rank_fails_the_launch_with_a_clear_message(spark):
    def crash():
        import os

        if os.environ["RANK"] == "1":
            raise ValueError("boom on rank 1")
        return 0

    with pytest.raises(RuntimeError) as caught:
        launch(crash, num_processes=2, local_mode=True, use_gpu=False)
    message = str(caught.value)
    assert "rank 1" in message and "raised ValueError: boom on rank 1" in message
    assert 'raise ValueError("boom on rank 1")' in message  # its traceback's last lines


def test_a_killed_rank_is_named_and_outcomes_go_to_the_given_folder(spark, tmp_path):
    def killed():
        import os
        import signal

        if os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        return 0

    # Rank 0 may be stopped by the launcher before it returns: then both are named.
    with pytest.raises(RuntimeError, match=r"rank\(s\) \[(0, )?1\] stopped without a result"):
        launch(killed, num_processes=2, local_mode=True, use_gpu=False, outcome_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # the run's outcome folder is removed


def test_a_raising_rank_in_cluster_mode_fails_fast_with_its_exception(spark, tmp_path):
    """Cluster mode on the session's local master: the ranks run inside Spark tasks (a
    barrier stage), not under the driver's torchrun, and report through the outcome folder
    on storage the driver shares. The same run on a real standalone cluster is the cluster
    test's (tests/integration/test_cluster.py)."""

    def raising():
        import os

        import torch.distributed as dist

        dist.init_process_group("gloo")
        if os.environ["RANK"] == "1":
            raise ValueError("planted failure on rank 1")
        dist.barrier()
        return 0

    with pytest.raises(RuntimeError) as caught:
        launch(raising, num_processes=2, local_mode=False, outcome_dir=str(tmp_path))
    message = str(caught.value)
    assert "rank 1" in message and "ValueError: planted failure on rank 1" in message


def test_launch_and_gpu_resolution_validate_their_arguments():
    with pytest.raises(ValueError, match="num_processes"):
        launch(print, num_processes=0)
    assert resolve_use_gpu(False) is False
    assert resolve_use_gpu(True) is True
    assert isinstance(resolve_use_gpu(None), bool)


def test_a_rank_that_cannot_write_its_outcome_still_reports_its_own_error(tmp_path, capsys):
    """The outcome folder cannot be written (here: a path under a file; a full disk is the
    same OSError): the rank's report goes to its fallback folder with what went wrong, the
    driver still quotes the rank's own exception, and a probe of the folder says why."""
    (tmp_path / "file").write_text("x")
    outcomes = str(tmp_path / "file" / "ranks-1")

    def fail() -> None:
        raise ValueError("the rank's own error")

    with pytest.raises(ValueError, match="the rank's own error"):  # not the OSError
        _RankGuard(fail, outcomes)()
    assert "could not write the rank outcome" in capsys.readouterr().err
    errors, silent = _outcomes(outcomes, 2)
    assert [e["error"] for e in errors] == ["ValueError: the rank's own error"] and silent == [1]
    problem = _writable(outcomes)
    assert problem.startswith(f"the outcome folder {outcomes} cannot be written")
    assert "MB free on its file system" in problem
    message = _failure_message(errors, silent, None, problem)
    assert "rank 0 (" in message and "raised ValueError: the rank's own error" in message
    assert f"could not report to {outcomes}: NotADirectoryError" in message
    assert "rank(s) [1] left no outcome, and the outcome folder" in message
