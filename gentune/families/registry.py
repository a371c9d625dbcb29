"""The built-in families by name, and the families a user names: `get_family`, `load_family`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from gentune.errors import GentuneError, unknown_choice
from gentune.families.auto import AutoFamily
from gentune.families.base import Family
from gentune.families.diffusion import Diffusion
from gentune.families.gan import DCGAN, GanMlp
from gentune.families.transformer import Transformer
from gentune.families.vae import VAE
from gentune.search.space import SearchSpace

BUILTIN_FAMILIES: dict[str, type[Family]] = {
    "gan-mlp": GanMlp,
    "dcgan": DCGAN,
    "vae": VAE,
    "transformer": Transformer,
    "diffusion": Diffusion,
}
BUILTIN = tuple(BUILTIN_FAMILIES)
MODELS = BUILTIN + ("auto",)
# What a family must define; everything else has a default in Family.
REQUIRED = ("name", "config_cls", "default_space", "loop", "sample")


def builtin_for(kind: str) -> list[str]:
    """The built-in families that model `kind` data."""
    return [n for n, cls in BUILTIN_FAMILIES.items() if kind in cls.data_kinds]


def get_family(name: str, kind: str = "image", *, sha256: str | None = None) -> Family:
    """The family `name`: a built-in one, "auto" (all built-ins that model `kind` data), or a
    user's class given as "pkg.module:Class" or "FILE.py:Class" (run only if its content has
    the hash `sha256`, when given: gentune.loading).

    >>> get_family("vae").name, sorted(get_family("auto", "text").members)
    ('vae', ['transformer'])
    """
    if name == "auto":
        return AutoFamily(kind, {n: BUILTIN_FAMILIES[n]() for n in builtin_for(kind)})
    if name in BUILTIN_FAMILIES:
        return BUILTIN_FAMILIES[name]()
    if ":" in name:
        return load_family(name, sha256=sha256)
    raise unknown_choice("model", name, MODELS + ("pkg.module:Class", "FILE.py:Class"))


def missing_parts(cls: type) -> list[str]:
    """The parts of REQUIRED that the Family subclass `cls` does not define."""
    abstract: frozenset[str] = getattr(cls, "__abstractmethods__", frozenset())
    return [p for p in REQUIRED if p in abstract or not getattr(cls, p, None)]


def check_contract(obj: Any, where: str) -> type[Family]:
    """The Family subclass `obj` is (or is an instance of); a GentuneError naming the rule, the
    value and the fix when it does not subclass Family or lacks a required part."""
    cls = obj if inspect.isclass(obj) else type(obj)
    if not issubclass(cls, Family):
        raise GentuneError(
            f"{where} is not a gentune family: a family must subclass gentune.families.Family",
            value=f"{cls.__module__}.{cls.__qualname__}",
            fix=f"write `class {cls.__name__}(gentune.families.Family)` with name, config_cls, "
            "default_space, loop and sample (docs/families.md)",
        )
    missing = missing_parts(cls)
    if missing:
        raise GentuneError(
            f"{where} does not follow the family contract: it lacks {', '.join(missing)}",
            value=f"{cls.__module__}.{cls.__qualname__}",
            fix="define those parts of gentune.families.Family (docs/families.md)",
        )
    return cls


def load_family(spec: str, *, sha256: str | None = None) -> Family:
    """A user's family from "pkg.module:Class" or "FILE.py:Class" (a class or an instance),
    checked against the contract (`check_contract`); a FILE.py only with the hash `sha256`."""
    from gentune.loading import load_object

    obj = load_object(spec, "model family", sha256=sha256)
    cls = check_contract(obj, spec)
    return obj if isinstance(obj, Family) else cls()


def check_data(family: Family, kind: str, dataset: str = "") -> None:
    """family.check_data, with the built-in families that model `kind` data as the fix."""
    family.check_data(kind, dataset, builtin_for(kind))


def portable_model(model: str) -> str:
    """A user's FILE.py:Class with an absolute path, so workers started elsewhere find it."""
    target, sep, name = model.rpartition(":")
    return f"{Path(target).resolve()}:{name}" if sep and target.endswith(".py") else model


def default_space(family: Family, kind: str) -> SearchSpace:
    """family.default_space(kind), or default_space() for a user's family that takes no kind."""
    params = inspect.signature(family.default_space).parameters
    return family.default_space(kind) if params else family.default_space()
