"""The feature schema and the ranker's feature layout: plain data, no Spark.

:class:`FeatureSchema` declares which columns of the user and item side tables become which
features (see :mod:`recsys_kedro.data.side_features` for how they are built in Spark);
:class:`FeatureLayout` records which columns the ranker reads and each table's size, so the
ranker's spec, its rows and the servable model follow the schema and not constants. This
module imports nothing heavy, so the servable model can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("categorical", "multi_hot", "numeric")
TRANSFORMS = ("none", "log", "standardize", "bucketize")
ENTITIES = ("user", "item")
STATISTICS = {
    "user": ("user_log_activity", "user_mean_rating"),
    "item": ("item_log_popularity", "item_mean_rating"),
}
MISSING_SUFFIX = "_missing"


class SchemaError(ValueError):
    """A feature schema that is malformed, or that a side table cannot satisfy."""


# --------------------------------------------------------------------------- the schema


def _positive_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SchemaError(f"{what} must be a positive integer or null, got {value!r}")
    return value


def _floats(values: Any, what: str) -> tuple[float | None, ...]:
    try:
        return tuple(None if v is None else float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{what} must be a list of numbers, got {values!r}") from exc


@dataclass(frozen=True)
class Feature:
    """One declared side feature: ``column`` of the side table becomes feature ``name``.

    See the module for the kinds. ``ignore`` lists values that mean "missing" (compared
    after normalisation, e.g. a placeholder such as ``unknown``). ``valid_range`` turns numbers
    outside ``[low, high]`` into missing values. ``fill`` is ``mean`` (of the transformed
    present values) or a number; ``flag_missing`` adds the ``<name>_missing`` flag (dense).
    """

    name: str
    column: str
    kind: str
    lowercase: bool = True
    prefix_chars: int | None = None
    max_size: int | None = None
    hash_buckets: int | None = None
    separator: str | None = None
    ignore: tuple[str, ...] = ()
    transform: str = "none"
    boundaries: tuple[float, ...] = ()
    valid_range: tuple[float | None, float | None] = (None, None)
    fill: str | float = "mean"
    flag_missing: bool = True

    def __post_init__(self) -> None:
        where = f"feature {self.name!r}"
        if not self.name or not self.column:
            raise SchemaError(f"{where}: name and column must be non-empty")
        if self.kind not in KINDS:
            raise SchemaError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}")
        _positive_int(self.prefix_chars, f"{where}: prefix_chars")
        _positive_int(self.max_size, f"{where}: max_size")
        _positive_int(self.hash_buckets, f"{where}: hash_buckets")
        if self.max_size and self.hash_buckets:
            raise SchemaError(f"{where}: give max_size or hash_buckets, not both")
        object.__setattr__(self, "ignore", tuple(str(v) for v in self.ignore))
        if self.kind == "numeric":
            if self.transform not in TRANSFORMS:
                raise SchemaError(
                    f"{where}: transform must be one of {TRANSFORMS}, got {self.transform!r}"
                )
            bounds = _floats(self.boundaries, f"{where}: boundaries")
            if self.transform == "bucketize" and (
                not bounds or any(a >= b for a, b in zip(bounds, bounds[1:], strict=False))
            ):
                raise SchemaError(
                    f"{where}: bucketize needs `boundaries`, a non-empty strictly increasing "
                    f"list, got {list(self.boundaries)!r}"
                )
            object.__setattr__(self, "boundaries", bounds)
            if len(self.valid_range) != 2:
                raise SchemaError(
                    f"{where}: valid_range must be [low, high] (null: no bound), "
                    f"got {list(self.valid_range)!r}"
                )
            low, high = _floats(self.valid_range, f"{where}: valid_range")
            if low is not None and high is not None and low > high:
                raise SchemaError(f"{where}: valid_range [{low}, {high}] is empty")
            object.__setattr__(self, "valid_range", (low, high))
            if not (self.fill == "mean" or isinstance(self.fill, int | float)):
                raise SchemaError(f"{where}: fill must be `mean` or a number, got {self.fill!r}")
        elif self.transform != "none" or self.boundaries:
            raise SchemaError(f"{where}: transform/boundaries apply to numeric features only")
        if self.kind == "multi_hot" and self.separator == "":
            raise SchemaError(f"{where}: separator must be non-empty (null: a list column)")

    @property
    def role(self) -> str:
        """How the ranker reads it: ``sparse`` (one index), ``jagged`` or ``dense``."""
        if self.kind == "multi_hot":
            return "jagged"
        if self.kind == "numeric" and self.transform != "bucketize":
            return "dense"
        return "sparse"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The profile columns it makes (a dense feature may add its missing flag)."""
        if self.role == "dense" and self.flag_missing:
            return (self.name, self.name + MISSING_SUFFIX)
        return (self.name,)

    @classmethod
    def from_params(cls, name: str, params: Mapping[str, Any] | None) -> Feature:
        if params is not None and not isinstance(params, Mapping):
            raise SchemaError(
                f"feature {name!r}: give its settings as a mapping (e.g. {{kind: categorical}}), "
                f"got {params!r}"
            )
        values = dict(params or {})
        values.setdefault("column", name)
        for key in ("ignore", "boundaries", "valid_range"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
            elif key in values:
                values.pop(key)
        try:
            return cls(name=str(name), **values)
        except TypeError as exc:
            known = sorted(f for f in cls.__dataclass_fields__ if f != "name")
            raise SchemaError(f"feature {name!r}: {exc}; the known keys are {known}") from exc


@dataclass(frozen=True)
class SideTable:
    """The declared features of one entity's side table (``entity`` = user or item).

    ``id_column`` holds the ids the interactions use; ``strip_types`` removes RecBole
    ``name:type`` header suffixes before the columns are looked up.
    """

    entity: str
    id_column: str = ""
    features: tuple[Feature, ...] = ()
    strip_types: bool = False

    def __post_init__(self) -> None:
        if self.entity not in ENTITIES:
            raise SchemaError(f"entity must be one of {ENTITIES}, got {self.entity!r}")
        if not self.id_column:
            object.__setattr__(self, "id_column", self.id_key)

    @property
    def id_key(self) -> str:
        return f"{self.entity}_id"

    @property
    def key(self) -> str:
        return f"{self.entity}_idx"

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(c for f in self.features for c in f.outputs)

    @classmethod
    def from_params(cls, entity: str, params: Mapping[str, Any] | None) -> SideTable:
        values = dict(params or {})
        features = values.pop("features", None) or {}
        unknown = sorted(set(values) - {"id_column", "strip_types"})
        if unknown:
            raise SchemaError(
                f"{entity}s: unknown key(s) {unknown}; a side table takes id_column, "
                "strip_types and features"
            )
        return cls(
            entity=entity,
            id_column=str(values.get("id_column") or ""),
            features=_features(entity, features),
            strip_types=bool(values.get("strip_types", False)),
        )


def _features(entity: str, features: Any) -> tuple[Feature, ...]:
    """A list of ``{name: ..., kind: ...}`` (the documented form: an environment's list
    replaces the base one whole, where mappings would be merged key by key), or a mapping
    from name to settings."""
    if isinstance(features, Mapping):
        return tuple(Feature.from_params(n, p) for n, p in features.items())
    out = []
    for item in features:
        if not isinstance(item, Mapping) or not item.get("name"):
            raise SchemaError(
                f"{entity}s.features: every entry needs a `name`, e.g. "
                f"{{name: brand, kind: categorical}}; got {item!r}"
            )
        settings = {k: v for k, v in item.items() if k != "name"}
        out.append(Feature.from_params(str(item["name"]), settings))
    return tuple(out)


@dataclass(frozen=True)
class FeatureSchema:
    """The user and item side tables' features, and the train statistics' settings.

    ``affinity``: the item multi-hot features a user's share of positives is computed over
    (``user_<f>_share``, and ``<f>_affinity`` per candidate); null = every item multi-hot
    feature. ``*_prior_weight``: pseudo-ratings at the global train mean in a mean rating.
    """

    users: SideTable = field(default_factory=lambda: SideTable("user"))
    items: SideTable = field(default_factory=lambda: SideTable("item"))
    affinity: tuple[str, ...] | None = None
    user_prior_weight: float = 0.0
    item_prior_weight: float = 10.0

    def __post_init__(self) -> None:
        if self.users.entity != "user" or self.items.entity != "item":
            raise SchemaError("users must be the user table and items the item table")
        if self.user_prior_weight < 0 or self.item_prior_weight < 0:
            raise SchemaError("user_prior_weight and item_prior_weight must be >= 0")
        multi_hot = [f.name for f in self.items.features if f.kind == "multi_hot"]
        if self.affinity is not None:
            stray = sorted(set(self.affinity) - set(multi_hot))
            if stray:
                raise SchemaError(
                    f"affinity names {stray}, which are not multi_hot item features "
                    f"({multi_hot}): list item multi_hot features only"
                )
        names = [*self.users.outputs, *self.items.outputs]
        reserved = {"user_idx", "item_idx", "user_id", "item_id", "label", "rating"}
        reserved |= {s for pair in STATISTICS.values() for s in pair}
        reserved |= {
            c for f in self.affinity_features for c in (f"user_{f}_share", f"{f}_affinity")
        }
        clashes = sorted({n for n in names if names.count(n) > 1 or n in reserved})
        if clashes:
            raise SchemaError(
                f"feature name(s) {clashes} repeat or clash with a reserved column "
                f"({sorted(reserved)}): give every user and item feature its own name"
            )

    @property
    def affinity_features(self) -> tuple[str, ...]:
        if self.affinity is not None:
            return tuple(self.affinity)
        return tuple(f.name for f in self.items.features if f.kind == "multi_hot")

    def table(self, entity: str) -> SideTable:
        return self.users if entity == "user" else self.items

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> FeatureSchema:
        values = dict(params or {})
        statistics = dict(values.pop("statistics", None) or {})
        unknown = sorted(set(values) - {"users", "items"})
        unknown += sorted(
            f"statistics.{k}"
            for k in set(statistics) - {"affinity", "user_prior_weight", "item_prior_weight"}
        )
        if unknown:
            raise SchemaError(
                f"unknown key(s) {unknown}; the schema takes users, items and statistics "
                "(affinity, user_prior_weight, item_prior_weight)"
            )
        affinity = statistics.get("affinity")
        return cls(
            users=SideTable.from_params("user", values.get("users")),
            items=SideTable.from_params("item", values.get("items")),
            affinity=None if affinity is None else tuple(str(a) for a in affinity),
            user_prior_weight=float(statistics.get("user_prior_weight", 0.0)),
            item_prior_weight=float(statistics.get("item_prior_weight", 10.0)),
        )


@dataclass(frozen=True)
class FeatureLayout:
    """Which columns the ranker reads, where each comes from, and each table's size.

    Made by :func:`feature_layout` once the profiles and statistics exist; stored in the
    feature summary so the ranker's spec, its rows and the servable model agree.
    """

    user_sparse: tuple[str, ...] = ()
    item_sparse: tuple[str, ...] = ()
    jagged: tuple[str, ...] = ()
    user_dense: tuple[str, ...] = ()
    item_dense: tuple[str, ...] = ()
    user_statistics: tuple[str, ...] = ()
    item_statistics: tuple[str, ...] = ()
    #: ``(user share column, item multi-hot feature, output dense column)``
    affinities: tuple[tuple[str, str, str], ...] = ()
    cardinalities: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in self.sparse_features if c not in self.cardinalities]
        if missing:
            raise SchemaError(f"the layout has no cardinality for sparse feature(s) {missing}")

    @property
    def sparse_features(self) -> tuple[str, ...]:
        return ("user_idx", "item_idx", *self.user_sparse, *self.item_sparse)

    @property
    def dense_features(self) -> tuple[str, ...]:
        return (
            *self.user_dense,
            *self.item_dense,
            *self.user_statistics,
            *self.item_statistics,
            *(out for _, _, out in self.affinities),
        )

    @property
    def user_columns(self) -> tuple[str, ...]:
        """Per-user columns a candidate row takes (profiles and statistics)."""
        shares = tuple(share for share, _, _ in self.affinities)
        return (*self.user_sparse, *self.user_dense, *self.user_statistics, *shares)

    @property
    def item_columns(self) -> tuple[str, ...]:
        return (*self.item_sparse, *self.item_dense, *self.item_statistics)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["affinities"] = [list(a) for a in self.affinities]
        out["cardinalities"] = {k: int(v) for k, v in self.cardinalities.items()}
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FeatureLayout:
        return cls(
            **{k: tuple(v) for k, v in values.items() if k not in ("affinities", "cardinalities")},
            affinities=tuple(tuple(a) for a in values.get("affinities", ())),
            cardinalities={k: int(v) for k, v in values.get("cardinalities", {}).items()},
        )


def feature_layout(
    schema: FeatureSchema,
    cardinalities: Mapping[str, int],
    *,
    ratings: bool,
) -> FeatureLayout:
    """The ranker's columns for ``schema``; ``cardinalities`` covers ``user_idx``,
    ``item_idx`` and every sparse or jagged feature."""

    def of(table: SideTable, role: str) -> tuple[str, ...]:
        if role == "dense":
            return tuple(c for f in table.features if f.role == "dense" for c in f.outputs)
        roles = ("sparse", "jagged") if role == "sparse" else (role,)
        return tuple(f.name for f in table.features if f.role in roles)

    stats = {e: STATISTICS[e] if ratings else STATISTICS[e][:1] for e in ENTITIES}
    return FeatureLayout(
        user_sparse=of(schema.users, "sparse"),
        item_sparse=of(schema.items, "sparse"),
        jagged=(*of(schema.users, "jagged"), *of(schema.items, "jagged")),
        user_dense=of(schema.users, "dense"),
        item_dense=of(schema.items, "dense"),
        user_statistics=stats["user"],
        item_statistics=stats["item"],
        affinities=tuple((f"user_{f}_share", f, f"{f}_affinity") for f in schema.affinity_features),
        cardinalities=dict(cardinalities),
    )


def report_layout(
    schema: FeatureSchema,
    user_report: Mapping[str, Any],
    item_report: Mapping[str, Any],
    *,
    ratings: bool,
) -> FeatureLayout:
    """:func:`feature_layout` sized by the side profiles' reports: each index's ids
    (``coverage.ids``) and each sparse or multi-hot feature's table size."""
    cardinalities = {
        "user_idx": int(user_report["coverage"]["ids"]),
        "item_idx": int(item_report["coverage"]["ids"]),
        **user_report["cardinalities"],
        **item_report["cardinalities"],
    }
    return feature_layout(schema, cardinalities, ratings=ratings)
