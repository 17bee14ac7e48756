"""Raw interactions: read rating files, event logs or tables into one canonical schema.

Plain framework code: nothing here knows about Kedro (see
``recsys_kedro.datasets.interactions_dataset`` for the catalog entry that wraps it).

Every reader returns a lazy Spark DataFrame with the canonical schema::

    user_id: string, item_id: string, rating: double, event: string, timestamp: long

``rating`` is null for implicit data (an event log has none), ``event`` is the event type
where the source has one (``view``, ``purchase``; null otherwise), ``timestamp`` is seconds
since the epoch (UTC), null where the source has none. Sources are the published rating
formats of :data:`RATINGS_FORMATS`, any delimited text file with a header (``csv``), parquet
(``parquet``) and tables, the last three with a column mapping and a timestamp unit
(:data:`TIMESTAMP_UNITS`; ``auto`` detects it from the values and logs what it chose).

Text files are read with Spark's CSV reader and an explicit schema of strings, then parsed
with ``try_cast`` (null where a value does not parse, also under ANSI mode), so nothing is
collected to the driver. Before the DataFrame is returned, :func:`validate_ratings` runs ONE
aggregating Spark query (one pass over the data; header formats read each file's first line
before it, ``auto`` units one aggregate) that checks every row and
raises :class:`RatingsFormatError` naming the file (or table), the column, what is wrong (a
count and up to 3 examples) and how to fix it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

CANONICAL_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "rating", "event", "timestamp")
REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "item_id")
CANONICAL_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("item_id", T.StringType()),
        T.StructField("rating", T.DoubleType()),
        T.StructField("event", T.StringType()),
        T.StructField("timestamp", T.LongType()),
    ]
)

#: Sources whose columns are named by a ``columns:`` mapping (beside the published formats).
GENERIC_FORMATS: tuple[str, ...] = ("csv", "parquet")
#: How numeric timestamps count time (``datetime``: text such as ``2024-03-01 12:00:00``, UTC;
#: ``auto``: from the largest value, logged).
TIMESTAMP_UNITS: tuple[str, ...] = ("s", "ms", "us", "ns", "datetime", "auto")
_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
#: Timestamps later than now by more than this are impossible (a unit mix-up, not a clock skew).
FUTURE_SLACK_S = 86_400

logger = logging.getLogger(__name__)

DEFAULT_RATING_RANGE: tuple[float, float] = (0.5, 5.0)
CATALOG_FILE = "conf/base/catalog.yml"
MAX_EXAMPLES = 3

# Helper columns that a parser may add next to the canonical ones; validate_ratings reads
# them to tell an empty value from an unparsable one, and drops them.
RAW_PREFIX = "_raw_"
CORRUPT_COLUMN = "_corrupt_record"
LINE_COLUMN = "_line"
FILE_COLUMN = "_file"

_INTEGER_ID = r"^[0-9]+$"
_INTEGER_TS = r"^-?[0-9]+$"


class RatingsFormatError(ValueError):
    """Raw ratings that cannot be read as the configured format (the message says how to fix it)."""


@dataclass(frozen=True)
class RatingsFormat:
    """How one published ratings file is laid out.

    Attributes:
        name: the format's key in :data:`RATINGS_FORMATS` (the catalog's ``format:``).
        description: what the file is, used in error messages.
        sep: field separator (Spark's CSV ``sep``; may be several characters).
        header: whether the first line names the columns.
        columns: canonical column -> the column's name in the published file (the header
            name, or the field's name in the dataset's README for headerless files, in
            field order).
        optional: canonical columns a header may lack (then null).
        integer_user_ids / integer_item_ids: ids must be non-negative integers (else any
            non-empty string).
        timestamp: ``"epoch"`` (integer seconds), ``"epoch_float"`` (seconds, may have a
            fraction) or ``"datetime"`` (``yyyy-MM-dd HH:mm:ss`` in UTC; integer seconds too).
        strip_header_types: drop RecBole's ``:type`` suffix from header names.
        example: the first lines of such a file, for error messages.
    """

    name: str
    description: str
    sep: str
    header: bool
    columns: tuple[tuple[str, str], ...]
    optional: frozenset[str] = frozenset()
    integer_user_ids: bool = True
    integer_item_ids: bool = True
    timestamp: str = "epoch"
    strip_header_types: bool = False
    example: str = ""


RATINGS_FORMATS: dict[str, RatingsFormat] = {
    fmt.name: fmt
    for fmt in (
        RatingsFormat(
            name="recbole_inter",
            description="a tab-separated RecBole atomic .inter file with a typed header line",
            sep="\t",
            header=True,
            columns=(
                ("user_id", "user_id"),
                ("item_id", "item_id"),
                ("rating", "rating"),
                ("timestamp", "timestamp"),
            ),
            optional=frozenset({"timestamp"}),
            integer_user_ids=False,
            integer_item_ids=False,
            timestamp="epoch_float",
            strip_header_types=True,
            example="user_id:token\\titem_id:token\\trating:float\\ttimestamp:float / "
            "196\\t242\\t3\\t881250949",
        ),
        RatingsFormat(
            name="ml100k_udata",
            description="a tab-separated GroupLens ml-100k u.data file (no header)",
            sep="\t",
            header=False,
            columns=(
                ("user_id", "user id"),
                ("item_id", "item id"),
                ("rating", "rating"),
                ("timestamp", "timestamp"),
            ),
            example="196\\t242\\t3\\t881250949",
        ),
        RatingsFormat(
            name="ml1m_dat",
            description="a '::'-separated GroupLens ml-1m ratings.dat file (no header)",
            sep="::",
            header=False,
            columns=(
                ("user_id", "UserID"),
                ("item_id", "MovieID"),
                ("rating", "Rating"),
                ("timestamp", "Timestamp"),
            ),
            example="1::1193::5::978300760",
        ),
        RatingsFormat(
            name="ml_csv",
            description="a comma-separated GroupLens ratings.csv file "
            "(ml-20m, ml-25m, ml-latest) with the header userId,movieId,rating,timestamp",
            sep=",",
            header=True,
            columns=(
                ("user_id", "userId"),
                ("item_id", "movieId"),
                ("rating", "rating"),
                ("timestamp", "timestamp"),
            ),
            example="userId,movieId,rating,timestamp / 1,296,5.0,1147880044",
        ),
        RatingsFormat(
            name="lfs_item_ratings",
            description="a comma-separated GroupLens 'Learning from Sets of Items' "
            "item_ratings.csv file with the header userId,movieId,rating,tstamp",
            sep=",",
            header=True,
            columns=(
                ("user_id", "userId"),
                ("item_id", "movieId"),
                ("rating", "rating"),
                ("timestamp", "tstamp"),
            ),
            optional=frozenset({"timestamp"}),
            integer_user_ids=False,
            timestamp="datetime",
            example="userId,movieId,rating,tstamp / "
            "00cc2fb3a5a7b66ae5ff2e8cc3ae2a1f,1,4.0,2019-03-13 16:25:31",
        ),
    )
}


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def read_ratings(
    spark: SparkSession,
    path: str | os.PathLike[str],
    fmt: str,
    rating_range: Sequence[float] = DEFAULT_RATING_RANGE,
    *,
    columns: Mapping[str, str] | None = None,
    sep: str = ",",
    timestamp_unit: str = "auto",
) -> DataFrame:
    """Read interactions from a file (or a directory / glob of them) of format ``fmt``, validated.

    Args:
        spark: the active SparkSession.
        path: a file, directory or glob Spark can read (local, ``/Volumes/...``, ``s3://``...).
        fmt: one of :data:`RATINGS_FORMATS` (published rating files) or
            :data:`GENERIC_FORMATS` (``csv``: delimited text with a header line; ``parquet``).
        rating_range: inclusive ``(low, high)`` bounds every rating must lie in.
        columns: ``csv`` / ``parquet`` only: canonical name -> the source's column name, for
            the columns whose names differ. ``user_id`` and ``item_id`` are required;
            ``rating``, ``event`` and ``timestamp`` are read when the source has them (under
            the canonical or the mapped name) and must exist when mapped.
        sep: ``csv`` only: the field separator.
        timestamp_unit: ``csv`` / ``parquet`` only: one of :data:`TIMESTAMP_UNITS`.

    Returns:
        A lazy DataFrame with the canonical schema (see module docstring).

    Raises:
        RatingsFormatError: unknown format, missing/empty file, files whose headers differ,
            or rows that do not parse.
    """
    path = os.fspath(path)
    if fmt == "parquet":
        source = f"file {path!r} (format 'parquet')"
        try:
            frame = spark.read.parquet(path)
        except AnalysisException as exc:
            raise _path_error(exc, path, source, "") from exc
        return _read_typed(frame, source, columns, rating_range, timestamp_unit)
    if fmt == "csv":
        spec = _csv_format(columns, sep, _check_unit(timestamp_unit))
    else:
        if columns:
            raise RatingsFormatError(
                f"`columns:` applies to the formats {list(GENERIC_FORMATS)} and to tables; the "
                f"columns of format {fmt!r} are fixed.\nFix: remove `columns:` from the catalog "
                f"entry in {CATALOG_FILE}, or read the file with `format: csv` and `columns:`."
            )
        spec = _get_format(fmt)
    low_high = _check_range(rating_range)
    source = f"file {path!r} (format {spec.name!r})"
    fix = _format_fix(spec)

    header_line = None
    if spec.header:
        header_line = _first_line(spark, path, source, fix)
        if header_line is None:
            raise RatingsFormatError(
                f"{source}: the file is empty (not even a header line).\n"
                f"Fix: check that the download/extraction of {path!r} completed."
            )
        header_names = _split_header(header_line, spec)
        hint = _guess_hint(header_line, spec)
        positions = _match_header(header_names, spec, source, f"{fix}.{hint}")
        field_names = _header_field_names(header_line, spec)
        file_columns = {canon: field_names[i] for canon, i in positions.items()}
        labels = {canon: f"column `{header_names[i]}` ({canon})" for canon, i in positions.items()}
    else:
        field_names = [f"_c{i}" for i in range(len(spec.columns))]
        file_columns = {canon: f"_c{i}" for i, (canon, _) in enumerate(spec.columns)}
        labels = {
            canon: f"field {i + 1} `{name}` ({canon})"
            for i, (canon, name) in enumerate(spec.columns)
        }

    schema = T.StructType(
        [T.StructField(name, T.StringType()) for name in field_names]
        + [T.StructField(CORRUPT_COLUMN, T.StringType())]
    )
    try:
        raw = spark.read.csv(
            path,
            schema=schema,
            sep=spec.sep,
            header=spec.header,
            enforceSchema=True,
            mode="PERMISSIVE",
            columnNameOfCorruptRecord=CORRUPT_COLUMN,
            multiLine=False,
        )
    except AnalysisException as exc:
        raise _path_error(exc, path, source, fix) from exc
    files = _input_files(raw)
    several_files = len(files) > 1
    if spec.header and several_files:
        # Spark drops the first line of every file and reads its fields by the first file's
        # positions: a file whose header differs would be read into the wrong columns.
        _check_headers(spark, files, header_line, spec, source)

    raw_cols = {canon: F.trim(F.col(_quote(col))) for canon, col in file_columns.items()}
    unit = spec.timestamp
    if unit == "auto" and "timestamp" in raw_cols:
        unit = _detect_unit(raw.select(raw_cols["timestamp"].alias("t")), "t", labels["timestamp"])
    parsed = {
        "user_id": _parse_id(raw_cols["user_id"], spec.integer_user_ids),
        "item_id": _parse_id(raw_cols["item_id"], spec.integer_item_ids),
        "rating": (
            raw_cols["rating"].try_cast("double")
            if "rating" in raw_cols
            else F.lit(None).cast("double")
        ),
        "event": (
            F.when(raw_cols["event"] != "", raw_cols["event"])
            if "event" in raw_cols
            else F.lit(None).cast("string")
        ),
    }
    if "timestamp" in raw_cols:
        parsed["timestamp"] = _parse_timestamp_text(raw_cols["timestamp"], unit)
        # an empty timestamp is an error in a file that has the column (a short line is
        # reported as a short line, see validate_ratings)
        raw_cols["timestamp"] = F.coalesce(raw_cols["timestamp"], F.lit(""))
    else:
        parsed["timestamp"] = F.lit(None).cast("bigint")

    line = F.concat_ws(
        spec.sep, *[F.coalesce(F.col(_quote(n)), F.lit("")) for n in field_names]
    ).alias(LINE_COLUMN)
    helpers = [raw_cols[c].alias(RAW_PREFIX + c) for c in raw_cols]
    helpers += [F.col(CORRUPT_COLUMN), line]
    if several_files:
        helpers.append(F.col("_metadata.file_name").alias(FILE_COLUMN))
    frame = raw.select(*[parsed[c].alias(c) for c in CANONICAL_COLUMNS], *helpers)

    expected = {
        "user_id": "an integer id" if spec.integer_user_ids else "a non-empty id",
        "item_id": "an integer id" if spec.integer_item_ids else "a non-empty id",
        "rating": "a number",
        "timestamp": _TIMESTAMP_EXPECTED.get(unit, _TIMESTAMP_EXPECTED["s"]).format(unit=unit),
    }
    try:
        return validate_ratings(
            frame,
            source,
            low_high,
            labels=labels,
            expected=expected,
            fix=fix,
            required=_required(file_columns),
            timestamp_unit=_UNIT_NAMES.get(unit, unit),
        )
    except RatingsFormatError as exc:
        # say which format the file looks like (reads its first line: error path only)
        if header_line is None:
            header_line = _first_line(spark, path, source, fix)
        hint = "" if several_files else _guess_hint(header_line, spec)
        if not hint:
            raise
        raise RatingsFormatError(f"{exc}{hint}") from None


def read_ratings_table(
    spark: SparkSession,
    table: str,
    columns: Mapping[str, str] | None = None,
    rating_range: Sequence[float] = DEFAULT_RATING_RANGE,
    timestamp_unit: str = "auto",
) -> DataFrame:
    """Read interactions from a Spark / Unity Catalog table (e.g. ``main.recsys.item_ratings``).

    Args:
        spark: the active SparkSession.
        table: table or view name, as ``spark.read.table`` takes it.
        columns: canonical name -> table column name, for the columns whose names differ
            (``{"user_id": "userId", "item_id": "movieId", "timestamp": "tstamp"}``).
            ``rating``, ``event`` and ``timestamp`` are optional unless mapped here.
        rating_range: inclusive ``(low, high)`` bounds every rating must lie in.
        timestamp_unit: how a numeric timestamp counts time, one of :data:`TIMESTAMP_UNITS`.

    Id columns are cast to strings; the rating may be numeric or text; the timestamp may be
    a timestamp, a date, a number in ``timestamp_unit`` or text (``yyyy-MM-dd HH:mm:ss``, UTC).
    """
    source = f"table {table!r}"
    try:
        df = spark.read.table(table)
    except AnalysisException as exc:
        if _condition(exc) in {"TABLE_OR_VIEW_NOT_FOUND", "SCHEMA_NOT_FOUND"} or (
            "not found" in str(exc).lower()
        ):
            raise RatingsFormatError(
                f"{source} does not exist (or is not visible to this cluster/user).\n"
                f"Fix: check the three-part name catalog.schema.table and your permissions "
                f"(USE CATALOG, USE SCHEMA, SELECT), or set `table:` in {CATALOG_FILE}."
            ) from exc
        raise
    return _read_typed(df, source, columns, rating_range, timestamp_unit)


def _read_typed(
    df: DataFrame,
    source: str,
    columns: Mapping[str, str] | None,
    rating_range: Sequence[float],
    timestamp_unit: str,
) -> DataFrame:
    """The canonical columns of a typed source (a table or parquet files), validated."""
    low_high = _check_range(rating_range)
    unit = _check_unit(timestamp_unit)
    mapping = {c: c for c in CANONICAL_COLUMNS}
    unknown = sorted(set(columns or {}) - set(CANONICAL_COLUMNS))
    if unknown:
        raise RatingsFormatError(
            f"{source}: `columns:` has unknown key(s) {unknown}.\n"
            f"Fix: the keys of `columns:` in {CATALOG_FILE} are the canonical names "
            f"{list(CANONICAL_COLUMNS)}, the values are the source's column names."
        )
    mapping.update(columns or {})
    fix = (
        f"check the source's columns, or set `columns:` in the catalog entry in {CATALOG_FILE} "
        f"to map {list(CANONICAL_COLUMNS)} to the source's column names"
    )
    by_name = {f.name.lower(): f for f in df.schema.fields}
    missing = []
    fields: dict[str, T.StructField] = {}
    for canon in CANONICAL_COLUMNS:
        field = by_name.get(mapping[canon].lower())
        if field is not None:
            fields[canon] = field
        elif canon in REQUIRED_COLUMNS or (columns and canon in columns):
            missing.append(canon)
    if missing:
        detail = ", ".join(f"`{mapping[c]}` ({c})" for c in missing)
        raise RatingsFormatError(
            f"{source}: missing column(s) {detail}; it has the columns "
            f"{[f.name for f in df.schema.fields]}.\nFix: {fix}."
        )
    labels = {c: f"column `{fields[c].name}` ({c})" for c in fields}
    col = {c: F.col(_quote(fields[c].name)) for c in fields}
    raw_text = {c: F.trim(col[c].cast("string")) for c in fields}
    if "timestamp" in fields:
        ts_type = fields["timestamp"].dataType
        if unit == "auto" and not isinstance(ts_type, _DATETIME_TYPES):
            unit = _detect_unit(
                df.select(raw_text["timestamp"].alias("t")), "t", labels["timestamp"]
            )
        timestamp = _parse_timestamp_column(col["timestamp"], ts_type, unit)
    else:
        timestamp = F.lit(None).cast("bigint")
    parsed = {
        "user_id": _parse_id(raw_text["user_id"], integer=False),
        "item_id": _parse_id(raw_text["item_id"], integer=False),
        "rating": (
            F.lit(None).cast("double")
            if "rating" not in fields
            else col["rating"].cast("double")
            if isinstance(fields["rating"].dataType, T.NumericType)
            else raw_text["rating"].try_cast("double")
        ),
        "event": (
            F.when(raw_text["event"] != "", raw_text["event"])
            if "event" in fields
            else F.lit(None).cast("string")
        ),
        "timestamp": timestamp,
    }
    frame = df.select(
        *[parsed[c].alias(c) for c in CANONICAL_COLUMNS],
        *[raw_text[c].alias(RAW_PREFIX + c) for c in fields],
    )
    expected = {
        "user_id": "a non-empty id",
        "item_id": "a non-empty id",
        "rating": "a number",
        "timestamp": f"a timestamp (timestamp, date, a number in {_UNIT_NAMES.get(unit, unit)} "
        "or 'yyyy-MM-dd HH:mm:ss')",
    }
    return validate_ratings(
        frame,
        source,
        low_high,
        labels=labels,
        expected=expected,
        fix=fix,
        required=_required(fields),
        timestamp_unit=_UNIT_NAMES.get(unit, unit),
    )


def validate_ratings(
    df: DataFrame,
    source: str,
    rating_range: Sequence[float] = DEFAULT_RATING_RANGE,
    *,
    labels: Mapping[str, str] | None = None,
    expected: Mapping[str, str] | None = None,
    fix: str | None = None,
    required: Sequence[str] = (*REQUIRED_COLUMNS, "rating"),
    timestamp_unit: str = "seconds",
) -> DataFrame:
    """Check interactions in ONE aggregating Spark query; raise :class:`RatingsFormatError` if bad.

    ``df`` must have the canonical columns, already parsed (null where a value did not parse).
    It may also carry the helper columns a reader adds: ``_raw_<column>`` (the trimmed text
    before parsing; a non-empty raw value whose parsed value is null did not parse),
    ``_corrupt_record`` (Spark CSV: the line, when it has the wrong number of fields),
    ``_line`` (the line, for examples) and ``_file`` (the file name, for examples).

    Checks: there are rows; every line has the right number of fields; the ``required``
    columns are present and non-empty; values parse; the rating lies in ``rating_range``
    (inclusive); the timestamp parses and is possible (not negative, not after today: a
    timestamp in milliseconds read as seconds is thousands of years ahead).

    Args:
        df: the parsed ratings.
        source: what was read, for messages (e.g. ``"file 'data/u.data'"``).
        rating_range: inclusive ``(low, high)``.
        labels: canonical column -> how to name it in messages (e.g. ``"column `movieId`"``).
        expected: canonical column -> what a value should be (e.g. ``"an integer id"``).
        fix: how to fix a source that does not match, appended to the message.
        required: canonical columns that must be non-empty on every row.
        timestamp_unit: what the source's timestamps were read as, for the message on
            impossible values.

    Returns:
        ``df`` restricted to the canonical columns and schema (still lazy).
    """
    low, high = _check_range(rating_range)
    label_given = set(labels or CANONICAL_COLUMNS)
    labels = {c: (labels or {}).get(c, f"column `{c}`") for c in CANONICAL_COLUMNS}
    expected = {**_DEFAULT_EXPECTED, **(expected or {})}
    fix = fix or "check the data source"
    columns = set(df.columns)
    missing = [c for c in CANONICAL_COLUMNS if c not in columns]
    if missing:
        raise RatingsFormatError(
            f"{source}: missing column(s) {missing}; it has {sorted(columns)}.\nFix: {fix}."
        )

    has_corrupt = CORRUPT_COLUMN in columns
    whole_line = F.col(CORRUPT_COLUMN).isNull() if has_corrupt else F.lit(True)
    line_text = (
        F.col(LINE_COLUMN)
        if LINE_COLUMN in columns
        else F.concat_ws(
            " ",
            *[
                F.concat(F.lit(f"{c}="), F.coalesce(F.col(c).cast("string"), F.lit("null")))
                for c in CANONICAL_COLUMNS
            ],
        )
    )

    def example(value: Column) -> Column:
        value = F.regexp_replace(value, "\t", "\\\\t")  # show tabs as \t
        value = F.concat(F.lit("'"), value, F.lit("'"))
        if FILE_COLUMN in columns:
            value = F.concat(F.col(FILE_COLUMN), F.lit(": "), value)
        return value

    # (column label or None, problem, condition, example value, fix)
    checks: list[tuple[str | None, str, Column, Column, str]] = []
    if has_corrupt:
        checks.append(
            (
                None,
                "line(s) have too few or too many fields (expected: "
                f"{', '.join(labels[c] for c in CANONICAL_COLUMNS if c in label_given)})",
                F.col(CORRUPT_COLUMN).isNotNull(),
                example(F.col(CORRUPT_COLUMN)),
                "check the separator and that no line is cut short or has extra fields",
            )
        )
    for canon in required:
        raw_name = RAW_PREFIX + canon
        raw = F.col(raw_name) if raw_name in columns else F.col(canon).cast("string")
        empty = raw.isNull() | (F.trim(raw) == "")
        checks.append(
            (
                labels[canon],
                "is empty or missing",
                whole_line & empty,
                example(line_text),
                "every interaction needs "
                + ", ".join(f"a {c.removesuffix('_id')}" for c in required),
            )
        )
        if raw_name in columns:
            checks.append(
                (
                    labels[canon],
                    f"is not {expected[canon]}",
                    whole_line & ~empty & F.col(canon).isNull(),
                    example(raw),
                    "",
                )
            )
    rating = F.col("rating")
    rating_text = (
        F.col(RAW_PREFIX + "rating") if RAW_PREFIX + "rating" in columns else rating.cast("string")
    )
    checks.append(
        (
            labels["rating"],
            f"is outside rating_range [{low:g}, {high:g}]",
            whole_line & rating.isNotNull() & ~((rating >= low) & (rating <= high)),
            example(rating_text),
            "if this data uses another rating scale, set `rating_range: [low, high]` in the "
            f"catalog entry in {CATALOG_FILE}",
        )
    )
    raw_ts = RAW_PREFIX + "timestamp"
    if raw_ts in columns:
        checks.append(
            (
                labels["timestamp"],
                f"is not {expected['timestamp']}",
                whole_line & F.col(raw_ts).isNotNull() & F.col("timestamp").isNull(),
                example(F.col(raw_ts)),
                "",
            )
        )

    now = int(time.time()) + FUTURE_SLACK_S
    ts = F.col("timestamp")
    checks.append(
        (
            labels["timestamp"],
            f"is impossible when read as {timestamp_unit} (negative, or after today)",
            whole_line & ts.isNotNull() & ((ts < 0) | (ts > now)),
            example(F.col(raw_ts) if raw_ts in columns else ts.cast("string")),
            "declare the unit the timestamps count in: `timestamp_unit:` "
            f"{', '.join(TIMESTAMP_UNITS)} in the catalog entry in {CATALOG_FILE}",
        )
    )

    aggs = [F.count(F.lit(1)).alias("rows")]
    for i, (_, _, cond, ex, _) in enumerate(checks):
        bad = F.when(cond, ex)
        aggs += [
            F.count_if(cond).alias(f"n{i}"),
            F.first(bad, ignorenulls=True).alias(f"a{i}"),
            F.min(bad).alias(f"b{i}"),
            F.max(bad).alias(f"c{i}"),
        ]
    result = df.agg(*aggs).first()  # the one pass over the data
    if result is None:  # pragma: no cover - a global aggregate always has one row
        raise RatingsFormatError(f"{source}: could not be read")

    head = source
    rows = result["rows"]
    if rows == 0:
        raise RatingsFormatError(
            f"{head}: no interactions (the file, files or table are empty, or hold only a "
            f"header line).\nFix: check that the download/extraction or the table's load "
            "completed."
        )
    problems = []
    for i, (label, problem, _, _, hint) in enumerate(checks):
        count = result[f"n{i}"]
        if not count:
            continue
        examples = list(dict.fromkeys(x for x in (result[f"{k}{i}"] for k in "abc") if x))
        text = f"  - {label + ' ' if label else ''}{problem}: {count} of {rows} lines"
        if examples:
            text += f", e.g. {', '.join(examples[:MAX_EXAMPLES])}"
        if hint:
            text += f" ({hint})"
        problems.append(text)
    if problems:
        raise RatingsFormatError(
            f"{head}: {len(problems)} problem(s) in the interactions:\n"
            + "\n".join(problems)
            + f"\nFix: {fix}."
        )
    return df.select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in CANONICAL_SCHEMA.fields]
    )


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

_DEFAULT_EXPECTED = {
    "user_id": "a non-empty id",
    "item_id": "a non-empty id",
    "rating": "a number",
    "event": "an event type",
    "timestamp": "a timestamp",
}
_UNIT_NAMES = {
    "epoch": "seconds",
    "epoch_float": "seconds",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "datetime": "datetime text (integers as seconds)",
}
_TIMESTAMP_EXPECTED = {
    "epoch": "an integer number of seconds since the epoch",
    "epoch_float": "a number of seconds since the epoch",
    "datetime": "a datetime 'yyyy-MM-dd HH:mm:ss' (UTC) or integer epoch seconds",
    **{
        unit: f"a number of {name} since the epoch (`timestamp_unit: {unit}`)"
        for unit, name in _UNIT_NAMES.items()
        if unit in _PER_SECOND
    },
}
_DATETIME_TYPES = (T.TimestampType, T.TimestampNTZType, T.DateType)


def _check_unit(unit: str) -> str:
    if unit not in TIMESTAMP_UNITS:
        raise RatingsFormatError(
            f"Unknown timestamp unit {unit!r}.\nFix: set `timestamp_unit:` in the catalog entry "
            f"in {CATALOG_FILE} to one of {', '.join(TIMESTAMP_UNITS)}."
        )
    return unit


def _csv_format(columns: Mapping[str, str] | None, sep: str, unit: str) -> RatingsFormat:
    """A delimited text file with a header line, its columns named by ``columns``."""
    unknown = sorted(set(columns or {}) - set(CANONICAL_COLUMNS))
    if unknown:
        raise RatingsFormatError(
            f"`columns:` has unknown key(s) {unknown}.\nFix: the keys of `columns:` in "
            f"{CATALOG_FILE} are the canonical names {list(CANONICAL_COLUMNS)}, the values "
            "the header's column names."
        )
    mapping = {c: c for c in CANONICAL_COLUMNS} | dict(columns or {})
    return RatingsFormat(
        name="csv",
        description=f"a delimited text file (sep {sep!r}) with a header line naming "
        f"{mapping['user_id']!r} and {mapping['item_id']!r}",
        sep=sep,
        header=True,
        columns=tuple(mapping.items()),
        optional=frozenset(c for c in ("rating", "event", "timestamp") if c not in (columns or {})),
        integer_user_ids=False,
        integer_item_ids=False,
        timestamp=unit,
        example=sep.join(mapping[c] for c in CANONICAL_COLUMNS),
    )


def _required(present: Mapping[str, object]) -> tuple[str, ...]:
    """User and item always; a rating or event column the source has must be complete too."""
    return (*REQUIRED_COLUMNS, *(c for c in ("rating", "event") if c in present))


def _detect_unit(frame: DataFrame, column: str, label: str) -> str:
    """The unit of a timestamp column, from its largest absolute value (one Spark query):
    below 1e11 seconds (the year 5138), below 1e14 milliseconds, below 1e17 microseconds,
    else nanoseconds; values that are not numbers: datetime text."""
    number = F.col(column).cast("string").try_cast("double")
    row = frame.agg(
        F.max(F.abs(number)).alias("largest"),
        F.count_if(F.col(column).isNotNull() & (F.col(column).cast("string") != "")).alias("n"),
        F.count(number).alias("numbers"),
    ).first()
    if not row["n"] or row["numbers"] < row["n"]:
        unit = "datetime"
    else:
        largest = row["largest"]
        unit = next(
            (u for u, bound in (("s", 1e11), ("ms", 1e14), ("us", 1e17)) if largest < bound), "ns"
        )
    logger.info(
        "%s: timestamps read as %s (detected%s); declare `timestamp_unit: %s` in the catalog "
        "entry to fix it",
        label,
        _UNIT_NAMES[unit],
        f" from the largest value {row['largest']:.0f}" if unit != "datetime" else "",
        unit,
    )
    return unit


def _check_headers(
    spark: SparkSession, files: Sequence[str], first: str | None, spec: RatingsFormat, source: str
) -> None:
    """Every file's header names the same columns in the same order as the first file's."""
    expected = _split_header(first or "", spec)
    differing = []
    for path, line in zip(files, _first_lines(spark, files), strict=True):
        if line is not None and _split_header(line, spec) != expected:
            differing.append(f"{path.rsplit('/', 1)[-1]}: {_split_header(line, spec)}")
    if differing:
        raise RatingsFormatError(
            f"{source}: {len(differing)} of {len(files)} files have another header than "
            f"{expected}: " + "; ".join(differing[:MAX_EXAMPLES]) + ".\nFix: every file of "
            "a folder or glob must have the same columns in the same order (Spark reads each "
            "line by position); rewrite those files, or read them as separate catalog entries."
        )


def _first_lines(spark: SparkSession, files: Sequence[str]) -> list[str | None]:
    """The first line of each file: through fsspec (in threads), else one Spark read each."""
    from concurrent.futures import ThreadPoolExecutor

    def first(path: str) -> str | None:
        try:
            import fsspec

            with fsspec.open(path, "rt", compression="infer", encoding="utf-8") as handle:
                line = handle.readline()
            return line.rstrip("\r\n") if line else None
        except Exception:  # a scheme fsspec cannot open here (dbfs:/): ask Spark
            row = spark.read.text(path).first()
            return None if row is None else row[0]

    with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
        return list(pool.map(first, files))


def _get_format(fmt: str) -> RatingsFormat:
    try:
        return RATINGS_FORMATS[fmt]
    except (KeyError, TypeError):
        known = "\n".join(f"  - {f.name}: {f.description}" for f in RATINGS_FORMATS.values())
        raise RatingsFormatError(
            f"Unknown ratings format {fmt!r}. Known formats:\n{known}\n"
            f"Fix: set `format:` in {CATALOG_FILE} to one of "
            f"{', '.join(RATINGS_FORMATS)}."
        ) from None


def _check_range(rating_range: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in rating_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"rating_range must be [low, high] (two numbers), got {rating_range!r}"
        ) from None
    if low > high:
        raise ValueError(f"rating_range must be [low, high] with low <= high, got {rating_range!r}")
    return low, high


def _format_fix(spec: RatingsFormat) -> str:
    return (
        f"check that the file is {spec.description} (first lines like: {spec.example}), "
        f"or set `format:` in {CATALOG_FILE} to the format of this file, one of "
        f"{', '.join(RATINGS_FORMATS)} (see RATINGS_FORMATS in {__name__})"
    )


def _guess_format(line: str | None) -> str | None:
    """The format whose first line looks like ``line`` (a cheap sniff, for error messages)."""
    if not line:
        return None
    line = line.lstrip("\ufeff").strip()
    if len(line.split("::")) == 4:
        return "ml1m_dat"
    tabs = [f.strip() for f in line.split("\t")]
    if {"user_id", "item_id"} <= {f.split(":", 1)[0] for f in tabs} and ":" in tabs[0]:
        return "recbole_inter"
    if len(tabs) == 4 and all(f.replace(".", "", 1).isdigit() for f in tabs):
        return "ml100k_udata"
    names = [f.strip().strip('"').lower() for f in line.split(",")]
    if names[:3] == ["userid", "movieid", "rating"]:
        return "lfs_item_ratings" if "tstamp" in names else "ml_csv"
    return None


def _guess_hint(line: str | None, spec: RatingsFormat) -> str:
    guess = _guess_format(line)
    if guess is None or guess == spec.name:
        return ""
    return (
        f"\nThe file's first line ({line.strip()[:80]!r}) looks like format {guess!r} "
        f"({RATINGS_FORMATS[guess].description}): try `format: {guess}`."
    )


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _condition(exc: AnalysisException) -> str | None:
    for getter in ("getCondition", "getErrorClass"):
        method = getattr(exc, getter, None)
        if method is not None:
            try:
                value = method()
            except Exception:  # pragma: no cover - depends on the PySpark flavour
                continue
            if value:
                return str(value)
    return None


def _path_error(exc: AnalysisException, path: str, source: str, fix: str) -> Exception:
    if _condition(exc) == "PATH_NOT_FOUND" or "does not exist" in str(exc).lower():
        return RatingsFormatError(
            f"{source}: no such file, directory or glob match.\n"
            f"Fix: download/extract the ratings to {path!r} (relative paths are relative to "
            f"the directory Kedro runs in), or set `filepath:` in {CATALOG_FILE} to where the "
            f"file is."
        )
    return exc


def _first_line(spark: SparkSession, path: str, source: str, fix: str) -> str | None:
    try:
        row = spark.read.text(path).first()
    except AnalysisException as exc:
        raise _path_error(exc, path, source, fix) from exc
    return None if row is None else row[0]


def _split_header(line: str, spec: RatingsFormat) -> list[str]:
    names = []
    for raw in line.lstrip("\ufeff").split(spec.sep):
        name = raw.strip().strip('"').strip()
        if spec.strip_header_types:
            name = name.split(":", 1)[0]
        names.append(name)
    return names


def _header_field_names(line: str, spec: RatingsFormat) -> list[str]:
    """Schema field names for a header file: the header as written, so Spark sees them match."""
    names = [n.strip('"') for n in line.lstrip("\ufeff").split(spec.sep)]
    lowered = [n.lower() for n in names]
    if any(not n or n == CORRUPT_COLUMN for n in names) or len(set(lowered)) != len(lowered):
        return [f"_c{i}" for i in range(len(names))]
    return names


def _match_header(header: list[str], spec: RatingsFormat, source: str, fix: str) -> dict[str, int]:
    """canonical column -> its position in the header line (case-insensitive match).

    ``fix`` is the complete fix text (with its final full stop).
    """
    lowered = [h.lower() for h in header]
    found: dict[str, int] = {}
    missing = []
    for canon, name in spec.columns:
        if name.lower() in lowered:
            found[canon] = lowered.index(name.lower())
        elif canon not in spec.optional:
            missing.append((canon, name))
    if missing:
        detail = ", ".join(f"`{name}` ({canon})" for canon, name in missing)
        raise RatingsFormatError(
            f"{source}: missing column(s) {detail}: the header line has the columns "
            f"{header[:10]}.\nFix: {fix}"
        )
    return found


def _input_files(df: DataFrame) -> list[str]:
    try:
        return df.inputFiles()
    except Exception:  # pragma: no cover - e.g. a source that cannot list its files
        return []


def _parse_id(raw: Column, integer: bool) -> Column:
    if integer:
        return F.when(raw.rlike(_INTEGER_ID), raw)
    return F.when(raw != "", raw)


def _parse_timestamp_text(raw: Column, kind: str) -> Column:
    if kind == "epoch":
        return F.when(raw.rlike(_INTEGER_TS), raw.try_cast("bigint"))
    if kind in ("epoch_float", *_PER_SECOND):
        number = raw.try_cast("double")
        finite = number.isNotNull() & ~F.isnan(number) & (F.abs(number) < 1e21)
        seconds = number / F.lit(_PER_SECOND.get(kind, 1.0))
        return F.when(finite, F.floor(seconds).cast("bigint"))
    if kind == "datetime":
        utc = F.concat(raw, F.lit("Z")).try_cast("timestamp")
        return F.when(raw.rlike(_INTEGER_TS), raw.try_cast("bigint")).otherwise(F.unix_seconds(utc))
    raise ValueError(f"unknown timestamp kind {kind!r}")


def _parse_timestamp_column(col: Column, data_type: T.DataType, unit: str = "s") -> Column:
    if isinstance(data_type, T.TimestampType):
        return F.unix_seconds(col)
    if isinstance(data_type, T.TimestampNTZType):  # wall-clock time, read as UTC
        return _parse_timestamp_text(col.cast("string"), "datetime")
    if isinstance(data_type, T.DateType):
        return F.unix_seconds(
            F.concat(col.cast("string"), F.lit(" 00:00:00Z")).try_cast("timestamp")
        )
    if isinstance(data_type, T.IntegralType) and unit == "s":
        return col.cast("bigint")
    if isinstance(data_type, T.NumericType):
        return _parse_timestamp_text(col.cast("string"), unit if unit in _PER_SECOND else "s")
    text = F.trim(col.cast("string"))
    return _parse_timestamp_text(text, unit if unit in _PER_SECOND else "datetime")
