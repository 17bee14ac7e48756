"""Known third-party noise is dropped; anything else still shows."""

from __future__ import annotations

import logging
import warnings

from recsys_kedro.quiet import KNOWN_LOG_NOISE, silence_known_noise


def test_known_warnings_are_dropped_and_others_kept():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_noise()
        warnings.warn("`broadcast_buffers` is deprecated. Use x", FutureWarning, stacklevel=1)
        warnings.warn("register_new_resolver() is deprecated and will", UserWarning, stacklevel=1)
        warnings.warn("`broadcast_buffers` is deprecated", UserWarning, stacklevel=1)  # other kind
        warnings.warn("something new is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "`broadcast_buffers` is deprecated",
        "something new is deprecated",
    ]


def test_known_log_records_are_dropped_and_others_kept(caplog):
    silence_known_noise()
    silence_known_noise()  # idempotent: one filter per logger
    name = "streaming.base.converters.dataframe_to_mds"
    logger = logging.getLogger(name)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=name):
        logger.warning("Path /x is interpreted as a local path. If this is")
        logger.warning("the export failed")
    assert [r.getMessage() for r in caplog.records] == ["the export failed"]
    assert all(fragments for fragments in KNOWN_LOG_NOISE.values())


def test_the_kedro_cli_starts_without_known_noise():
    """Kedro imports its plugins (kedro-mlflow, which makes MLflow warn) before the
    project's settings: the filters are installed by a `kedro.init` entry point instead."""
    import os
    import subprocess
    import sys
    from importlib.metadata import entry_points
    from pathlib import Path

    from recsys_kedro import quiet

    (hook,) = [e for e in entry_points(group="kedro.init") if e.name == "recsys_kedro_quiet"]
    assert hook.load() is quiet.silence_known_noise
    kedro = Path(sys.executable).with_name("kedro")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [str(kedro), "registry", "list"],
        check=False,
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "recommend" in out.stdout
    assert "Add type hints" not in out.stdout + out.stderr


def test_spark_logging_config_is_where_spark_yml_points():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    conf = yaml.safe_load((root / "conf/base/spark.yml").read_text())
    option = conf["spark.driver.extraJavaOptions"]
    path = option.split("-Dlog4j2.configurationFile=", 1)[1].split()[0]
    assert (root / path).is_file()
    assert "rootLogger.level = warn" in (root / path).read_text()
