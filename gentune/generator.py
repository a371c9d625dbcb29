"""`gentune.load`: a tuned generator back as an object, to sample from, keep and load again.

A study's trial is found as `gentune sample` finds it (gentune.study.sampling): its checkpoint
under runs/<study>/trials/<n>/generator.pt, or, when that is gone (a study tuned on another
machine), the trial trained again from its stored config, seed and budget, with the checkpoint
then kept. A checkpoint file (`Generator.save`, or a trial's generator.pt) loads directly.

>>> g = load("gan-mlp-digits-tpe-fid")          # doctest: +SKIP
>>> g.sample(16).shape, g.config.lr             # doctest: +SKIP
(torch.Size([16, 1, 8, 8]), 0.00042)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from gentune.device import resolve_device
from gentune.errors import GentuneError
from gentune.families import Family, get_family
from gentune.families.gan import LEGACY_GAN_FORMAT
from gentune.settings import check_existing_study_name
from gentune.study.listing import runs_storage
from gentune.study.sampling import trial_generator
from gentune.study.store import open_or_create
from gentune.train.checkpoint import read_payload


@dataclass(frozen=True)
class Generator:
    """A trained generator: the network, the config that built it, and where it came from."""

    module: torch.nn.Module  # in eval mode, on `device`
    config: Any  # the family's frozen config (e.g. GANConfig); .to_dict() gives plain values
    family: str  # the family's name, e.g. "gan-mlp"
    trial: int | None  # the trial's number; None for a checkpoint that names none
    study: str | None = None  # the study's name; None for a checkpoint that names none
    source: str = ""  # the checkpoint read, or the trial retrained
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # the checkpoint's extra
    _family: Family | None = field(default=None, repr=False, compare=False)

    def sample(self, n: int, seed: int = 0) -> Any:
        """`n` samples from latent noise seeded by `seed` (the same seed, the same samples, as
        `gentune sample --seed` writes up to 10,000 of them).

        Returns:
            A float tensor (n, C, H, W) in [0, 1] on the CPU; for a text model, n strings.
        """
        out = self._impl().sample(self.module, n, seed=seed, device=self.device)
        if isinstance(out, torch.Tensor):
            return ((out + 1.0) / 2.0).clamp(0.0, 1.0)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the generator as a gentune model checkpoint (gentune.train.checkpoint), which
        `gentune.load(path)` and the family's `load` read.

        Returns:
            The path written.
        """
        extra = {**self.extra, "study": self.study, "trial": self.trial}
        return self._impl().save(path, self.config, self.module, extra=extra)

    def _impl(self) -> Family:
        return self._family if self._family is not None else get_family(self.family)


def load(
    study: str | Path | optuna.Study,
    trial: int | None = None,
    runs_dir: str | Path = "runs",
    storage: str | None = None,
    *,
    device: str = "auto",
) -> Generator:
    """The generator of a study's trial, or of a checkpoint file.

    Args:
        study: a study's name (under `runs_dir`, or in `storage`), an optuna.Study, or the
            path of a checkpoint (a `.pt` file written by `Generator.save` or by a trial).
        trial: the trial's number; None: the best trial (a multi-objective study has none:
            pass one of its Pareto front).
        runs_dir: the folder of study outputs, where trials keep their checkpoints.
        storage: the study's Optuna storage URL; None: sqlite:///RUNS_DIR/STUDY/study.db.
        device: where the module runs: "auto", "cpu", "cuda", "cuda:N".

    Returns:
        A Generator: `.module`, `.config`, `.family`, `.trial`, `.sample(n, seed)`, `.save(path)`.
    """
    dev = str(resolve_device(device))
    if isinstance(study, optuna.Study):
        return _from_study(study, trial, Path(runs_dir), dev)
    path = Path(study)
    if storage is None and path.suffix == ".pt":
        return _from_file(path, dev)
    name = check_existing_study_name(str(study))
    fix = "check the name (gentune list), pass runs_dir=..., or storage=URL for a database elsewhere"
    url = storage or runs_storage(name, Path(runs_dir), fix=fix)
    return _from_study(open_or_create(name, url), trial, Path(runs_dir), dev)


def _from_study(study: optuna.Study, number: int | None, runs_dir: Path, device: str) -> Generator:
    got = trial_generator(study, number, runs_dir=runs_dir, device=device)
    return Generator(
        module=got.module,
        config=got.config,
        family=got.family.name,
        trial=got.trial.number,
        study=study.study_name,
        source=got.source,
        device=device,
        extra=got.extra,
        _family=got.family,
    )


def _from_file(path: Path, device: str) -> Generator:
    payload = read_payload(path)
    # gentune 0.1.0 wrote MLP GANs in their own format, without a family name.
    name = "gan-mlp" if payload.get("format") == LEGACY_GAN_FORMAT else payload.get("family")
    if not isinstance(name, str) or ":" in name:
        raise GentuneError(
            "this checkpoint's family is not a built-in one, so gentune cannot rebuild it by name",
            value=f"{path}: {name!r}",
            fix="load it with your family's own load(path): YourFamily().load(path)",
        )
    family = get_family(name)
    config, module, info = family.load(path, device=device)
    extra = dict(info["extra"])
    trial, study = extra.pop("trial", None), extra.pop("study", None)
    return Generator(
        module=module,
        config=config,
        family=family.name,
        trial=trial if isinstance(trial, int) else None,
        study=study if isinstance(study, str) else None,
        source=str(path),
        device=device,
        extra=extra,
        _family=family,
    )
