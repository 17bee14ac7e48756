"""Model specs as plain values: what a spec node writes (JSON) and the training node reads.

A spec crosses a node boundary, so it is saved in the catalog (readable, logged to MLflow,
and possible to hand between separate jobs) rather than passed as a Python object.
``{"kind": "<registered kind>", "spec": {...the spec's to_dict()...}}``.
"""

from __future__ import annotations

from typing import Any


def _registry() -> dict[str, type]:
    from recsys_kedro.training.ranking import RankingSpec
    from recsys_kedro.training.two_tower import TwoTowerSpec

    return {"two_tower": TwoTowerSpec, "ranking": RankingSpec}


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """``{"kind", "spec"}`` for a registered spec class."""
    for kind, cls in _registry().items():
        if type(spec) is cls:
            return {"kind": kind, "spec": spec.to_dict()}
    raise TypeError(f"{type(spec).__name__} is not a registered model spec")


def spec_from_dict(data: dict[str, Any]) -> Any:
    """The spec object back from :func:`spec_to_dict`'s dictionary."""
    registry = _registry()
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in registry:
        raise ValueError(
            f"unknown model spec kind {kind!r}; expected one of {sorted(registry)} "
            "(written by spec_to_dict)"
        )
    return registry[kind].from_dict(data["spec"])
