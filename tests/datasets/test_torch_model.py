"""TorchModelDataset: round trip, and refusal of anything that is not a model file."""

from __future__ import annotations

import pickle

import pytest
import torch
from kedro.io.core import DatasetError

from recsys_kedro.datasets.torch_model import TorchModelDataset


class _Payload:
    """A class a tampered checkpoint could carry (unpickling would construct it)."""


def test_round_trip(tmp_path):
    ds = TorchModelDataset(filepath=str(tmp_path / "models" / "m.pt"))
    assert not ds.exists()
    checkpoint = {"format": "x/1", "config": {"dim": 2}, "state_dict": {"w": torch.ones(2)}}
    ds.save(checkpoint)
    loaded = ds.load()
    assert loaded["config"] == {"dim": 2} and torch.equal(loaded["state_dict"]["w"], torch.ones(2))


def test_saving_something_else_is_refused(tmp_path):
    ds = TorchModelDataset(filepath=str(tmp_path / "m.pt"))
    with pytest.raises(DatasetError, match=r"not a model file \(missing \['format'\]\)"):
        ds.save({"config": {}, "state_dict": {}})
    assert not ds.exists()  # nothing half-written


def test_a_file_carrying_code_is_not_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        torch.save(
            {"format": "x/1", "config": _Payload(), "state_dict": {}}, f, pickle_module=pickle
        )
    with pytest.raises(DatasetError, match="cannot read the model file safely"):
        TorchModelDataset(filepath=str(path)).load()


def test_a_missing_file_names_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="run the pipeline's training stage first"):
        TorchModelDataset(filepath=str(tmp_path / "none.pt")).load()
