"""Every key gentune stores on an Optuna study or trial, and typed readers for them.

A report must rebuild from the storage alone, on any machine, years later (docs/storage.md),
so the keys are a file format: they are named once here, as optuna-integration names the keys
its callbacks store, and a test checks that docs/storage.md documents each of them.

Writers call Optuna directly with a constant (`trial.set_user_attr(TrialKey.METRICS, m)`);
readers use the functions below, which accept a Study, a Trial or a FrozenTrial and return None
(or an empty value) for a key that is missing or of the wrong type, because studies written by
older versions, or by hand, lack keys that newer ones have.

This module imports nothing from gentune: it is the bottom of the trial layer.

>>> import optuna
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> study = optuna.create_study()
>>> trial = study.ask()
>>> trial.set_user_attr(TrialKey.PRUNE_REASON, "diverged")
>>> prune_reason(trial), metrics(trial)
('diverged', None)
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Protocol


class StudyKey:
    """Study user attributes (`study.user_attrs`)."""

    SETTINGS = "gentune"  # dict: StudySettings.to_dict(), or a user objective's {model: user, ...}
    COMMAND = "command"  # str: the command line that created the study
    CODE_SHA256 = "code_sha256"  # str: sha256 of the user's FILE.py (objective or family) it runs
    TARGET_TRIALS = "target_trials"  # int: the finished trials the last tune asked for; workers' default
    GRID_QUEUE = "grid_queue"  # int: points queued up front; while set, workers run only queued trials
    FLOOR = "floor"  # dict: metrics of N real images against the reference split
    EXTRACTOR = "extractor"  # dict: the feature extractor's kind, dimension, accuracy, reference split
    REAL_PNG = "real_png"  # base64 PNG: a grid of real images from the reference split
    NARROWED_SPACE = "narrowed_space"  # dict: --narrow's space around the top trials (SearchSpace)
    NARROWED_FROM = "narrowed_from"  # dict: on <study>-narrow, the first phase and its trials used
    STAGE = "stage"  # dict: on <study>-stageN, the tuned and fixed parameters and the winner so far
    PHASE_SPACE = "phase_space"  # dict: the SearchSpace a user objective's suggest calls follow
    CONFIRMED = "confirmed"  # list of dicts: --confirm's ranking over seeds, best mean first
    CONFIRM_QUEUE = "confirm_queue"  # dict: on <study>-confirm, the candidates and seeds queued
    POPULATION_K = "population_k"  # int: members the last population run trained at once (--population)
    NOISE_BAND = "noise_band"  # dict: the best trial re-scored under other latent seeds (mean, sd)


class TrialKey:
    """Trial user attributes (`trial.user_attrs`)."""

    CONFIG = "config"  # dict: the full frozen config trained, defaults included
    FAMILY = "family"  # str: the model family trained (with --model auto, the one drawn)
    SEED = "seed"  # int: the training seed the trial ran with
    DEVICE = "device"  # str: e.g. cpu, cuda:0
    WORKER = "worker"  # str: host:pid of the process that ran it
    METRICS = "metrics"  # dict[str, float]: sample metrics and the family's held-out metrics
    FINAL_LOSS = "final_loss"  # dict[str, float | None]: the family's last training losses
    TRAIN_SECONDS = "train_seconds"  # float: training time, evaluations during training included
    STEPS = "steps"  # int: G steps trained, or the step at which the trial was stopped
    STOP_REASON = "stop_reason"  # str: why training ended: budget, max_seconds or diverged
    LOSS_CURVES = "loss_curves"  # list of {step, train, val, gap}: the overfitting watch
    OVERFITTING = "overfitting"  # bool: validation rose 3 times in a row while training fell
    OVERFITTING_STEP = "overfitting_step"  # int: the step at which overfitting was first flagged
    SAMPLES_PNG = "samples_png"  # base64 PNG: 64 samples from the fixed latent seed
    SAMPLES_PROGRESS = "samples_progress"  # list of {step, png}: a grid at each evaluation
    TEXT_SAMPLES = "text_samples"  # list of str: a text model's samples
    PRUNE_REASON = "prune_reason"  # str: pruned, or the detector that stopped the trial
    ERROR = "error"  # str: why a failed trial failed
    INTERRUPTED = "interrupted"  # true: stopped by Ctrl-C or SIGTERM (failed, and re-queued)
    SURPLUS = "surplus"  # true: a worker lost the race for the last slot; failed unrun
    RETRY_OF = "retry_of"  # int: the failed trial whose parameters this queued trial runs again
    RETRIES = "retries"  # int: times these parameters were queued again after their process died
    TRAIN_SEED = "train_seed"  # int: the seed a queued --confirm re-run must train with
    FIXED_CONFIG = "fixed_config"  # dict: the whole config a queued --confirm re-run trains
    FIXED_FAMILY = "fixed_family"  # str: the family of fixed_config (it matters with --model auto)
    CONFIRM_OF = "confirm_of"  # str: study#trial that a --confirm re-run repeats
    CARRIED_FROM = "carried_from"  # str: study#trial whose parameters the first narrow trial re-runs
    PROMOTED_FROM = "promoted_from"  # int: the trial whose model this promoted trial trains on
    RUNG = "rung"  # int: the promotion rung (0: a fresh trial; r: trains to steps * 3**r)
    PBT_PARENT = "pbt_parent"  # int: the trial whose weights and hyperparameters PBT copied into this one
    GENERATION = "generation"  # int: PBT copies between this trial and a fresh one (0: fresh)
    PERTURBATION = "perturbation"  # dict: PBT's change to each parameter, e.g. {"lr": "x1.2"}
    START_STATE = "start_state"  # str: the member state file it continues from, under runs/<study>/
    START_STEP = "start_step"  # int: the G step of that state
    # One number of `metrics` each (flat_metrics), so that optuna-dashboard can sort trials by it.
    FID = "fid"
    KID = "kid"
    KID_STD = "kid_std"
    PRECISION = "precision"
    RECALL = "recall"
    LABEL_ENTROPY = "label_entropy"
    CLASSES_COVERED = "classes_covered"
    N = "n"
    ELBO = "elbo"
    NLL = "nll"
    NLL_SAMPLES = "nll_samples"
    BITS_PER_DIM = "bits_per_dim"
    NLL_IMAGE = "nll_image"
    DENOISING_LOSS = "denoising_loss"
    BITS_PER_CHAR = "bits_per_char"
    PERPLEXITY = "perplexity"


class SystemKey:
    """Trial system attributes gentune writes itself (`trial.system_attrs`)."""

    HEARTBEAT = "gentune:heartbeat"  # float: unix time of a journal or gRPC-proxy worker's last heartbeat


class OptunaKey:
    """Optuna's own trial system attributes, which gentune writes (queueing) or reads."""

    FIXED_PARAMS = "fixed_params"  # dict: the parameters of a queued trial (enqueue_trial)
    GRID_ID = "grid_id"  # int: GridSampler's index of the point
    SEARCH_SPACE = "search_space"  # dict: GridSampler's grid, kept with each queued point
    COMPLETED_RUNG = "completed_rung_{}"  # float: SuccessiveHalvingPruner's value at rung {}
    ARTIFACT = "artifacts:{}"  # dict: optuna.artifacts' record of artifact {} (a sample grid)


# The trial keys that hold one metric each, copied from `metrics` by flat_metrics.
FLAT_METRICS = (
    TrialKey.FID,
    TrialKey.KID,
    TrialKey.KID_STD,
    TrialKey.PRECISION,
    TrialKey.RECALL,
    TrialKey.LABEL_ENTROPY,
    TrialKey.CLASSES_COVERED,
    TrialKey.N,
    TrialKey.ELBO,
    TrialKey.NLL,
    TrialKey.NLL_SAMPLES,
    TrialKey.BITS_PER_DIM,
    TrialKey.NLL_IMAGE,
    TrialKey.DENOISING_LOSS,
    TrialKey.BITS_PER_CHAR,
    TrialKey.PERPLEXITY,
)

# Keys a queued trial is handed to run; they go along when a failed trial is queued again.
REQUEUE_KEYS = (
    TrialKey.FIXED_CONFIG,
    TrialKey.FIXED_FAMILY,
    TrialKey.TRAIN_SEED,
    TrialKey.CONFIRM_OF,
    # A continued trial (promotion, PBT) is re-run from the state it started from.
    TrialKey.PROMOTED_FROM,
    TrialKey.RUNG,
    TrialKey.PBT_PARENT,
    TrialKey.GENERATION,
    TrialKey.PERTURBATION,
    TrialKey.START_STATE,
    TrialKey.START_STEP,
)


def keys(kind: type) -> dict[str, str]:
    """The constants of a key class, by attribute name.

    >>> keys(SystemKey)
    {'HEARTBEAT': 'gentune:heartbeat'}
    """
    return {name: value for name, value in vars(kind).items() if name.isupper() and isinstance(value, str)}


def flat_metrics(values: dict[str, Any]) -> dict[str, int | float]:
    """The finite numbers of a trial's `metrics`, each to be stored as a user attribute of its own.

    A user family's own metric is kept under its name too, unless that name is one of the
    other trial keys (a metric called `config` must not overwrite the config); a metric that
    could not be computed (None, NaN, infinite) is left out.

    >>> flat_metrics({"fid": 2.5, "label_entropy": None, "n": 1000, "config": 1.0, "kid": float("nan")})
    {'fid': 2.5, 'n': 1000}
    """
    taken = set(keys(TrialKey).values()) - set(FLAT_METRICS)
    out: dict[str, int | float] = {}
    for name, value in values.items():
        if name in taken or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        if isinstance(value, numbers.Integral):
            out[name] = int(value)
        elif math.isfinite(value):
            out[name] = float(value)
    return out


def store_metrics(trial: Any, values: dict[str, Any]) -> None:
    """Store `values` as the trial's `metrics`, and each of its numbers as an attribute of its
    own (flat_metrics). `trial`: an optuna.Trial."""
    trial.set_user_attr(TrialKey.METRICS, values)
    for name, value in flat_metrics(values).items():
        trial.set_user_attr(name, value)


class _HasUserAttrs(Protocol):
    """A Study, Trial or FrozenTrial."""

    @property
    def user_attrs(self) -> dict[str, Any]: ...


def _get(owner: _HasUserAttrs, key: str, kind: type | tuple[type, ...]) -> Any:
    value = owner.user_attrs.get(key)
    # bool is an int: a flag must not read as a number, nor a number as a flag.
    if isinstance(value, bool) and kind is not bool:
        return None
    return value if isinstance(value, kind) else None


# Study readers


def settings(study: _HasUserAttrs) -> dict[str, Any]:
    """The study's stored settings dict; {} for a study gentune did not create."""
    return dict(_get(study, StudyKey.SETTINGS, dict) or {})


def command(study: _HasUserAttrs) -> str | None:
    return _get(study, StudyKey.COMMAND, str)


def code_sha256(study: _HasUserAttrs) -> str | None:
    return _get(study, StudyKey.CODE_SHA256, str)


def target_trials(study: _HasUserAttrs) -> int | None:
    return _get(study, StudyKey.TARGET_TRIALS, int)


def has_grid_queue(study: _HasUserAttrs) -> bool:
    """Whether the study hands out only the trials queued when it was created."""
    return study.user_attrs.get(StudyKey.GRID_QUEUE) is not None


def floor(study: _HasUserAttrs) -> dict[str, float] | None:
    return _get(study, StudyKey.FLOOR, dict)


def extractor(study: _HasUserAttrs) -> dict[str, Any] | None:
    return _get(study, StudyKey.EXTRACTOR, dict)


def real_png(study: _HasUserAttrs) -> str | None:
    return _get(study, StudyKey.REAL_PNG, str)


def phase_space(study: _HasUserAttrs) -> dict[str, Any] | None:
    return _get(study, StudyKey.PHASE_SPACE, dict)


def confirmed(study: _HasUserAttrs) -> list[dict[str, Any]] | None:
    return _get(study, StudyKey.CONFIRMED, list)


def confirm_queue(study: _HasUserAttrs) -> dict[str, Any] | None:
    return _get(study, StudyKey.CONFIRM_QUEUE, dict)


def noise_band(study: _HasUserAttrs) -> dict[str, Any] | None:
    """The best trial's noise band (gentune.phases.noise), or None: not measured, or not a
    dict holding a finite mean and sd."""
    band = _get(study, StudyKey.NOISE_BAND, dict)
    if band is None:
        return None
    numbers = [band.get(k) for k in ("mean", "sd")]
    # abs(NaN) < inf is False too: a band without two finite numbers is no band.
    finite = [
        isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < float("inf") for v in numbers
    ]
    return band if all(finite) else None


# Trial readers


def config(trial: _HasUserAttrs) -> dict[str, Any] | None:
    return _get(trial, TrialKey.CONFIG, dict)


def family(trial: _HasUserAttrs) -> str | None:
    return _get(trial, TrialKey.FAMILY, str)


def seed(trial: _HasUserAttrs) -> int | None:
    """The seed the trial trained with; None for a trial that never started training."""
    return _get(trial, TrialKey.SEED, int)


def train_seed(trial: _HasUserAttrs, default: int) -> int:
    """The seed a queued re-run must train with, else `default` (the study's seed)."""
    value = _get(trial, TrialKey.TRAIN_SEED, int)
    return default if value is None else value


def metrics(trial: _HasUserAttrs) -> dict[str, float] | None:
    return _get(trial, TrialKey.METRICS, dict)


def final_loss(trial: _HasUserAttrs) -> dict[str, float | None] | None:
    return _get(trial, TrialKey.FINAL_LOSS, dict)


def train_seconds(trial: _HasUserAttrs) -> float | None:
    value = _get(trial, TrialKey.TRAIN_SECONDS, (int, float))
    return None if value is None else float(value)


def steps(trial: _HasUserAttrs) -> int | None:
    return _get(trial, TrialKey.STEPS, int)


def stop_reason(trial: _HasUserAttrs) -> str | None:
    return _get(trial, TrialKey.STOP_REASON, str)


def prune_reason(trial: _HasUserAttrs) -> str | None:
    return _get(trial, TrialKey.PRUNE_REASON, str)


def error(trial: _HasUserAttrs) -> str | None:
    return _get(trial, TrialKey.ERROR, str)


def worker(trial: _HasUserAttrs) -> str | None:
    return _get(trial, TrialKey.WORKER, str)


def device(trial: _HasUserAttrs) -> str | None:
    return _get(trial, TrialKey.DEVICE, str)


def interrupted(trial: _HasUserAttrs) -> bool:
    return bool(trial.user_attrs.get(TrialKey.INTERRUPTED))


def surplus(trial: _HasUserAttrs) -> bool:
    return bool(trial.user_attrs.get(TrialKey.SURPLUS))


def overfitting(trial: _HasUserAttrs) -> bool:
    return trial.user_attrs.get(TrialKey.OVERFITTING) is True


def samples_png(trial: _HasUserAttrs) -> str | None:
    return _get(trial, TrialKey.SAMPLES_PNG, str)


def samples_progress(trial: _HasUserAttrs) -> list[dict[str, Any]]:
    return list(_get(trial, TrialKey.SAMPLES_PROGRESS, list) or [])


def text_samples(trial: _HasUserAttrs) -> list[str] | None:
    value = _get(trial, TrialKey.TEXT_SAMPLES, list)
    return None if value is None else [str(s) for s in value]


def loss_curves(trial: _HasUserAttrs) -> list[dict[str, Any]]:
    return list(_get(trial, TrialKey.LOSS_CURVES, list) or [])


def fixed_config(trial: _HasUserAttrs) -> dict[str, Any] | None:
    return _get(trial, TrialKey.FIXED_CONFIG, dict)


def confirm_of(trial: _HasUserAttrs) -> str | None:
    return _get(trial, TrialKey.CONFIRM_OF, str)


def population_k(study: _HasUserAttrs) -> int | None:
    return _get(study, StudyKey.POPULATION_K, int)


def promoted_from(trial: _HasUserAttrs) -> int | None:
    return _get(trial, TrialKey.PROMOTED_FROM, int)


def rung(trial: _HasUserAttrs) -> int:
    """The promotion rung of a trial; 0 for a fresh one (and one written before promotion)."""
    return _get(trial, TrialKey.RUNG, int) or 0


def pbt_parent(trial: _HasUserAttrs) -> int | None:
    return _get(trial, TrialKey.PBT_PARENT, int)


def generation(trial: _HasUserAttrs) -> int:
    return _get(trial, TrialKey.GENERATION, int) or 0


def perturbation(trial: _HasUserAttrs) -> dict[str, str] | None:
    return _get(trial, TrialKey.PERTURBATION, dict)


def start_state(trial: _HasUserAttrs) -> str | None:
    return _get(trial, TrialKey.START_STATE, str)


def start_step(trial: _HasUserAttrs) -> int:
    return _get(trial, TrialKey.START_STEP, int) or 0
