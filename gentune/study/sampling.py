"""Samples from a trial's generator: load its checkpoint, or retrain it and keep one.

A trial without a checkpoint here (tuned on another machine, or its folder deleted) is trained
again as it was trained: its config, its own seed (a `--confirm` re-run trains under another
seed than the study's), the study's budget for its family and the study's time cap per trial.
Training is deterministic for a seed, so the same model comes back, except after a time cap:
where a trial stopped then depends on the machine's speed, and the retrain says so.

Samples are drawn CHUNK at a time and appended to the file, so `--n` is bounded by the disk
(checked before writing), not by memory; a file is written under a temporary name and renamed,
so an interrupted run never leaves a truncated one.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from gentune.device import resolve_device
from gentune.errors import GentuneError
from gentune.families import Family, get_family
from gentune.images import grid_png
from gentune.settings import DATA_SEED, StudySettings
from gentune.study.store import builtin_settings, open_or_create
from gentune.study.targets import pinned_sha256
from gentune.train.checkpoint import file_mode
from gentune.trial import attrs

CHUNK = 10_000  # samples drawn at once: 10,000 28x28 images are 31 MB
PNG_MAX = CHUNK  # samples a PNG grid holds (a 100 x 100 grid)
SUFFIXES = {".npy": "an (N, H, W) array", ".npz": "the array under 'x'", ".png": "a grid of the samples"}


@dataclass(frozen=True)
class Retrained:
    """A trial trained again: what went in, and the trainer's result."""

    config: Any
    seed: int
    budget: dict[str, Any]
    result: Any  # the family's training result: .model, .losses, .steps, .stop_reason

    def note(self, trial: FrozenTrial, cap: float | None) -> str:
        """Why the retrained model may differ from the trial's, or ''."""
        stopped_at = attrs.steps(trial)
        capped = "max_seconds" in (self.result.stop_reason, attrs.stop_reason(trial))
        if not capped or stopped_at is None or stopped_at == self.result.steps:
            return ""
        return (
            f"; the {cap:g} s cap per trial stopped it at step {self.result.steps}, the trial at step "
            f"{stopped_at}: where a time cap stops depends on the machine"
        )


def trial_seed(trial: FrozenTrial, study_seed: int) -> int:
    """The seed `trial` trained with: its `seed` record, else the seed it was queued with,
    else the study's."""
    recorded = attrs.seed(trial)
    return recorded if recorded is not None else attrs.train_seed(trial, default=study_seed)


def retrain(settings: StudySettings, family, trial: FrozenTrial, *, device: str) -> Retrained:
    """Train `trial`'s config again as the study trained it (see the module docstring)."""
    from gentune.data import load_dataset

    config = attrs.config(trial)
    if config is None:
        raise GentuneError(
            f"trial {trial.number} has no stored config to retrain", fix="choose another trial with --trial"
        )
    data = load_dataset(settings.dataset_ref.name, seed=DATA_SEED)
    seed = trial_seed(trial, settings.seed)
    budget = settings.budget_for(family)
    cap = {"max_seconds": settings.trial_seconds} if settings.trial_seconds else {}
    cfg = family.config_cls.from_dict(config)
    result = family.train(cfg, data, **budget, **cap, seed=seed, device=device)
    return Retrained(config=cfg, seed=seed, budget=budget, result=result)


@dataclass(frozen=True)
class TrialGenerator:
    """A trial's trained generator, as `trial_generator` finds it."""

    trial: FrozenTrial
    family: Family
    config: Any  # the family's config
    module: Any  # the torch module, in eval mode
    extra: dict[str, Any]  # the checkpoint's extra: the seed and budget it trained with
    source: str  # the checkpoint read, or the trial retrained (and why it may differ)


def trial_generator(
    study: optuna.Study, number: int | None, *, runs_dir: Path, device: str
) -> TrialGenerator:
    """The generator of trial `number` of `study` (None: the best), for `gentune sample` and
    `gentune.load`: its checkpoint RUNS_DIR/STUDY/trials/N/generator.pt, else the trial trained
    again (`retrain`) and that checkpoint kept. `device`: a resolved device ("cpu", "cuda:0")."""
    chosen = choose_trial(study, number)
    settings = builtin_settings(study)
    family = trial_family(settings, chosen, pinned_sha256(study))
    ckpt = runs_dir / study.study_name / "trials" / str(chosen.number) / "generator.pt"
    if ckpt.exists():
        config, module, info = family.load(ckpt, device=device)
        return TrialGenerator(chosen, family, config, module, dict(info["extra"]), f"checkpoint {ckpt}")
    if settings.dataset.startswith(("files:", "text:")):
        raise GentuneError(
            "this trial has no checkpoint here and its data are your own files",
            value=str(ckpt),
            fix="run it where the study was tuned, or pass --runs-dir (runs_dir=) of that study's folder",
        )
    again = retrain(settings, family, chosen, device=device)
    extra = {"seed": again.seed, "budget": again.budget}
    family.save(ckpt, again.config, again.result.model, extra=extra)
    source = f"retrained trial {chosen.number}; checkpoint kept at {ckpt}"
    source += again.note(chosen, settings.trial_seconds)
    return TrialGenerator(chosen, family, again.config, again.result.model.eval(), extra, source)


def sample_trial(
    study_name: str,
    *,
    trial: int | None,
    n: int,
    output: Path,
    seed: int,
    storage: str,
    runs_dir: Path,
    device: str = "auto",
) -> tuple[Path, str]:
    """Write `n` samples of a trial (default: the best) to `output`, in the format its suffix
    names (`sample_path`): (N, H, W) float32 in [0, 1] as .npy or under 'x' in a .npz (N, H, W, C
    for colour), or a PNG grid; for a text model, n strings to a .txt file beside `output`.

    Returns the path written and where the generator came from ("checkpoint" or "retrained").
    """
    if n < 1:
        raise GentuneError("--n must be at least 1", value=n, fix="pass --n 10000")
    study = open_or_create(study_name, storage)
    text = builtin_settings(study).dataset_ref.kind == "text"
    output = output.with_suffix(".txt") if text else sample_path(output, n)
    dev = str(resolve_device(device))
    got = trial_generator(study, trial, runs_dir=runs_dir, device=dev)
    family, source = got.family, got.source
    chunks = (family.sample(got.module, m, seed=s, device=dev) for m, s in _chunks(n, seed))
    output.parent.mkdir(parents=True, exist_ok=True)
    if text:
        with _replacing(output) as tmp, open(tmp, "w") as f:
            for i, texts in enumerate(chunks):
                f.write(("\n\n---\n\n" if i else "") + "\n\n---\n\n".join(texts))
        return output, source
    if output.suffix == ".png":  # n <= PNG_MAX == CHUNK: one chunk
        with _replacing(output) as tmp:
            tmp.write_bytes(grid_png(next(chunks)))
        return output, source
    arrays = (_to_unit(images) for images in chunks)
    first = next(arrays)
    _check_room(output, n, first.nbytes // len(first))
    with _replacing(output) as tmp:
        if output.suffix == ".npz":
            with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
                npy = Path(scratch) / "x.npy"
                _stream(npy, n, itertools.chain([first], arrays))
                with zipfile.ZipFile(tmp, "w", allowZip64=True) as z:
                    z.write(npy, "x.npy")
        else:
            _stream(tmp, n, itertools.chain([first], arrays))
    return output, source


def sample_path(output: Path, n: int) -> Path:
    """The file `gentune sample -o output` writes: its suffix says the format (.npy without one).

    >>> sample_path(Path("out"), 10), sample_path(Path("grid.png"), 10)
    (PosixPath('out.npy'), PosixPath('grid.png'))
    """
    if not output.suffix:
        return output.with_suffix(".npy")
    if output.suffix not in SUFFIXES:
        raise GentuneError(
            "the samples file must end in " + ", ".join(f"{k} ({v})" for k, v in SUFFIXES.items()),
            value=str(output),
            fix=f"pass -o {output.with_suffix('.npy')}",
        )
    if output.suffix == ".png" and n > PNG_MAX:
        raise GentuneError(
            f"a PNG grid holds at most {PNG_MAX:,} samples",
            value=n,
            fix=f"pass --n {PNG_MAX} or less, or -o FILE.npy",
        )
    return output


def _chunks(n: int, seed: int) -> Iterator[tuple[int, int]]:
    """(size, latent seed) of each chunk; the first keeps `seed`, so up to CHUNK samples are the
    ones a single call draws."""
    for i, start in enumerate(range(0, n, CHUNK)):
        yield min(CHUNK, n - start), seed if i == 0 else zlib.crc32(f"{seed}:{i}".encode())


def _to_unit(images: Any) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> float32 in [0, 1], (N, H, W) for one channel, else (N, H, W, C)."""
    arr = ((images.numpy().astype(np.float32) + 1.0) / 2.0).clip(0.0, 1.0)
    return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)


def _check_room(output: Path, n: int, per_sample: int) -> None:
    need, free = n * per_sample, shutil.disk_usage(output.parent).free
    if need > free:
        raise GentuneError(
            f"{n:,} samples take {need / 1e9:.1f} GB, but {output.parent} has {free / 1e9:.1f} GB free",
            value=n,
            fix=f"pass a smaller --n (about {free // per_sample:,} fit here), or -o a disk with more room",
        )


def _stream(path: Path, n: int, chunks: Iterator[np.ndarray]) -> None:
    """Write the chunks as one .npy array of n samples, one chunk in memory at a time.

    The header (with all n rows) goes first and each chunk is appended to the file: a memory
    map of the whole array would count every page written towards the process's memory.
    """
    first = next(chunks)
    header = {"descr": "<f4", "fortran_order": False, "shape": (n, *first.shape[1:])}
    written = 0
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for chunk in itertools.chain([first], chunks):
            f.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes())
            written += len(chunk)
    assert written == n, (written, n)  # a family's sample() returned another count


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it on success and is removed on failure."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(file_mode())  # mkstemp makes 0600; outputs follow the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def trial_family(settings: StudySettings, trial: FrozenTrial, sha256: str | None = None) -> Family:
    """The family that trained `trial`: the study's, or with --model auto the one it drew; a
    user's FILE.py:Class runs only if its content has the hash the study pinned (`sha256`)."""
    family = get_family(settings.model, settings.dataset_ref.kind, sha256=sha256)
    if settings.model == "auto":
        family, _ = family.pick({"model": attrs.family(trial)})
    return family


def choose_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """Trial `number` of `study`, completed and with a stored config; None: the best trial
    (refused for a multi-objective study, whose best trials are a front)."""
    trials = study.get_trials(deepcopy=False)
    if number is None and len(study.directions) > 1:
        front = sorted(t.number for t in study.best_trials)
        raise GentuneError(
            f"study {study.study_name!r} has several objectives, so no single best trial",
            value=study.study_name,
            fix=f"pass --trial N (trial=N in gentune.load), N one of its Pareto front: {front}",
        )
    if number is None:
        try:
            return study.best_trial
        except ValueError:
            raise GentuneError(
                f"study {study.study_name!r} has no completed trial", fix="run gentune tune first"
            ) from None
    by_number = {t.number: t for t in trials}
    chosen = by_number.get(number)
    if chosen is None or chosen.state != TrialState.COMPLETE or attrs.config(chosen) is None:
        done = sorted(t.number for t in trials if t.state == TrialState.COMPLETE)
        raise GentuneError(
            f"trial {number} is not a completed trial of {study.study_name!r}",
            value=number,
            fix=f"choose one of: {done}",
        )
    return chosen
