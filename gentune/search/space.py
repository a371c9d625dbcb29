"""Search spaces: define-by-run functions of an Optuna trial, built from plain parameter specs.

A space maps config field names to a spec (float, int, categorical) or to a fixed value, with
optional conditions (a parameter exists only when another has one of some values: Adam's
beta1 only when the optimizer is Adam or AdamW). A YAML or TOML file compiles to the same
object, so the CLI and the Python API share one code path.

>>> space = SearchSpace({"lr": FloatSpec(low=1e-4, high=1e-3, log=True), "batch_size": 64})
>>> sorted(space.names())
['batch_size', 'lr']
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from gentune.errors import GentuneError, SpaceError

Scalar = bool | int | float | str

# Points a grid study may have. Each is queued as a trial when the study starts, at a database
# transaction each, with the grid's values stored with each point (measured: 1,000 points in
# 42 s on a local disk), so 10,000 take minutes and 100,000 would take over an hour.
GRID_CAP = 10_000


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # This parameter exists only when every named parameter takes one of the listed values.
    when: dict[str, list[Scalar]] | None = None


class FloatSpec(_Spec):
    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self):
        _check_range(self.low, self.high, self.log)
        if self.step is not None and (self.log or self.step <= 0):
            raise ValueError("step must be positive and cannot be combined with log")
        return self


class IntSpec(_Spec):
    type: Literal["int"] = "int"
    low: int
    high: int
    step: int = 1
    log: bool = False

    @model_validator(mode="after")
    def _check(self):
        _check_range(self.low, self.high, self.log)
        if self.step < 1 or (self.log and self.step != 1):
            raise ValueError("step must be >= 1, and 1 when log is true")
        return self


class CategoricalSpec(_Spec):
    type: Literal["categorical"] = "categorical"
    choices: list[Scalar] = Field(min_length=1)


Spec = Annotated[FloatSpec | IntSpec | CategoricalSpec, Field(discriminator="type")]
_SPEC_ADAPTER = TypeAdapter(Spec)


def _float_steps(spec: FloatSpec) -> int:
    """Whole steps from low to high of a stepped float range (a hair of slack for rounding)."""
    assert spec.step is not None
    ratio = (spec.high - spec.low) / spec.step + 1e-9
    return int(math.floor(min(ratio, 1e18)))  # a tiny step: far above GRID_CAP, and never inf


def _check_range(low: float, high: float, log: bool) -> None:
    if not low <= high:
        raise ValueError(f"low must not exceed high (low={low}, high={high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0 (low={low})")


def _numeric(value: Any) -> Any:
    """YAML reads 1e-3 (no dot) as a string; take numeric-looking strings as numbers."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


@dataclass
class SearchSpace:
    """Parameters to tune (specs) and to hold (fixed values); `suggest` is the define-by-run form."""

    params: dict[str, Any] = field(default_factory=dict)

    def names(self) -> list[str]:
        return list(self.params)

    def tuned(self) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if isinstance(v, _Spec)}

    def fixed(self) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if not isinstance(v, _Spec)}

    def suggest(self, trial) -> dict[str, Any]:
        """Ask `trial` for every active parameter, in order; return {name: value} incl. fixed values."""
        out: dict[str, Any] = {}
        for name, spec in self.params.items():
            if not isinstance(spec, (FloatSpec, IntSpec, CategoricalSpec)):
                out[name] = spec
                continue
            if spec.when and not all(out.get(p) in vals for p, vals in spec.when.items()):
                continue
            if isinstance(spec, FloatSpec):
                out[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
            elif isinstance(spec, IntSpec):
                out[name] = trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
            else:
                out[name] = trial.suggest_categorical(name, spec.choices)
        return out

    def grid_size(self) -> int:
        """The number of points of `grid()`, counted without listing them; a SpaceError above
        GRID_CAP (every point of a grid study is queued as a trial, so listing a huge grid would
        exhaust memory long before it finished).

        >>> SearchSpace({"a": IntSpec(low=1, high=100), "b": IntSpec(low=1, high=100)}).grid_size()
        10000
        """
        counts = self._grid_counts()
        size = math.prod(counts.values())
        if size > GRID_CAP:
            raise SpaceError(
                f"this grid has {size:,} points, more than the {GRID_CAP:,} a grid study may queue",
                value={name: n for name, n in counts.items()},
                fix="narrow the ranges, raise their step or list fewer values; or search the same "
                "space with --strategy random or --strategy qmc",
            )
        return size

    def _grid_counts(self) -> dict[str, int]:
        """How many values each tuned parameter takes in the grid."""
        counts: dict[str, int] = {}
        for name, spec in self.tuned().items():
            if spec.when:
                raise SpaceError(
                    f"grid search needs an unconditional space, but {name!r} has a 'when' condition",
                    value=spec.when,
                    fix="drop the condition or use --strategy random/tpe",
                )
            if isinstance(spec, CategoricalSpec):
                counts[name] = len(spec.choices)
            elif isinstance(spec, IntSpec) and not spec.log:
                counts[name] = len(range(spec.low, spec.high + 1, spec.step))
            elif isinstance(spec, FloatSpec) and spec.step is not None:
                counts[name] = _float_steps(spec) + 1
            else:
                raise SpaceError(
                    f"grid search needs a finite set of values for {name!r}, but it is a continuous range",
                    value=spec.model_dump(exclude_none=True),
                    fix=f"give it as a list of values, e.g. {name}: [1.0e-3, 5.0e-4, 1.0e-4]",
                )
        if not counts:
            raise SpaceError(
                "grid search needs at least one parameter to vary",
                value=self.fixed(),
                fix="list values for at least one parameter in --space",
            )
        return counts

    def grid(self) -> dict[str, list]:
        """The finite product for grid search; continuous parameters have no grid."""
        self.grid_size()  # refuses a grid too large to list before listing it
        grid: dict[str, list] = {}
        for name, spec in self.tuned().items():
            if isinstance(spec, CategoricalSpec):
                grid[name] = list(spec.choices)
            elif isinstance(spec, IntSpec):
                grid[name] = list(range(spec.low, spec.high + 1, spec.step))
            else:
                assert isinstance(spec, FloatSpec) and spec.step is not None  # checked by grid_size
                grid[name] = [spec.low + i * spec.step for i in range(_float_steps(spec) + 1)]
        return grid

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, stored with the study (so a worker needs no file)."""
        return {
            k: v.model_dump(exclude_none=True) if isinstance(v, _Spec) else v for k, v in self.params.items()
        }

    @classmethod
    def from_dict(
        cls, params: dict[str, Any], *, validate_value: Callable | None = None, where: str = "space"
    ) -> SearchSpace:
        """Parse {name: spec-dict | list-of-values | scalar}. Errors name the field."""
        out: dict[str, Any] = {}
        for name, raw in params.items():
            out[name] = _parse_param(name, raw, where)
        space = cls(out)
        if validate_value is not None:
            for name, spec in out.items():
                for value in _example_values(spec):
                    validate_value(name, value, f"{where}.{name}")
        return space


def _parse_param(name: str, raw: Any, where: str) -> Any:
    if isinstance(raw, list):  # a bare list of values: categorical (the tutorial's grid)
        raw = {"type": "categorical", "choices": raw}
    if not isinstance(raw, dict):
        return _numeric(raw)
    raw = dict(raw)
    if "values" in raw:  # synonym that reads well in grid files
        raw["choices"] = raw.pop("values")
        raw.setdefault("type", "categorical")
    raw.setdefault("type", "categorical" if "choices" in raw else "float")
    for key in ("low", "high", "step"):
        if key in raw:
            raw[key] = _numeric(raw[key])
    if "choices" in raw and isinstance(raw["choices"], list):
        raw["choices"] = [_numeric(c) for c in raw["choices"]]
    try:
        return _SPEC_ADAPTER.validate_python(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"] if p not in ("float", "int", "categorical"))
            problems.append(f"{where}.{name}" + (f".{loc}" if loc else "") + f": {err['msg']}")
        raise SpaceError(
            "invalid search space field " + "; ".join(problems),
            value=raw,
            fix="write e.g. {type: float, low: 1.0e-5, high: 1.0e-2, log: true}, "
            "{type: int, low: 32, high: 128, step: 32} or "
            "{type: categorical, choices: [adam, sgd]}",
        ) from None


def _example_values(spec: Any) -> list:
    if isinstance(spec, CategoricalSpec):
        return list(spec.choices)
    if isinstance(spec, (FloatSpec, IntSpec)):
        return [spec.low, spec.high]
    return [spec]


def load_space_file(
    path: str | Path, default: SearchSpace, *, validate_value: Callable | None = None
) -> SearchSpace:
    """Read a YAML or TOML space file and merge it with `default`.

    The file has `mode` (`narrow`, the default: its params override the default space and the
    rest stays; `replace`: only its params are tuned, every other field keeps the config
    default) and `params` ({name: spec}).
    """
    path = Path(path)
    if not path.is_file():
        raise SpaceError(
            "the search-space file does not exist",
            value=str(path),
            fix="pass the path of a .yaml, .yml or .toml file to --space",
        )
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            doc = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
        else:
            raise SpaceError(
                "a search-space file must end in .yaml, .yml or .toml", value=path.name, fix="rename the file"
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise SpaceError(
            f"{path.name} is not valid {path.suffix[1:].upper()}: {e}",
            fix="check the syntax near the reported line",
        ) from None
    except _DuplicateKey as e:
        lines = f"lines {e.first} and {e.again}" if e.first != e.again else f"line {e.first}"
        raise SpaceError(
            f"{path.name} gives the key {e.key!r} twice in one table ({lines}); YAML would keep "
            "the last one silently",
            value=e.key,
            fix="keep one of them",
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict):
        raise SpaceError(
            f"{path.name} must have a 'params' table mapping names to specs",
            value=doc if not isinstance(doc, dict) else list(doc),
            fix="start the file with 'params:' (YAML) or '[params]' (TOML)",
        )
    unknown = set(doc) - {"mode", "params"}
    if unknown:
        raise SpaceError(
            f"{path.name} has unknown top-level keys",
            value=sorted(unknown),
            fix="use only 'mode' and 'params'",
        )
    mode = doc.get("mode", "narrow")
    if mode not in ("narrow", "replace"):
        raise SpaceError(
            f"{path.name}: mode must be 'narrow' or 'replace'",
            value=mode,
            fix="narrow keeps the default space for parameters not listed; "
            "replace tunes only the listed ones",
        )
    user = SearchSpace.from_dict(doc["params"], validate_value=validate_value, where="params")
    space = user if mode == "replace" else SearchSpace({**default.params, **user.params})
    check_conditions(space, f"{path.name}: params", only=user.params)
    return space


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, again: int):
        self.key, self.first, self.again = key, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key, line = loader.construct_object(key_node, deep=True), key_node.start_mark.line + 1
        try:
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        except TypeError:  # an unhashable key: construct_mapping says so
            continue
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def check_conditions(space: SearchSpace, where: str = "space", only: Iterable[str] | None = None) -> None:
    """Refuse a `when` no trial can meet: its parameter would never be tuned.

    Each parameter a condition names must come earlier in the space (parameters are drawn in
    order) and be able to take one of the listed values. `only` limits the check to the
    conditions of those parameters (a file's own: narrowing the optimizer to SGD may leave
    the default space's beta1 untuned, as meant).

    >>> check_conditions(SearchSpace({"opt": CategoricalSpec(choices=["sgd"]),
    ...                               "beta1": FloatSpec(low=0, high=0.9, when={"opt": ["adam"]})}))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    gentune.errors.SpaceError: space.beta1.when.opt: opt never takes one of these values, ...
    """
    names = list(space.params)
    checked = set(names if only is None else only)
    for i, (name, spec) in enumerate(space.params.items()):
        if name not in checked or not isinstance(spec, _Spec) or not spec.when:
            continue
        for other, values in spec.when.items():
            field = f"{where}.{name}.when.{other}"
            if other not in space.params:
                raise SpaceError(
                    f"{field}: {name} depends on {other}, which is not in the space, so {name} "
                    "would never be tuned",
                    value=other,
                    fix=f"add {other} to params, or drop the condition",
                )
            if names.index(other) > i:
                raise SpaceError(
                    f"{field}: {other} comes after {name} in the space, so it has no value yet when "
                    f"{name} is drawn and {name} would never be tuned",
                    value=names,
                    fix=f"list {other} before {name}",
                )
            target = space.params[other]
            if not any(_can_take(target, v) for v in values):
                raise SpaceError(
                    f"{field}: {other} never takes one of these values, so {name} would never be tuned",
                    value=list(values),
                    fix=f"use values {other} can take: {_takes(target)}",
                )


def _can_take(spec: Any, value: Any) -> bool:
    if isinstance(spec, CategoricalSpec):
        return value in spec.choices
    if isinstance(spec, IntSpec):
        return (
            isinstance(value, int) and spec.low <= value <= spec.high and (value - spec.low) % spec.step == 0
        )
    if isinstance(spec, FloatSpec):
        return isinstance(value, (int, float)) and spec.low <= value <= spec.high
    return bool(value == spec)


def _takes(spec: Any) -> Any:
    if isinstance(spec, CategoricalSpec):
        return list(spec.choices)
    if isinstance(spec, (IntSpec, FloatSpec)):
        return f"{spec.low} to {spec.high}"
    return [spec]


def check_field(valid: set[str], make: Callable[[dict], Any]) -> Callable[[str, Any, str], None]:
    """A value validator: the name must be a config field, and the value must build a config."""

    def validate(name: str, value: Any, where: str) -> None:
        if name not in valid:
            raise SpaceError(
                f"unknown parameter {where}",
                value=name,
                fix="use one of the config fields: " + ", ".join(sorted(valid)),
            )
        try:
            make({name: value})
        except GentuneError as e:
            raise SpaceError(f"invalid value for {where}: {e.rule}", value=value, fix=e.fix) from None

    return validate
