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
