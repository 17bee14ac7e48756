"""notebooks/recommend.ipynb runs headless against a small recommend run, so it cannot rot.

The same small project as tests/integration/test_recommend_pipeline.py (one run per test
session, tests/conftest.py); the notebook is executed by nbclient in a kernel of this
interpreter.
"""

from __future__ import annotations

import nbformat
import pytest

from tests.integration.conftest import PROJECT_ROOT
from tests.integration.test_recommend_pipeline import PARAMS

from .test_two_tower_notebook import REPORT, _outputs, _report, _text, execute_notebook

pytestmark = pytest.mark.integration

NOTEBOOK = PROJECT_ROOT / "notebooks" / "recommend.ipynb"


@pytest.fixture(scope="module")
def executed(recommend_project, tmp_path_factory):
    """The notebook, executed against the session's small `recommend` run."""
    return execute_notebook(
        NOTEBOOK,
        recommend_project,
        tmp_path_factory.mktemp("jupyter"),
        "import json\n"
        f"print({REPORT!r} + json.dumps({{'top_k': len(top_k), "
        "'titled': int(top_k['title'].notna().sum()), 'history_rows': len(rated_history), "
        "'columns': [list(c) for c in metrics_table.columns], "
        "'ks': list(metrics_table.index), 'user': user_id, "
        "'top_users': sorted(set(top_k['user_id']))}))",
    )


def test_committed_notebook_is_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id


def test_funnel_metrics_and_plot_are_shown(executed):
    report = _report(executed)
    assert report["ks"] == PARAMS["recommend"]["evaluation"]["ks"]
    for metric in ("recall@K", "ndcg@K"):
        for order in ("retrieval", "rerank", "logreg rerank", "rated-pairs rerank", "popularity"):
            assert [metric, order] in report["columns"]
    images = [o for o in _outputs(executed, "metrics") if "image/png" in o.get("data", {})]
    assert len(images) == 1
    assert "ANN recall vs exact" in _text(_outputs(executed, "metrics"))


def test_the_saved_recommender_gives_one_users_top_k_with_titles(executed):
    report = _report(executed)
    assert report["top_k"] == PARAMS["recommend"]["evaluation"]["top_k"]
    assert report["titled"] == report["top_k"] and report["top_users"] == [report["user"]]
    assert report["history_rows"] > 0
    assert "Movie " in _text(_outputs(executed, "top-k"))
    assert "liked in the test period" in _text(_outputs(executed, "top-k"))
