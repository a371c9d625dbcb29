"""Saving and loading a trained model with the config that built it, for every family.

The file holds only plain types and tensors, so it loads with `torch.load(weights_only=True)`
and never runs code from the file. Every family writes `gentune-model-checkpoint/1`
(`save_model`); a family that wrote an older format converts such files as `read_model` reads
them (the MLP GAN's `gentune-gan-checkpoint/1`, gentune.families.gan).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from gentune.errors import GentuneError

MODEL_FORMAT = "gentune-model-checkpoint/1"
_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value, where: str) -> None:
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise GentuneError(
                    "checkpoint extra keys must be strings", value=f"{where}: {k!r}", fix="use string keys"
                )
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise GentuneError(
        "checkpoint extra may hold only str, int, float, bool, None, lists and dicts",
        value=f"{where}: {type(value).__name__}",
        fix="convert it to plain values (e.g. float(x), x.tolist())",
    )


def file_mode() -> int:
    """The mode a file created with open() gets under this process's umask (0o644 under the
    usual 0o022); mkstemp makes 0o600 files whatever the umask."""
    mask = os.umask(0)  # the only way to read it: set it and put it back at once
    os.umask(mask)
    return 0o666 & ~mask


def _write_atomic(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A crash mid-write must never leave a truncated checkpoint under the real name.
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())  # readable like the trial's other outputs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_payload(path: Path) -> dict:
    """A checkpoint's payload, loaded with weights_only=True; clear errors for a missing or bad file."""
    if not path.is_file():
        raise GentuneError(
            "checkpoint file not found", value=str(path), fix="check the path, or train again to write it"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise GentuneError(
            f"checkpoint file is unreadable or corrupt ({type(e).__name__})",
            value=str(path),
            fix="delete it and train again",
        ) from None
    if not isinstance(payload, dict):
        raise GentuneError(
            "not a gentune checkpoint", value=str(path), fix="point to a file written by gentune"
        )
    return payload


def save_model(
    path: str | os.PathLike,
    family: str,
    config,
    model: torch.nn.Module,
    meta: dict,
    extra: dict | None = None,
) -> Path:
    """Any family's checkpoint: family name, config, `meta` (what rebuilds the model besides
    the config: image shape, vocabulary, ...), weights and `extra`, written atomically."""
    path = Path(path)
    extra = {} if extra is None else extra
    _check_plain(extra, "extra")
    _check_plain(meta, "meta")
    payload = {
        "format": MODEL_FORMAT,
        "family": family,
        "config": config.to_dict(),
        "meta": meta,
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    return _write_atomic(path, payload)


def read_model(path: str | os.PathLike, family: str, upgrade: Callable[[dict], dict] | None = None) -> dict:
    """The payload of a `save_model` checkpoint of `family`: config, meta, state, extra.

    `upgrade` turns the payload of an older format into this one (and leaves others alone).
    """
    path = Path(path)
    payload = read_payload(path)
    if upgrade is not None:
        payload = upgrade(payload)
    if payload.get("format") != MODEL_FORMAT:
        raise GentuneError(
            f"not a gentune model checkpoint (expected format {MODEL_FORMAT!r})",
            value=str(path),
            fix="point to a file written by save_model",
        )
    if payload.get("family") != family:
        raise GentuneError(
            f"this checkpoint holds a {payload.get('family')!r} model, not {family!r}",
            value=str(path),
            fix=f"load it with --model {payload.get('family')}",
        )
    return payload
