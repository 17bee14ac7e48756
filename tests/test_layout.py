"""The house, drawn from its imports: the framework packages know nothing of Kedro, and nothing
outside pipelines/ (and the registry that lists them) reaches into a pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "recsys_kedro"
#: Kedro-free: usable (and tested) without a Kedro project.
FRAMEWORK = ("data", "evaluation", "mds", "models", "retrieval", "serving", "training", "tuning")
#: May not import a pipeline: they serve every pipeline, or run beside them.
NOT_INTO_PIPELINES = ("datasets", "tuning", "benchmarks", *FRAMEWORK, "hooks.py", "reporting.py")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(part: str) -> list[Path]:
    target = PACKAGE / part
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize("part", FRAMEWORK)
def test_framework_packages_do_not_import_kedro(part):
    offenders = {
        str(f.relative_to(PACKAGE)): sorted(m for m in _imports(f) if m.split(".")[0] == "kedro")
        for f in _files(part)
    }
    assert not {k: v for k, v in offenders.items() if v}


@pytest.mark.parametrize("part", NOT_INTO_PIPELINES)
def test_nothing_outside_pipelines_imports_a_pipeline(part):
    offenders = {
        str(f.relative_to(PACKAGE)): sorted(
            m for m in _imports(f) if m.startswith("recsys_kedro.pipelines")
        )
        for f in _files(part)
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_check_sees_a_planted_import(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from recsys_kedro.pipelines.dlrm.nodes import x\n")
    assert "recsys_kedro.pipelines.dlrm.nodes" in _imports(planted)
