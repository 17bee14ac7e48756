"""One training run from the driver: typed settings in, the trained model and its summary out.

:func:`train` is what every caller uses (the Kedro training node, the tuning study, the scale
benchmark): it launches :func:`~recsys_kedro.training.trainer.fit` on the ranks with
``TorchDistributor`` (:func:`~recsys_kedro.training.launch.launch`) and owns the one file
that crosses from the ranks to the driver: rank 0 writes the gathered model to a unique
staging file, which this module reads back and deletes, failure or not. The resume
checkpoints are the trainer's (it creates, prunes and, after success, removes them); this
module names their folder by the run's fingerprint (a hash of the model, the settings and
the data's content) and writes what went into it there (``run.json``), so a run that does
not resume another run's checkpoints says what changed.

Settings come in two halves with different owners: :class:`OptimSettings` is per model (what
a run computes), :class:`LaunchSettings` is per environment (where and how it runs: ranks,
local or cluster mode, GPU, timeouts, staging and checkpoints).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import fsspec

from recsys_kedro.mds import MDSFolder
from recsys_kedro.mds.writer import SHARD_HASH
from recsys_kedro.models.model_file import load_model_file
from recsys_kedro.training.checkpointing import CheckpointPolicy, complete_checkpoints
from recsys_kedro.training.launch import launch, resolve_use_gpu
from recsys_kedro.training.storage import free_space
from recsys_kedro.training.trainer import ModelSpec, TrainConfig, fit

logger = logging.getLogger(__name__)


def _known(cls: type, values: dict[str, Any], *, strict: bool) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if strict and unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(names)}")
    return {k: v for k, v in values.items() if k in names}


@dataclass(frozen=True)
class OptimSettings:
    """What a training run computes, besides the model and the data (per model).

    ``batch_size`` is per rank. ``patience``: stop after that many epochs without a better
    monitored metric (``None``: run every epoch; the best epoch is kept either way).
    """

    epochs: int
    batch_size: int
    eval_batch_size: int
    embedding_lr: float
    dense_lr: float
    seed: int = 42
    drop_last: bool = True
    patience: int | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> OptimSettings:
        """From a model's ``training`` parameters; keys that are not optimisation settings
        (the model spec's: loss, monitor, ...) are left to the spec."""
        values = _known(cls, params, strict=False)
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in values
        )
        if missing:
            raise KeyError(f"missing training setting(s) {missing}")
        settings = cls(**values)
        return dataclasses.replace(
            settings,
            epochs=int(settings.epochs),
            batch_size=int(settings.batch_size),
            eval_batch_size=int(settings.eval_batch_size),
            embedding_lr=float(settings.embedding_lr),
            dense_lr=float(settings.dense_lr),
            seed=int(settings.seed),
            drop_last=bool(settings.drop_last),
            patience=None if settings.patience is None else int(settings.patience),
        )


@dataclass(frozen=True)
class CheckpointSettings:
    """Sharded resume checkpoints: ``every_n_steps`` (also every N steps; ``None``: at
    epoch ends only), ``keep_last`` complete ones kept while training, ``resume`` from the
    newest complete one, ``keep_after_success`` (``False``: removed once the model is saved)."""

    every_n_steps: int | None = None
    keep_last: int = 2
    resume: bool = True
    keep_after_success: bool = False


@dataclass(frozen=True)
class LaunchSettings:
    """Where and how a run executes (per environment, shared by every model).

    ``use_gpu``: ``None`` = use CUDA when the driver sees it. ``staging_dir``: storage the
    driver and every rank share (rank 0 writes the model there, the ranks their outcomes).
    ``cache_dir``: Mosaic's local cache for remote MDS folders (one sub-folder per model and
    split). ``train_pipeline``: ``auto`` (TorchRec's ``TrainPipelineSparseDist`` on GPU, the
    plain loop on CPU), ``plain`` or ``sparse_dist``. ``checkpoints``: ``None`` turns resume
    checkpoints off.
    """

    staging_dir: str
    num_processes: int = 2
    local_mode: bool = True
    use_gpu: bool | None = None
    timeout_s: float = 600.0
    cache_dir: str | None = None
    progress: bool = True
    train_pipeline: str = "auto"
    checkpoints: CheckpointSettings | None = field(default_factory=CheckpointSettings)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> LaunchSettings:
        """From the ``launch`` parameters (conf/<env>/parameters.yml); unknown keys are an
        error (a misspelt launch setting would otherwise be ignored silently)."""
        values = _known(cls, dict(params), strict=True)
        if "staging_dir" not in values:
            raise KeyError("missing launch setting 'staging_dir'")
        checkpoints = values.pop("checkpoints", {})
        if checkpoints is not None:
            checkpoints = CheckpointSettings(
                **_known(CheckpointSettings, dict(checkpoints), strict=True)
            )
        return cls(**values, checkpoints=checkpoints)

    def identity(self) -> dict[str, Any]:
        """The launch settings that change what a run computes (and so its fingerprint):
        the number of ranks (batches are per rank) and the training loop."""
        return {"num_processes": int(self.num_processes), "train_pipeline": self.train_pipeline}


class SettingsError(ValueError):
    """A training or launch setting is missing or invalid (the message names it)."""


@dataclass(frozen=True)
class TrainSettings:
    """A model's optimisation settings and the environment's launch settings."""

    optim: OptimSettings
    launch: LaunchSettings

    @classmethod
    def from_params(cls, training: dict[str, Any], launch: dict[str, Any]) -> TrainSettings:
        """Raises :class:`SettingsError` for a missing or unknown key (the values are
        checked where they are used, by :class:`~recsys_kedro.training.config.TrainConfig`)."""
        try:
            return cls(OptimSettings.from_params(training), LaunchSettings.from_params(launch))
        except (KeyError, TypeError, ValueError) as exc:
            raise SettingsError(str(exc).strip("'\"")) from exc


@dataclass(frozen=True)
class TrainResult:
    """The trained model (its model file: config + full state dict), the per-epoch history
    (``{metric: [value per epoch]}``) and the run's summary (history, best epoch, throughput,
    sharding plan, fingerprint, ...)."""

    model: dict[str, Any]
    history: dict[str, list[float]]
    summary: dict[str, Any]


class TrainingFailed(RuntimeError):
    """A launch failed; ``resumes_from`` is the checkpoint folder a re-run continues from."""

    def __init__(self, message: str, resumes_from: str | None) -> None:
        super().__init__(message)
        self.resumes_from = resumes_from


#: In every run's checkpoint folder: what the run computes (the fingerprint's input), so a
#: later run can say why it does not resume another run's checkpoints.
RUN_FILE = "run.json"


def _folder_identity(folder: MDSFolder) -> dict[str, Any]:
    """What identifies an exported folder's content: its description and the samples and
    content hash of every shard, in the index's order (the exporter records the hashes; a
    folder written without them has its shard files hashed here)."""
    fs, root = fsspec.core.url_to_fs(folder.remote or folder.local)
    root = root.rstrip("/")
    index = f"{root}/index.json"
    shards: list[Any] | None = None
    if fs.exists(index):
        shards = []
        for shard in json.loads(fs.cat_file(index))["shards"]:
            stored = shard.get("zip_data") or shard["raw_data"]
            digest = (stored.get("hashes") or {}).get(SHARD_HASH)
            if digest is None:
                digest = hashlib.sha256(fs.cat_file(f"{root}/{stored['basename']}")).hexdigest()
            # not the basename: Mosaic names each partition's sub-folder by its Spark task,
            # so the same rows exported twice land under other names
            shards.append([shard["samples"], digest])
    return {**dataclasses.asdict(folder), "local": None, "shards": shards}


def run_identity(
    model_spec: dict[str, Any], settings: TrainSettings, **folders: MDSFolder
) -> dict[str, Any]:
    """What a training run computes: the model, the optimisation settings, the launch
    settings that shape the batches and the data's content, per named folder (``train=``,
    ``validation=``); not where the data are or how verbosely it runs."""
    return json.loads(
        json.dumps(
            {
                "spec": model_spec,
                "training": {**dataclasses.asdict(settings.optim), **settings.launch.identity()},
                "data": {name: _folder_identity(folder) for name, folder in folders.items()},
            },
            sort_keys=True,
            default=str,
        )
    )


def run_fingerprint(
    model_spec: dict[str, Any], settings: TrainSettings, **folders: MDSFolder
) -> str:
    """A short hash of :func:`run_identity`. Checkpoints live in a folder named by it, so a
    run resumes only from checkpoints of the same model, settings and data: the same rows
    with other labels (another label rule upstream) are other data."""
    return _fingerprint(run_identity(model_spec, settings, **folders))


def _fingerprint(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two runs' identities, in words (``[]``: the same run)."""
    out = []
    if old.get("spec") != new.get("spec"):
        out.append("the model spec")
    old_training, new_training = old.get("training", {}), new.get("training", {})
    changed = sorted(
        k
        for k in set(old_training) | set(new_training)
        if old_training.get(k) != new_training.get(k)
    )
    if changed:
        out.append(f"the training setting(s) {changed}")
    old_data, new_data = old.get("data", {}), new.get("data", {})
    out += [
        f"the {name} data"
        for name in sorted(set(old_data) | set(new_data))
        if old_data.get(name) != new_data.get(name)
    ]
    return out


def explain_fresh_start(
    checkpoints_root: str, fingerprint: str, identity: dict[str, Any]
) -> list[str]:
    """Record this run's identity in its folder and, when it has no checkpoint to resume,
    say why the checkpoints of other runs under the same root are not resumed."""
    fs, root = fsspec.core.url_to_fs(checkpoints_root)
    root = root.rstrip("/")
    own = f"{root}/{fingerprint}"
    try:
        fs.makedirs(own, exist_ok=True)
        with fs.open(f"{own}/{RUN_FILE}", "w") as handle:
            json.dump(identity, handle, indent=1, sort_keys=True)
    except OSError as exc:
        raise OSError(
            f"cannot write to the checkpoint folder {checkpoints_root}/{fingerprint}: "
            f"{type(exc).__name__}: {exc} ({free_space(checkpoints_root)})"
        ) from exc
    if complete_checkpoints(f"{checkpoints_root.rstrip('/')}/{fingerprint}"):
        return []
    notes = []
    for other in sorted(fs.ls(root, detail=False)):
        name = other.rstrip("/").rsplit("/", 1)[-1]
        run_file = f"{other.rstrip('/')}/{RUN_FILE}"
        if name == fingerprint or not fs.exists(run_file):
            continue
        if not complete_checkpoints(f"{checkpoints_root.rstrip('/')}/{name}"):
            continue
        differences = identity_differences(json.loads(fs.cat_file(run_file)), identity)
        what = ", ".join(differences) or "another fingerprint"
        notes.append(
            f"the checkpoints in {other} are of another run ({what} changed since): not "
            f"resumed; this run (fingerprint {fingerprint}) starts fresh"
        )
    for note in notes:
        logger.info(note)
    return notes


def _checkpoint_policy(
    ckpt: CheckpointSettings, checkpoints_root: str, fingerprint: str
) -> CheckpointPolicy:
    return CheckpointPolicy(
        directory=f"{checkpoints_root.rstrip('/')}/{fingerprint}",
        every_n_steps=ckpt.every_n_steps,
        keep_last=int(ckpt.keep_last),
        resume=bool(ckpt.resume),
        keep_after_success=bool(ckpt.keep_after_success),
    )


def _config(
    spec: ModelSpec,
    train_mds: MDSFolder,
    validation_mds: MDSFolder,
    settings: TrainSettings,
    use_gpu: bool,
) -> TrainConfig:
    """The trainer's config (it validates every value): the model staged under a unique
    name, Mosaic's cache in a folder per model."""
    optim, launch_settings = settings.optim, settings.launch
    staging_dir = launch_settings.staging_dir.rstrip("/")
    cache = launch_settings.cache_dir
    return TrainConfig(
        train=train_mds,
        validation=validation_mds,
        model_path=f"{staging_dir}/{spec.name}-{uuid.uuid4().hex}.pt",
        epochs=optim.epochs,
        batch_size=optim.batch_size,
        eval_batch_size=optim.eval_batch_size,
        embedding_lr=optim.embedding_lr,
        dense_lr=optim.dense_lr,
        seed=optim.seed,
        use_gpu=use_gpu,
        cache_dir=f"{cache.rstrip('/')}/{spec.name}" if cache else None,
        progress=bool(launch_settings.progress),
        drop_last=optim.drop_last,
        patience=optim.patience,
        train_pipeline=launch_settings.train_pipeline,
        timeout_s=float(launch_settings.timeout_s),
    )


def train(
    spec: ModelSpec,
    model_spec: dict[str, Any],
    train_mds: MDSFolder,
    validation_mds: MDSFolder,
    settings: TrainSettings,
    checkpoints_root: str | None = None,
) -> TrainResult:
    """Train ``spec``'s model on ``settings.launch.num_processes`` ranks.

    Args:
        spec: the model (``model_spec`` is its plain-values form, hashed into the
            fingerprint).
        train_mds, validation_mds: the exported MDS folders (each rank streams its share).
        checkpoints_root: the folder of this model's resume checkpoints; the run writes
            under ``<folder>/<fingerprint>`` (:func:`run_fingerprint`), so a re-run of the
            same model on the same data continues where a failed run stopped. ``None``: no
            checkpoints (e.g. tuning trials).

    Raises:
        SettingsError: a setting is invalid, checked before anything is launched.
        TrainingFailed: a rank raised or died (the message names it).
    """
    launch_settings = settings.launch
    use_gpu = resolve_use_gpu(launch_settings.use_gpu)
    staging_dir = launch_settings.staging_dir.rstrip("/")
    try:
        config = _config(spec, train_mds, validation_mds, settings, use_gpu)
        policy, fingerprint = None, None  # no checkpoints: nothing is named by a fingerprint
        if checkpoints_root is not None and launch_settings.checkpoints is not None:
            identity = run_identity(
                model_spec, settings, train=train_mds, validation=validation_mds
            )
            fingerprint = _fingerprint(identity)
            policy = _checkpoint_policy(launch_settings.checkpoints, checkpoints_root, fingerprint)
            config = dataclasses.replace(config, checkpoints=policy)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    if policy is not None and policy.resume:
        explain_fresh_start(checkpoints_root, fingerprint, identity)
    fs, staged = fsspec.core.url_to_fs(config.model_path)
    try:
        result = launch(
            fit,
            spec,
            config,
            num_processes=int(launch_settings.num_processes),
            local_mode=bool(launch_settings.local_mode),
            use_gpu=use_gpu,
            # Shared storage on a cluster (like the staged model): the ranks' outcomes.
            outcome_dir=staging_dir,
        )
        model = load_model_file(config.model_path)
    except RuntimeError as exc:
        resumes = policy.directory if policy is not None and policy.resume else None
        raise TrainingFailed(str(exc), resumes) from exc
    finally:
        if fs.exists(staged):
            fs.rm(staged)  # the caller saves the model; the staged copy is transport only
    summary = {k: v for k, v in result.items() if k != "model_path"}
    summary["run_fingerprint"] = fingerprint
    return TrainResult(model=model, history=result["history"], summary=summary)
