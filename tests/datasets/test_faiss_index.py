"""FaissIndexDataset: round trip through a file, refusal of non-indexes, catalog use."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DataCatalog
from kedro.io.core import DatasetError

from recsys_kedro.datasets.faiss_index import FaissIndexDataset
from recsys_kedro.retrieval import IndexConfig, build_index, search


def _items(n: int = 300, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize(
    "config",
    [IndexConfig(kind="exact"), IndexConfig(kind="ivf", nlist=5, nprobe=2), IndexConfig("hnsw")],
    ids=["exact", "ivf", "hnsw"],
)
def test_round_trip(tmp_path, config):
    items = _items()
    ds = FaissIndexDataset(filepath=str(tmp_path / "recommend" / "retrieval_index.faiss"))
    assert not ds.exists()
    index = build_index(items, config)
    ds.save(index)
    assert ds.exists()
    loaded = ds.load()
    assert type(loaded) is type(index) and loaded.ntotal == items.shape[0]
    queries = items[:20] + 0.1
    exclude = [np.arange(row) for row in range(20)]
    before = search(index, queries, 10, exclude=exclude, threads=1)
    after = search(loaded, queries, 10, exclude=exclude, threads=1)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    if config.kind == "ivf":
        assert loaded.nprobe == 2


def test_saving_something_else_is_refused(tmp_path):
    ds = FaissIndexDataset(filepath=str(tmp_path / "retrieval_index.faiss"))
    with pytest.raises(DatasetError, match=r"can only save a faiss.Index .* got ndarray"):
        ds.save(_items())
    assert not ds.exists()  # nothing written


def test_a_missing_file_names_the_fix(tmp_path):
    ds = FaissIndexDataset(filepath=str(tmp_path / "none.faiss"))
    with pytest.raises(DatasetError, match="no FAISS index at .*builds the item index first"):
        ds.load()


def test_a_file_that_is_not_an_index_is_refused(tmp_path):
    path = tmp_path / "retrieval_index.faiss"
    path.write_bytes(b"not an index at all")
    with pytest.raises(DatasetError, match="not a readable FAISS index"):
        FaissIndexDataset(filepath=str(path)).load()


def test_describe_and_fs_args(tmp_path):
    path = str(tmp_path / "retrieval_index.faiss")
    ds = FaissIndexDataset(
        filepath=path,
        fs_args={"open_args_save": {"block_size": 1024}, "open_args_load": {}},
        metadata={"kedro-viz": {"layer": "models"}},
    )
    assert ds._describe() == {"filepath": path, "protocol": "file"}
    assert ds.metadata == {"kedro-viz": {"layer": "models"}}
    ds.save(build_index(_items(20, 4)))
    assert ds.load().ntotal == 20


def test_memory_filesystem_and_catalog_config():
    import fsspec

    path = "memory:///test_faiss_index/recommend/retrieval_index.faiss"
    catalog = DataCatalog.from_config(
        {
            "item_index": {
                "type": "recsys_kedro.datasets.faiss_index.FaissIndexDataset",
                "filepath": path,
                "metadata": {"kedro-viz": {"layer": "models"}},
            }
        }
    )
    items = _items(50, 4)
    try:
        assert not catalog.exists("item_index")
        index = build_index(items)
        catalog.save("item_index", index)
        assert catalog.exists("item_index")
        loaded = catalog.load("item_index")
        queries = items[:5] * -1.0
        np.testing.assert_array_equal(search(loaded, queries, 7)[1], search(index, queries, 7)[1])
    finally:
        memory = fsspec.filesystem("memory")
        if memory.exists("/test_faiss_index"):
            memory.rm("/test_faiss_index", recursive=True)
