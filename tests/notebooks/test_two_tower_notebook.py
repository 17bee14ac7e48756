"""notebooks/two_tower.ipynb runs headless against a small two_tower run, so it cannot rot.

The pipeline runs once per test session, in process, on a synthetic MovieLens-like project
(tests/conftest.py's `two_tower_project`, which the two_tower integration checks read too);
the notebook is then executed by nbclient in a Jupyter kernel started from this interpreter
(a kernelspec written to a temporary JUPYTER_PATH), with ``RECSYS_KEDRO_PROJECT`` pointing it
at the temporary project.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

from tests.integration.conftest import PROJECT_ROOT
from tests.integration.test_two_tower_pipeline import GENRES

pytestmark = pytest.mark.integration

NOTEBOOK = PROJECT_ROOT / "notebooks" / "two_tower.ipynb"
REPORT = "NOTEBOOK_REPORT "


@pytest.fixture(scope="module")
def project(two_tower_project):
    """The session's one small two_tower run (2 epochs, ALS with a single grid point)."""
    return two_tower_project[0]


def execute_notebook(path: Path, project: Path, jupyter_prefix: Path, report_code: str):
    """``path`` executed by nbclient in a kernel of this interpreter against ``project``,
    with a last cell (``report_code``) that prints what the test checks; raises on the
    first failing cell."""
    from ipykernel.kernelspec import install
    from nbclient import NotebookClient

    install(prefix=str(jupyter_prefix), kernel_name="python3")  # argv: this interpreter
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(report_code))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(jupyter_prefix / "share" / "jupyter"))
    mp.setenv("RECSYS_KEDRO_PROJECT", str(project))
    mp.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    mp.setenv("DO_NOT_TRACK", "1")
    try:
        NotebookClient(
            nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(project)}}
        ).execute()
    finally:
        mp.undo()
    return nb


@pytest.fixture(scope="module")
def executed(project, tmp_path_factory):
    """The notebook, executed; a last cell added here reports what the test checks."""
    return execute_notebook(
        NOTEBOOK,
        project,
        tmp_path_factory.mktemp("jupyter"),
        "import json, sys\n"
        f"print({REPORT!r} + json.dumps({{'executable': sys.executable, "
        "'project': str(PROJECT_ROOT), 'top_k': len(top_k), "
        "'liked_in_test': int(top_k['liked_in_test'].sum()), "
        "'metrics_columns': [list(c) for c in metrics_table.columns], "
        "'ks': list(metrics_table.index), 'history_rows': len(rated_history), "
        "'titled': int(top_k['title'].notna().sum())}))",
    )


def _outputs(nb, cell_id: str) -> list:
    (cell,) = [c for c in nb.cells if c.get("id") == cell_id]
    return cell.outputs


def _text(outputs) -> str:
    parts = []
    for out in outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/html", out.data.get("text/plain", "")))
    return "\n".join(parts)


def _report(nb) -> dict:
    text = _text(nb.cells[-1].outputs)
    line = next(line for line in text.splitlines() if line.startswith(REPORT))
    return json.loads(line[len(REPORT) :])


def test_committed_notebook_is_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id


def test_notebook_runs_in_this_interpreter_against_the_small_project(executed, project):
    report = _report(executed)
    assert Path(report["executable"]).resolve() == Path(sys.executable).resolve()
    assert Path(report["project"]) == project.resolve()
    assert not [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]


def test_metrics_table_compares_two_tower_als_and_popularity(executed):
    report = _report(executed)
    assert report["ks"] == [10, 20, 100]
    for metric in ("recall@K", "ndcg@K"):
        for model in ("two-tower", "ALS", "popularity"):
            assert [metric, model] in report["metrics_columns"]
    assert "epoch kept:" in _text(_outputs(executed, "metrics-table"))


def test_metric_at_k_plot_and_validation_curves_are_shown(executed):
    for cell_id in ("metrics-plot", "curves"):
        images = [o for o in _outputs(executed, cell_id) if "image/png" in o.get("data", {})]
        assert len(images) == 1, cell_id
    assert "val_ndcg@10" in _text(_outputs(executed, "curves"))


def test_user_history_and_top_10_have_titles_and_genres(executed):
    report = _report(executed)
    assert report["top_k"] == 10 and report["titled"] == 10
    assert report["history_rows"] > 0
    history = _text(_outputs(executed, "history"))
    top = _text(_outputs(executed, "top-k"))
    for text in (history, top):
        assert "Fixture Movie" in text
        assert any(", ".join(g.split()) in text for g in GENRES)
    assert "liked_in_test" in top
    assert "same vector as the stored embedding: True" in _text(_outputs(executed, "model"))
