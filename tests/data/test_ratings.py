"""recsys_kedro.data.ratings: each published layout parses; each malformed file fails helpfully."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recsys_kedro.data.ratings import (
    RATINGS_FORMATS,
    RatingsFormatError,
    read_ratings,
    validate_ratings,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ratings"
CANONICAL = "struct<user_id:string,item_id:string,rating:double,event:string,timestamp:bigint>"


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


# format, fixture, rows, distinct users, distinct items, rows read off the fixture by eye
FORMAT_CASES = [
    (
        "recbole_inter",
        "ml-100k.inter",
        23,
        20,
        21,
        [("196", "242", 3.0, 881250949), ("22", "242", 5.0, 878887300)],
    ),
    (
        "ml100k_udata",
        "u.data",
        23,
        20,
        21,
        [("186", "302", 3.0, 891717742), ("186", "302", 2.0, 891718000)],
    ),
    (
        "ml1m_dat",
        "ratings.dat",
        20,
        3,
        17,
        [("1", "1193", 5.0, 978300760), ("3", "3408", 5.0, 978297068)],
    ),
    (
        "ml_csv",
        "ratings.csv",
        20,
        4,
        17,
        [("2", "1704", 4.5, 1445715228), ("3", "31", 0.5, 1306463578)],
    ),
    (
        "lfs_item_ratings",
        "item_ratings.csv",
        18,
        4,
        11,
        [
            ("282f25d625543eea37ac921ee572f21a", "1", 4.0, utc(2019, 3, 13, 16, 25, 31)),
            ("03bff3cf60d8876afa44f59ad1f15f81", "296", 0.5, utc(2019, 4, 23, 0, 1, 10)),
        ],
    ),
]


def _naive_parse(path: Path, fmt: str) -> list[tuple]:
    """An independent reading of a fixture with plain Python, to compare Spark's result with."""
    spec = RATINGS_FORMATS[fmt]
    lines = [line for line in path.read_text().splitlines() if line]
    if spec.header:
        lines = lines[1:]
    rows = []
    for line in lines:
        user, item, rating, stamp = line.split(spec.sep)
        if fmt == "lfs_item_ratings":
            seconds = int(datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp())
        else:
            seconds = int(float(stamp))
        rows.append((user, item, float(rating), seconds))
    return rows


@pytest.mark.parametrize(("fmt", "fixture", "n_rows", "n_users", "n_items", "spot"), FORMAT_CASES)
def test_each_published_format_parses_to_the_canonical_schema(
    spark, fmt, fixture, n_rows, n_users, n_items, spot
):
    df = read_ratings(spark, str(FIXTURES / fixture), fmt)

    assert df.schema.simpleString() == CANONICAL
    rows = [tuple(r) for r in df.collect()]  # a fixture of ~20 rows
    assert {r[3] for r in rows} == {None}  # no event column in a ratings file
    rows = [r[:3] + r[4:] for r in rows]
    assert len(rows) == n_rows
    assert len({r[0] for r in rows}) == n_users
    assert len({r[1] for r in rows}) == n_items
    for row in spot:
        assert row in rows
    assert sorted(rows) == sorted(_naive_parse(FIXTURES / fixture, fmt))


def test_datetime_timestamps_are_utc_whatever_the_session_time_zone(spark):
    before = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        rows = read_ratings(spark, str(FIXTURES / "item_ratings.csv"), "lfs_item_ratings")
        first = rows.filter("item_id = '1' AND rating = 4.0").collect()
    finally:
        spark.conf.set("spark.sql.session.timeZone", before)
    assert [r.timestamp for r in first] == [utc(2019, 3, 13, 16, 25, 31)]


def test_files_without_a_timestamp_column_give_null_timestamps(spark, tmp_path):
    lfs = tmp_path / "item_ratings.csv"
    lfs.write_text("userId,movieId,rating\nabc123,10,3.5\nabc123,11,4.0\nffff,10,0.5\n")
    inter = tmp_path / "implicit.inter"
    inter.write_text("user_id:token\titem_id:token\trating:float\nu1\ti1\t1\nu2\ti1\t2\n")

    lfs_rows = read_ratings(spark, str(lfs), "lfs_item_ratings").drop("event").collect()
    inter_rows = read_ratings(spark, str(inter), "recbole_inter").drop("event").collect()

    assert sorted(tuple(r) for r in lfs_rows) == [
        ("abc123", "10", 3.5, None),
        ("abc123", "11", 4.0, None),
        ("ffff", "10", 0.5, None),
    ]
    assert sorted(tuple(r) for r in inter_rows) == [
        ("u1", "i1", 1.0, None),
        ("u2", "i1", 2.0, None),
    ]


def test_a_directory_or_glob_of_files_is_read_whole(spark, tmp_path):
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    shutil.copy(FIXTURES / "ratings.csv", csv_dir / "part-0.csv")
    shutil.copy(FIXTURES / "ratings.csv", csv_dir / "part-1.csv")
    for name in ("a.data", "b.data"):
        shutil.copy(FIXTURES / "u.data", tmp_path / name)

    # the header line of every file is skipped, not read as a rating
    assert read_ratings(spark, str(csv_dir), "ml_csv").count() == 40
    assert read_ratings(spark, str(tmp_path / "*.data"), "ml100k_udata").count() == 46


def test_rating_range_is_configurable_and_inclusive(spark, tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\t1\t1\t100\n1\t2\t10\t100\n")

    rows = read_ratings(spark, str(path), "ml100k_udata", rating_range=(1, 10)).collect()

    assert sorted(r.rating for r in rows) == [1.0, 10.0]
    with pytest.raises(RatingsFormatError, match=r"outside rating_range \[0\.5, 5\]"):
        read_ratings(spark, str(path), "ml100k_udata")


def test_validation_is_one_aggregating_query(spark):
    """One query (AQE may run its shuffle stage as a job of its own), not one per check."""
    sc = spark.sparkContext
    sc.setJobGroup("ratings-validation-jobs", "count the jobs of one validation")
    try:
        read_ratings(spark, str(FIXTURES / "u.data"), "ml100k_udata")
        jobs = sc.statusTracker().getJobIdsForGroup("ratings-validation-jobs")
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    assert 1 <= len(jobs) <= 2


# ----------------------------------------------------------------------------------------------
# malformed files: the error names the file, the column, a count, examples and the fix
# ----------------------------------------------------------------------------------------------

GOOD_UDATA = "1\t10\t3\t881250949\n2\t20\t4\t881250950\n"
GOOD_CSV = "1,10,3.0,1147880044\n2,20,4.5,1147880045\n"
LFS_HEADER = "userId,movieId,rating,tstamp\n"
GOOD_LFS = "aa11,10,3.0,2019-03-13 16:25:31\nbb22,20,4.5,2019-03-13 16:25:32\n"


def test_every_problem_of_a_file_is_reported_at_once(spark, tmp_path):
    """One validation pass finds each kind of bad line, each named by its column."""
    path = tmp_path / "u.data"
    path.write_text(
        GOOD_UDATA
        + "3\t30\t\t881250951\n"  # empty rating
        + "\t30\t2\t881250951\n"  # empty user
        + "3\tabc\t2\t881250951\n3\t4.5\t2\t881250951\n"  # items not integers
        + "3\t30\t2\n"  # too few fields
        + "3\t30\tgood\t881250951\n"  # rating not a number
        + "3\t30\t0\t881250951\n3\t31\t5.5\t881250951\n"  # ratings out of range
        + "3\t30\t2\t1998-01-01\n"  # timestamp not epoch seconds
    )

    with pytest.raises(RatingsFormatError) as info:
        read_ratings(spark, str(path), "ml100k_udata")

    lines = str(info.value).splitlines()
    assert str(path) in lines[0]
    assert "7 problem(s)" in lines[0]

    def problem(*parts: str) -> None:
        assert any(all(p in line for p in parts) for line in lines), (parts, lines)

    problem("field 3 `rating` (rating) is empty or missing", "1 of 11 lines", "'3\\t30\\t\\t8812")
    problem("field 1 `user id` (user_id) is empty or missing", "1 of 11 lines")
    problem("field 2 `item id` (item_id) is not an integer id", "2 of 11", "'abc'", "'4.5'")
    problem("too few or too many fields", "field 4 `timestamp`", "1 of 11", "'3\\t30\\t2'")
    problem("field 3 `rating` (rating) is not a number", "1 of 11", "'good'")
    problem("field 3 `rating`", "outside rating_range [0.5, 5]", "2 of 11", "'0'", "'5.5'")
    problem("field 4 `timestamp`", "not an integer number of seconds", "'1998-01-01'")
    assert lines[-1].startswith("Fix: check that the file is a tab-separated GroupLens ml-100k")
    assert "`format:` in conf/base/catalog.yml" in lines[-1]


MALFORMED = [
    pytest.param(
        "ml1m_dat",
        "ratings.dat",
        GOOD_UDATA,
        ["too few or too many fields", "field 2 `MovieID`", "try `format: ml100k_udata`"],
        id="ml1m-given-a-tab-separated-file",
    ),
    pytest.param(
        "ml1m_dat",
        "ratings.dat",
        "1::1193::5::978300760\n1::661::x::978302109\n",
        ["field 3 `Rating` (rating) is not a number", "'x'"],
        id="ml1m-bad-rating",
    ),
    pytest.param(
        "ml_csv",
        "ratings.csv",
        "userId,movieId,timestamp\n1,10,1147880044\n",
        ["missing column(s) `rating`", "['userId', 'movieId', 'timestamp']"],
        id="csv-missing-column",
    ),
    pytest.param(
        "ml_csv",
        "ratings.csv",
        "userId,movieId,rating,timestamp\n" + GOOD_CSV + "u7,10,3.0,1147880044\n",
        ["column `userId` (user_id) is not an integer id", "'u7'"],
        id="csv-user-not-integer",
    ),
    pytest.param(
        "ml_csv",
        "ratings.csv",
        "userId,movieId,rating,timestamp\n" + GOOD_CSV + "3,30,4.0,\n",
        ["column `timestamp` (timestamp) is not an integer number of seconds", "1 of 3"],
        id="csv-empty-timestamp",
    ),
    pytest.param(
        "lfs_item_ratings",
        "item_ratings.csv",
        LFS_HEADER + GOOD_LFS + "cc33,30,4.0,13/03/2019 16:25\n",
        ["column `tstamp` (timestamp) is not a datetime", "'13/03/2019 16:25'"],
        id="lfs-bad-tstamp",
    ),
    pytest.param(
        "lfs_item_ratings",
        "item_ratings.csv",
        LFS_HEADER + GOOD_LFS + "cc33,tt0111161,4.0,2019-03-13 16:25:31\n",
        ["column `movieId` (item_id) is not an integer id", "'tt0111161'"],
        id="lfs-item-not-integer",
    ),
    pytest.param(
        "lfs_item_ratings",
        "item_ratings.csv",
        LFS_HEADER + GOOD_LFS + ",30,4.0,2019-03-13 16:25:31\n",
        ["column `userId` (user_id) is empty or missing"],
        id="lfs-empty-user",
    ),
    pytest.param(
        "recbole_inter",
        "ml-100k.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n186\t \t3\t891717742\n",
        ["column `item_id` (item_id) is empty or missing"],
        id="recbole-empty-token",
    ),
    pytest.param(
        "recbole_inter",
        "ml-100k.inter",
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
        ["missing column(s) `user_id` (user_id)", "try `format: ml100k_udata`"],
        id="recbole-without-header",
    ),
    pytest.param(
        "ml100k_udata",
        "u.data",
        "",
        ["no interactions"],
        id="udata-empty-file",
    ),
    pytest.param(
        "ml_csv",
        "ratings.csv",
        "",
        ["the file is empty"],
        id="csv-empty-file",
    ),
    pytest.param(
        "ml_csv",
        "ratings.csv",
        "userId,movieId,rating,timestamp\n",
        ["no interactions"],
        id="csv-header-only",
    ),
]


@pytest.mark.parametrize(("fmt", "name", "content", "expected"), MALFORMED)
def test_malformed_files_raise_a_helpful_error(spark, tmp_path, fmt, name, content, expected):
    path = tmp_path / f"bad-{name}"
    path.write_text(content)

    with pytest.raises(RatingsFormatError) as info:
        read_ratings(spark, str(path), fmt)

    message = str(info.value)
    assert str(path) in message
    for text in expected:
        assert text in message
    assert "Fix:" in message


def test_examples_are_capped_at_three_and_the_count_is_exact(spark, tmp_path):
    path = tmp_path / "u.data"
    path.write_text(GOOD_UDATA + "".join(f"9\titem{i}\t3\t881250949\n" for i in range(6)))

    with pytest.raises(RatingsFormatError) as info:
        read_ratings(spark, str(path), "ml100k_udata")

    line = next(x for x in str(info.value).splitlines() if "`item id`" in x)
    assert "6 of 8 lines" in line
    assert 1 <= line.count("'item") <= 3


def test_a_bad_file_in_a_directory_is_named_in_the_examples(spark, tmp_path):
    (tmp_path / "good.data").write_text(GOOD_UDATA)
    (tmp_path / "broken.data").write_text("7\t70\tseven\t881250949\n")

    with pytest.raises(RatingsFormatError, match=r"broken\.data: 'seven'"):
        read_ratings(spark, str(tmp_path), "ml100k_udata")


def test_missing_file_names_the_path_and_the_catalog_key(spark, tmp_path):
    path = tmp_path / "nowhere" / "u.data"
    for fmt in ("ml100k_udata", "ml_csv"):
        with pytest.raises(RatingsFormatError) as info:
            read_ratings(spark, str(path), fmt)
        assert str(path) in str(info.value)
        assert "no such file" in str(info.value)
        assert "`filepath:`" in str(info.value)


def test_unknown_format_lists_the_known_ones(spark):
    with pytest.raises(RatingsFormatError) as info:
        read_ratings(spark, str(FIXTURES / "u.data"), "movielens")
    for name in ("recbole_inter", "ml100k_udata", "ml1m_dat", "ml_csv", "lfs_item_ratings"):
        assert name in str(info.value)
    assert "'movielens'" in str(info.value)


def test_bad_rating_range_is_rejected_before_reading(spark):
    with pytest.raises(ValueError, match="rating_range"):
        read_ratings(spark, "/nonexistent/u.data", "ml100k_udata", rating_range=(5, 1))


def test_validate_ratings_checks_an_already_parsed_frame(spark):
    columns = "AS t(user_id, item_id, rating, event, timestamp)"
    good = spark.sql(
        f"SELECT * FROM VALUES ('u1', 'i1', 4.0D, NULL, 1L), ('u2', 'i1', 0.5D, NULL, NULL) "
        f"{columns}"
    )
    bad = spark.sql(
        f"SELECT * FROM VALUES ('u1', 'i1', 4.0D, NULL, 1L), ('u2', NULL, 9.0D, NULL, 2L) {columns}"
    )

    assert validate_ratings(good, "table 'memory'", (0.5, 5.0)).count() == 2
    with pytest.raises(RatingsFormatError) as info:
        validate_ratings(bad, "table 'memory'", (0.5, 5.0))
    message = str(info.value)
    assert "table 'memory'" in message
    assert "column `item_id` is empty or missing" in message
    assert "column `rating` is outside rating_range" in message


# ------------------------------------------------------------- event logs (csv, parquet)

MS_2024 = 1_709_294_400_000  # 2024-03-01 12:00:00 UTC in milliseconds


def _event_log(path: Path, header: str = "visitor,sku,event_type,ts", sep: str = ",") -> Path:
    rows = [
        ("v1", "sku-9", "view", MS_2024),
        ("v1", "sku-9", "purchase", MS_2024 + 61_500),
        ("v2", "sku-1", "cart", MS_2024 + 2_000),
    ]
    order = header.split(sep)
    by_name = {"visitor": 0, "sku": 1, "event_type": 2, "ts": 3}
    lines = [header] + [sep.join(str(r[by_name[c]]) for c in order) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


EVENT_COLUMNS = {"user_id": "visitor", "item_id": "sku", "event": "event_type", "timestamp": "ts"}
EVENT_ROWS = [
    ("v1", "sku-9", None, "purchase", MS_2024 // 1000 + 61),
    ("v1", "sku-9", None, "view", MS_2024 // 1000),
    ("v2", "sku-1", None, "cart", MS_2024 // 1000 + 2),
]


def test_an_event_log_with_string_ids_and_millisecond_timestamps(spark, tmp_path):
    path = _event_log(tmp_path / "events.tsv", header="ts\tevent_type\tsku\tvisitor", sep="\t")

    df = read_ratings(spark, str(path), "csv", columns=EVENT_COLUMNS, sep="\t", timestamp_unit="ms")

    assert df.schema.simpleString() == CANONICAL
    assert sorted(tuple(r) for r in df.collect()) == EVENT_ROWS


def test_the_timestamp_unit_is_detected_and_logged(spark, tmp_path, caplog):
    path = _event_log(tmp_path / "events.csv")

    with caplog.at_level("INFO", logger="recsys_kedro.data.ratings"):
        df = read_ratings(spark, str(path), "csv", columns=EVENT_COLUMNS)

    assert sorted(tuple(r) for r in df.collect()) == EVENT_ROWS
    assert "column `ts` (timestamp): timestamps read as milliseconds (detected" in caplog.text
    assert "timestamp_unit: ms" in caplog.text


def test_milliseconds_declared_as_seconds_are_impossible_and_named(spark, tmp_path):
    path = _event_log(tmp_path / "events.csv")

    with pytest.raises(RatingsFormatError) as info:
        read_ratings(spark, str(path), "csv", columns=EVENT_COLUMNS, timestamp_unit="s")

    message = str(info.value)
    assert "column `ts` (timestamp) is impossible when read as seconds" in message
    assert "3 of 3 lines" in message and str(MS_2024) in message
    assert "`timestamp_unit:` s, ms, us, ns, datetime, auto" in message


def test_every_file_of_a_glob_is_checked_against_the_header(spark, tmp_path):
    folder = tmp_path / "events"
    folder.mkdir()
    _event_log(folder / "day-1.csv")
    _event_log(folder / "day-2.csv")
    assert read_ratings(spark, str(folder / "*.csv"), "csv", columns=EVENT_COLUMNS).count() == 6

    # Spark would read day-3's sku column as the visitor: refused, the file named
    _event_log(folder / "day-3.csv", header="sku,visitor,event_type,ts")
    with pytest.raises(RatingsFormatError) as info:
        read_ratings(spark, str(folder / "*.csv"), "csv", columns=EVENT_COLUMNS)
    assert "1 of 3 files have another header" in str(info.value)
    assert "day-3.csv: ['sku', 'visitor', 'event_type', 'ts']" in str(info.value)


def test_a_mapped_column_the_header_lacks_is_named(spark, tmp_path):
    path = _event_log(tmp_path / "events.csv")

    with pytest.raises(RatingsFormatError, match=r"missing column\(s\) `stars` \(rating\)"):
        read_ratings(spark, str(path), "csv", columns={**EVENT_COLUMNS, "rating": "stars"})


def test_parquet_with_typed_columns_and_a_mapping(spark, tmp_path):
    path = str(tmp_path / "events.parquet")
    spark.sql(
        "SELECT * FROM VALUES "
        "(7L, 100L, 'click', TIMESTAMP '2024-03-01 12:00:00 UTC', 3.5D), "
        "(8L, 100L, 'buy', TIMESTAMP '2024-03-01 12:00:05 UTC', NULL) "
        "AS t(uid, iid, kind, at, stars)"
    ).write.parquet(path)
    columns = {"user_id": "uid", "item_id": "iid", "event": "kind", "timestamp": "at"}

    rows = read_ratings(spark, path, "parquet", columns=columns).collect()

    assert sorted(tuple(r) for r in rows) == [
        ("7", "100", None, "click", MS_2024 // 1000),
        ("8", "100", None, "buy", MS_2024 // 1000 + 5),
    ]
    # a mapped rating column with an empty value is named
    with pytest.raises(RatingsFormatError, match=r"column `stars` \(rating\) is empty or missing"):
        read_ratings(spark, path, "parquet", columns={**columns, "rating": "stars"})


def test_columns_are_refused_for_a_published_format(spark):
    with pytest.raises(RatingsFormatError, match="`columns:` applies to the formats"):
        read_ratings(spark, "u.data", "ml100k_udata", columns={"user_id": "uid"})
