"""Known third-party noise, filtered where it is emitted (not by silencing every warning).

Each entry below is a message we have read, understood and decided is not actionable for a
user of this project; anything else still shows. :func:`silence_known_noise` installs the
filters in the current process: the Kedro driver (``settings.py``) and every training rank
(:func:`recsys_kedro.training.trainer.fit`) call it.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["KNOWN_LOG_NOISE", "KNOWN_WARNINGS", "KnownNoiseFilter", "silence_known_noise"]

#: (category, regex matched against the start of the message): Python warnings.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # omegaconf deprecates the resolver API that Kedro and kedro-mlflow still call.
    (UserWarning, r"register_new_resolver\(\) is deprecated"),
    # TorchRec's planner / DMP internals, fixed upstream, nothing to change on our side.
    (FutureWarning, r"HeuristicalStorageReservation is known to cause issues"),
    (FutureWarning, r"`broadcast_buffers` is deprecated"),
    # Gathering a sharded table goes through ShardedTensor, which TorchRec itself returns.
    (FutureWarning, r"Please use DTensor instead and we are deprecating ShardedTensor"),
)

#: logger name -> message fragments: log records from third-party loggers.
KNOWN_LOG_NOISE: dict[str, tuple[str, ...]] = {
    # Mosaic's dataframe_to_mds, on every export: we pass our own udf and a local folder
    # on purpose, and the MDS dataset already refuses to overwrite a non-empty one.
    "streaming.base.converters.dataframe_to_mds": (
        "With udf_iterable defined",
        "is interpreted as a local path",
    ),
    "streaming.base.storage.upload": ("exists and not empty. But continue to mkdir",),
    "": ("is created to store index files",),  # streaming.base.util logs on the root logger
    # The planner's dense-size estimate note (printed once per rank per run).
    "torchrec.distributed.planner.storage_reservations": (
        "There is a known issue with TorchRec's dense tensor size",
    ),
    # torch.fx announces an API change the first time a TorchRec module is traced.
    "torch.fx._symbolic_trace": ("is_fx_tracing will return true",),
    # MLflow asks kedro-mlflow's pipeline model for type hints when kedro-mlflow is imported.
    # MLflow emits it under its own `simplefilter("once")`, which outranks any warnings
    # filter; Kedro routes warnings to this logger (logging.captureWarnings), so it is
    # dropped here. The `kedro.init` entry point installs this before plugins load.
    "py.warnings": ("Add type hints to the `predict` method",),
}


class KnownNoiseFilter(logging.Filter):
    """Drops a logger's records whose message contains one of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = tuple(fragments)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to hide
            return True
        return not any(fragment in message for fragment in self.fragments)


def silence_known_noise() -> None:
    """Install the filters in this process (idempotent)."""
    for category, pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name, fragments in KNOWN_LOG_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, KnownNoiseFilter) for f in logger.filters):
            logger.addFilter(KnownNoiseFilter(fragments))
