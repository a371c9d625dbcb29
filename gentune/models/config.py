"""The base of every family's config: a frozen dataclass validated from a few declared lists."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from gentune.errors import GentuneError, unknown_choice

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


@dataclass(frozen=True)
class ConfigBase:
    """A frozen config whose fields are validated from a few declared lists.

    Subclasses list their fields in `_POSITIVE_INTS` (int >= 1), `_NONNEG_INTS` (int >= 0),
    `_POSITIVE` (finite float > 0), `_NONNEG` (finite float >= 0), `_UNIT` ([0, 1)),
    `_FRACTION` ([0, 1]) and `_CHOICES` ({field: allowed values}); `check()` adds the rest.
    """

    # ClassVar: class constants, not dataclass fields.
    _POSITIVE_INTS: ClassVar[tuple[str, ...]] = ()
    _NONNEG_INTS: ClassVar[tuple[str, ...]] = ()
    _POSITIVE: ClassVar[tuple[str, ...]] = ()
    _NONNEG: ClassVar[tuple[str, ...]] = ()
    _UNIT: ClassVar[tuple[str, ...]] = ()
    _FRACTION: ClassVar[tuple[str, ...]] = ()
    _CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def __post_init__(self):
        # Optuna and YAML hand over ints for float fields; store floats so to_dict round-trips.
        for name in (*self._POSITIVE, *self._NONNEG, *self._UNIT, *self._FRACTION):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        self.validate()

    def validate(self) -> None:
        """Raise GentuneError naming the field, its value and the fix for the first bad value."""
        cls = type(self).__name__
        defaults = {f.name: f.default for f in fields(self)}
        for name in (*self._POSITIVE_INTS, *self._NONNEG_INTS):
            value, low = getattr(self, name), 1 if name in self._POSITIVE_INTS else 0
            if not _is_int(value) or value < low:
                raise GentuneError(
                    f"{cls}.{name} must be an integer >= {low}",
                    value=value,
                    fix=f"set {name} to e.g. {defaults[name]}",
                )
        for names, ok, rule in (
            (self._POSITIVE, lambda v: v > 0, "a finite number > 0"),
            (self._NONNEG, lambda v: v >= 0, "a finite number >= 0"),
            (self._UNIT, lambda v: 0 <= v < 1, "a number in [0, 1)"),
            (self._FRACTION, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        ):
            for name in names:
                value = getattr(self, name)
                if value is None and defaults[name] is None:
                    continue  # optional field left unset
                if not _is_number(value) or not math.isfinite(value) or not ok(value):
                    raise GentuneError(
                        f"{cls}.{name} must be {rule}",
                        value=value,
                        fix=f"set {name} to e.g. {defaults[name]}",
                    )
        for name, choices in self._CHOICES.items():
            if getattr(self, name) not in choices:
                raise unknown_choice(f"{cls}.{name}", getattr(self, name), choices)
        self.check()

    def check(self) -> None:
        """Rules between fields; subclasses override."""

    def to_dict(self) -> dict:
        """Plain dict of all fields, suitable for JSON/YAML and for `from_dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Build a config from a dict; unknown keys are an error (a typo must not pass silently)."""
        valid = [f.name for f in fields(cls)]
        if not isinstance(d, dict):
            raise GentuneError(
                f"a {cls.__name__} must be given as a mapping of field to value",
                value=type(d).__name__,
                fix=f"pass a dict with keys from: {', '.join(valid)}",
            )
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise GentuneError(
                f"unknown {cls.__name__} field(s) {', '.join(map(repr, unknown))}",
                fix=f"use only these fields: {', '.join(valid)}",
            )
        return cls(**d)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
