"""Conformance checks for model families, shipped so that users can test their own.

`check_family` runs a family through everything gentune will ask of it in a study, on a tiny
budget, and fails with a message that names what broke.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch

from gentune.errors import GentuneError
from gentune.families.base import Family, data_kind
from gentune.families.registry import check_contract, default_space, get_family
from gentune.search.space import SearchSpace
from gentune.train.loop import TrainResult


class _Check:
    """Assertions that name the family and the part of the contract that broke."""

    def __init__(self, family: Family):
        self.family = family

    def __call__(self, ok: bool, what: str, got: Any = None) -> None:
        if not ok:
            detail = "" if got is None else f" (got {got})"
            raise AssertionError(f"check_family({self.family.name}): {what}{detail}")


def check_family(
    family: Family | type[Family] | str,
    dataset: Any = "digits",
    *,
    config: Any = None,
    steps: int = 4,
    n: int = 8,
) -> TrainResult:
    """Check that `family` follows the family contract (docs/families.md), on a tiny budget.

    In order: it subclasses Family and defines its required parts; its default space draws
    valid configs; it trains `steps` steps with finite losses (its main loss among them),
    train/validation curves and a model in eval mode, and the same seed trains the same model;
    it samples `n` finite samples of the data's shape in [-1, 1] (or `n` strings for text), the
    same for the same seed and different for another; `evaluate` returns finite numbers ("nll"
    for a likelihood family); a checkpoint written by `save` loads back to the same config and
    samples; the config round-trips through to_dict / from_dict and refuses unknown fields.

    Args:
        family: a Family instance or subclass, or a name `gentune.families.get_family` takes
            (a built-in family, "pkg.module:Class" or "FILE.py:Class").
        dataset: a dataset name for `gentune.data.load_dataset` ("digits": 8x8 images, in the
            package), or a loaded dataset.
        config: the config to train, as an instance of `config_cls` or a dict of fields;
            None: the config's defaults.
        steps: training steps of each run (it trains twice).
        n: samples drawn at each check.

    Returns:
        The first training run's result, for further checks of your own.

    Raises:
        AssertionError: a part of the contract is broken; the message names it.
        GentuneError: the family cannot even be loaded, or it refused the data or the config.

    >>> from gentune.testing import check_family
    >>> result = check_family("gan-mlp", config={"width": 16, "depth": 1, "batch_size": 16}, steps=2)
    >>> result.steps, sorted(result.losses)
    (2, ['d', 'g'])
    """
    family = _instance(family)
    check = _Check(family)
    data = _dataset(dataset)
    kind = data_kind(data)
    family.check_data(kind, getattr(data, "name", ""))

    _check_space(check, family, kind)
    if config is None or isinstance(config, Mapping):
        config = family.config_cls.from_dict(dict(config or {}))
    check(isinstance(config, family.config_cls), f"config must be a {family.config_cls.__name__}", config)
    _check_config(check, family, config)

    result = family.train(config, data, steps=steps, seed=0)
    _check_result(check, family, result, steps)
    again = family.train(config, data, steps=steps, seed=0)
    check(
        again.losses == result.losses and again.curves == result.curves,
        "the same seed must give the same losses and curves",
        f"{result.losses} then {again.losses}",
    )
    if isinstance(result.model, torch.nn.Module):
        check(_same_state(result.model, again.model), "the same seed must give the same weights")

    samples = family.sample(result.model, n, seed=1)
    _check_samples(check, family, samples, data, n, kind)
    check(_equal(samples, family.sample(result.model, n, seed=1)), "the same seed must give the same samples")
    check(not _equal(samples, family.sample(result.model, n, seed=2)), "another seed must give other samples")

    metrics = family.evaluate(result.model, data, final=True)
    check(isinstance(metrics, dict), "evaluate must return a dict", type(metrics).__name__)
    check(all(_finite(v) for v in metrics.values()), "evaluate must return finite numbers", metrics)
    if family.likelihood:
        check("nll" in metrics, "a likelihood family's evaluate must return nll", sorted(metrics))

    _check_checkpoint(check, family, config, result.model, samples)
    return result


def _instance(family: Family | type[Family] | str) -> Family:
    if isinstance(family, str):
        return get_family(family)
    cls = check_contract(family, repr(family))
    return family if isinstance(family, Family) else cls()


def _dataset(dataset: Any) -> Any:
    if isinstance(dataset, str):
        from gentune.data import load_dataset

        return load_dataset(dataset, seed=0)
    return dataset


def _check_space(check: _Check, family: Family, kind: str) -> None:
    space = default_space(family, kind)
    check(isinstance(space, SearchSpace), "default_space must return a SearchSpace", type(space).__name__)
    check(dataclasses.is_dataclass(family.config_cls), "config_cls must be a dataclass", family.config_cls)
    valid = {f.name for f in dataclasses.fields(family.config_cls)}
    unknown = sorted(set(space.params) - valid)
    check(not unknown, "default_space names parameters that the config does not have", unknown)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    for _ in range(5):
        trial = study.ask()
        params = space.suggest(trial)
        try:
            family.config_cls.from_dict(params)
        except GentuneError as e:
            raise AssertionError(
                f"check_family({family.name}): default_space drew an invalid config {params}: {e}"
            ) from e
        study.tell(trial, 0.0)


def _check_config(check: _Check, family: Family, config: Any) -> None:
    as_dict = config.to_dict()
    check(isinstance(as_dict, dict), "config.to_dict() must return a dict", type(as_dict).__name__)
    back = family.config_cls.from_dict(as_dict)
    check(back == config, "config must round-trip through to_dict / from_dict", back)
    try:
        family.config_cls.from_dict({**as_dict, "no_such_field": 1})
    except GentuneError:
        return
    raise AssertionError(f"check_family({family.name}): config_cls.from_dict must refuse unknown fields")


def _check_result(check: _Check, family: Family, result: TrainResult, steps: int) -> None:
    check(result.steps == steps, f"training for steps={steps} must do {steps} steps", result.steps)
    check(not result.diverged, "a tiny budget must not diverge", result.stop_reason)
    main = family.main_loss
    check(main in result.losses, f"losses must hold main_loss {main!r}", result.losses)
    check(all(_finite(v) for v in result.losses.values()), "losses must be finite", result.losses)
    check(bool(result.curves), "curves must hold the train / validation losses of each log step")
    for point in result.curves:
        check({"step", "train", "val", "gap"} <= set(point), "curve points hold step, train, val, gap", point)
        check(_finite(point["train"]) and _finite(point["val"]), "curve losses must be finite", point)
    check(result.curves[-1]["step"] == steps, "the last step must be measured", result.curves[-1])
    if isinstance(result.model, torch.nn.Module):
        check(not result.model.training, "result.model must be in eval mode")


def _check_samples(check: _Check, family: Family, samples: Any, data: Any, n: int, kind: str) -> None:
    if kind == "text":
        check(
            isinstance(samples, list) and len(samples) == n and all(isinstance(s, str) for s in samples),
            f"sample must return {n} strings for text",
            type(samples).__name__,
        )
        return
    check(isinstance(samples, torch.Tensor), "sample must return a tensor of images", type(samples).__name__)
    shape = (n, *data.shape)
    check(tuple(samples.shape) == shape, f"samples must have the data's shape {shape}", tuple(samples.shape))
    check(samples.dtype == torch.float32, "samples must be float32", samples.dtype)
    check(samples.device.type == "cpu", "samples must come back on the CPU", samples.device)
    check(bool(torch.isfinite(samples).all()), "samples must be finite")
    low, high = float(samples.min()), float(samples.max())
    check(low >= -1 and high <= 1, "samples must lie in [-1, 1]", f"min {low:.3g}, max {high:.3g}")


def _check_checkpoint(check: _Check, family: Family, config: Any, model: Any, samples: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="gentune-check-") as folder:
        path = Path(folder) / "generator.pt"
        written = family.save(path, config, model, extra={"seed": 0})
        check(Path(written).is_file(), "save must write the checkpoint and return its path", written)
        loaded_config, loaded, info = family.load(written)
    check(loaded_config == config, "load must return the saved config", loaded_config)
    check(info.get("extra") == {"seed": 0}, "load must return the saved extra", info.get("extra"))
    check(_equal(family.sample(loaded, len(samples), seed=1), samples), "a loaded model must sample the same")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    return a == b


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
