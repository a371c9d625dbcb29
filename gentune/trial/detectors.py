"""Failure detectors that understand generative training; each can stop a trial early.

Two kinds of signal reach them (see gentune.trial.monitor): the trainer's log windows, every
`log_every` G steps (`g_loss`, `d_loss`, `d_acc`, `grad_norm`, or `kl` for a VAE), and the
sample metrics of each evaluation during training (label entropy, recall, the objective).
A detector that fires names a reason; the trial is then PRUNED with user attribute
`prune_reason` = that name, so samplers still learn from it.

Every threshold lives in one frozen dataclass, DetectorConfig, stored with the study's
settings. The defaults and the measurements behind them are in docs/detectors.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from gentune.errors import GentuneError


@dataclass(frozen=True)
class Diverged:
    """A non-finite loss or signal; or a gradient norm (the largest of any G or D update in a log
    window) above `spike_grad_norm` once, or above `max_grad_norm` for `window` windows in a
    row. A healthy DCGAN has isolated spikes to 100-160 that settle at once."""

    enabled: bool = True
    max_grad_norm: float = 100.0
    window: int = 2
    spike_grad_norm: float = 500.0


@dataclass(frozen=True)
class DOverpowered:
    """D wins outright: mean d_loss < `max_d_loss` and d_acc > `min_d_acc` for `window` log
    windows in a row (at equilibrium d_loss is 2 ln 2 = 1.39 and d_acc 0.5)."""

    enabled: bool = True
    max_d_loss: float = 0.05
    min_d_acc: float = 0.99
    window: int = 10


@dataclass(frozen=True)
class ModeCollapse:
    """Samples far less diverse than real data: label entropy below `entropy_ratio` x the real
    floor's, or recall below `recall_ratio` x the floor's (0: not used, since healthy GANs
    start with recall near 0 too), at `evals` evaluations in a row, none before `after` x the
    budget; with `only_when_behind`, only while a complete trial of the study did better (on
    a budget too short for any trial to learn every class, the leaders still finish)."""

    enabled: bool = True
    entropy_ratio: float = 0.2
    recall_ratio: float = 0.0
    evals: int = 2
    after: float = 0.25
    only_when_behind: bool = True


@dataclass(frozen=True)
class PosteriorCollapse:
    """A VAE's KL term (`kl` in the losses) below `min_kl` nats for `window` log windows in a
    row, none before `after` x the budget (KL warm-up schedules start near 0)."""

    enabled: bool = True
    min_kl: float = 0.1
    window: int = 10
    after: float = 0.25


@dataclass(frozen=True)
class Stagnation:
    """The objective has not beaten its best by a relative `min_delta` in `patience`
    evaluations in a row; with `only_when_behind`, only while a complete trial of the study did
    better (a stalled trial that leads the study may still become its best)."""

    enabled: bool = True
    patience: int = 3
    min_delta: float = 0.01
    only_when_behind: bool = True


DETECTORS = {
    "diverged": Diverged,
    "d_overpowered": DOverpowered,
    "mode_collapse": ModeCollapse,
    "posterior_collapse": PosteriorCollapse,
    "stagnation": Stagnation,
}


@dataclass(frozen=True)
class DetectorConfig:
    """Every detector's switch and thresholds; `name.key=value` overrides address them."""

    diverged: Diverged = field(default_factory=Diverged)
    d_overpowered: DOverpowered = field(default_factory=DOverpowered)
    mode_collapse: ModeCollapse = field(default_factory=ModeCollapse)
    posterior_collapse: PosteriorCollapse = field(default_factory=PosteriorCollapse)
    stagnation: Stagnation = field(default_factory=Stagnation)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DetectorConfig:
        """Parse {name: {key: value}}; unknown names or keys are errors that list the valid ones."""
        config = cls()
        for name, values in (d or {}).items():
            if not isinstance(values, dict):
                raise GentuneError(
                    f"detector settings for {name!r} must be a mapping of key: value",
                    value=values,
                    fix=f"write e.g. {name}: {{enabled: false}}",
                )
            for key, value in values.items():
                config = config.set(name, key, value)
        return config

    def set(self, name: str, key: str, value: Any) -> DetectorConfig:
        """A copy with detector `name`'s `key` set to `value` (strings are parsed as YAML)."""
        if name not in DETECTORS:
            raise GentuneError(
                f"unknown detector {name!r}", value=name, fix="use one of: " + ", ".join(DETECTORS)
            )
        sub = getattr(self, name)
        keys = {f.name: f for f in fields(sub)}
        if key not in keys:
            raise GentuneError(
                f"detector {name!r} has no setting {key!r}", value=key, fix=f"use one of: {', '.join(keys)}"
            )
        return replace(self, **{name: replace(sub, **{key: _typed(name, key, value, getattr(sub, key))})})

    def with_overrides(self, items: list[str]) -> DetectorConfig:
        """Apply `name.key=value` strings, e.g. `stagnation.patience=6`."""
        config = self
        for item in items:
            target, eq, value = item.partition("=")
            name, dot, key = target.strip().partition(".")
            if not eq or not dot:
                raise GentuneError(
                    "a detector override must read name.key=value",
                    value=item,
                    fix="write e.g. --detector stagnation.patience=6 or "
                    "--detector mode_collapse.enabled=false",
                )
            config = config.set(name, key.strip(), value.strip())
        return config

    def only(self, names: list[str]) -> DetectorConfig:
        """A copy with exactly the detectors `names` enabled (an empty list turns all off)."""
        for name in names:
            self.set(name, "enabled", True)  # an unknown name is an error that lists the valid ones
        config = self
        for name in DETECTORS:
            config = config.set(name, "enabled", name in names)
        return config

    def enabled(self) -> list[str]:
        return [name for name in DETECTORS if getattr(self, name).enabled]


def _typed(name: str, key: str, value: Any, current: Any) -> Any:
    """`value` converted to the type of the current setting; a bad value names the fix."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    if isinstance(value, str):  # YAML reads 1e3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    kind = type(current)
    ok = (
        isinstance(value, bool)
        if kind is bool
        else isinstance(value, int) and not isinstance(value, bool)
        if kind is int
        else isinstance(value, (int, float)) and not isinstance(value, bool)
    )
    if not ok or (kind is not bool and (not math.isfinite(value) or value < 0)):
        raise GentuneError(
            f"detector setting {name}.{key} must be "
            f"{'true or false' if kind is bool else 'a number >= 0'}"
            + (" (an integer)" if kind is int else ""),
            value=value,
            fix=f"write e.g. {name}.{key}={current}",
        )
    return float(value) if kind is float else value


def load_detector_file(path: str | Path) -> DetectorConfig:
    """A YAML file of {name: {key: value}} over the defaults, e.g. `stagnation: {patience: 6}`."""
    path = Path(path)
    if not path.is_file():
        raise GentuneError(
            "the detector config file does not exist",
            value=str(path),
            fix="pass the path of a YAML file to --detector-config",
        )
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise GentuneError(
            f"{path.name} is not valid YAML: {e}", fix="check the syntax near the reported line"
        ) from None
    if doc is not None and not isinstance(doc, dict):
        raise GentuneError(
            f"{path.name} must map detector names to settings",
            value=doc,
            fix="write e.g. 'stagnation: {patience: 6}'",
        )
    return DetectorConfig.from_dict(doc)


class DetectorSet:
    """The detectors of one trial, with the state they keep between calls.

    `floor` is the evaluator's real-vs-real metrics (the reference for diversity);
    `direction` the objective's; `incumbent()` the best complete trial's value at the same N
    (None when there is none), asked only when stagnation is about to fire. Each method
    returns the first reason that fired, or None.
    """

    def __init__(
        self,
        config: DetectorConfig,
        *,
        floor: dict | None = None,
        direction: str = "minimize",
        incumbent: Callable[[], float | None] | None = None,
    ):
        self.config, self.floor, self.incumbent = config, floor or {}, incumbent
        self.sign = 1.0 if direction == "minimize" else -1.0
        self._overpowered = self._kl_low = self._collapsed = self._stale = self._steep = 0
        self._best = math.inf

    def metrics(self) -> set[str]:
        """The sample metrics the enabled detectors read at each evaluation."""
        m = self.config.mode_collapse
        if not m.enabled:
            return set()
        return {"label_entropy"} | ({"recall"} if m.recall_ratio > 0 else set())

    def on_signals(self, step: int, total: int, signals: dict[str, float]) -> str | None:
        """Check one log window of training signals."""
        c, d = self.config, self.config.diverged
        norm = signals.get("grad_norm", 0.0)
        self._steep = self._steep + 1 if norm > d.max_grad_norm else 0
        if d.enabled and (
            any(not math.isfinite(v) for v in signals.values())
            or norm > d.spike_grad_norm
            or self._steep >= d.window
        ):
            return "diverged"
        o = c.d_overpowered
        if o.enabled and "d_acc" in signals:
            beaten = signals["d_loss"] < o.max_d_loss and signals["d_acc"] > o.min_d_acc
            self._overpowered = self._overpowered + 1 if beaten else 0
            if self._overpowered >= o.window:
                return "d_overpowered"
        p = c.posterior_collapse
        if p.enabled and "kl" in signals and step >= p.after * total:
            self._kl_low = self._kl_low + 1 if signals["kl"] < p.min_kl else 0
            if self._kl_low >= p.window:
                return "posterior_collapse"
        return None

    def on_evaluation(self, step: int, total: int, metrics: dict[str, Any], value: float) -> str | None:
        """Check the metrics of one evaluation during training; `value` is the objective."""
        c = self.config
        if c.diverged.enabled and not math.isfinite(value):
            return "diverged"
        s, m = c.stagnation, c.mode_collapse
        v = self.sign * value  # smaller is better from here on
        if not math.isfinite(self._best) or v < self._best - s.min_delta * abs(self._best):
            self._best, self._stale = v, 0
        else:
            self._stale += 1
        if m.enabled and step >= m.after * total:
            self._collapsed = self._collapsed + 1 if self._low_diversity(metrics) else 0
            if self._collapsed >= m.evals and (not m.only_when_behind or self._behind()):
                return "mode_collapse"
        if s.enabled and self._stale >= s.patience and (not s.only_when_behind or self._behind()):
            return "stagnation"
        return None

    def _behind(self) -> bool:
        best = self.incumbent() if self.incumbent is not None else None
        return best is not None and math.isfinite(best) and self._best > self.sign * best

    def _low_diversity(self, metrics: dict[str, Any]) -> bool:
        m, floor = self.config.mode_collapse, self.floor or {}
        entropy, ref_entropy = metrics.get("label_entropy"), floor.get("label_entropy")
        if entropy is not None and ref_entropy and entropy < m.entropy_ratio * ref_entropy:
            return True
        recall, ref_recall = metrics.get("recall"), floor.get("recall")
        if recall is None or not ref_recall:
            return False
        return bool(recall < m.recall_ratio * ref_recall)


def detector_config(
    switch: str | None = None, file: str | Path | None = None, overrides: list[str] | None = None
) -> DetectorConfig | None:
    """The detectors the command line asks for, or None when it asks for nothing in particular.

    `switch` is `on`, `off` or a comma list of detector names to enable; `file` a YAML file
    over the defaults; `overrides` `name.key=value` strings applied last.
    """
    if switch is None and file is None and not overrides:
        return None
    config = load_detector_file(file) if file is not None else DetectorConfig()
    if switch not in (None, "on"):
        names = [] if switch == "off" else [n.strip() for n in switch.split(",") if n.strip()]
        config = config.only(names)
    return config.with_overrides(list(overrides or []))
