"""`--model auto`: one search across families, with the family as a categorical parameter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gentune.errors import GentuneError, unknown_choice
from gentune.families.base import Family
from gentune.search.space import CategoricalSpec, SearchSpace
from gentune.train.loop import Loop


class AutoFamily(Family):
    """One search across families: `model` is a categorical parameter and each family's
    parameters exist only under it, prefixed by its name ("vae.lr"), so TPE learns per family.

    A trial trains the family `pick` finds in its parameters; `loop` hands a config to the
    member whose config class it is.
    """

    name = "auto"
    data_kinds = ("image", "text")

    def __init__(self, kind: str, members: Mapping[str, Family]):
        self.kind = kind
        self.members = dict(members)  # the families that model `kind` data, by name
        # One N for every family, so that the pruner compares values measured alike.
        given = [f.eval_samples for f in self.members.values() if f.eval_samples]
        self.eval_samples = min(given) if given else None

    def default_space(self, kind: str = "image") -> SearchSpace:
        members: list[Any] = [n for n, f in self.members.items() if kind in f.data_kinds]
        params: dict[str, Any] = {"model": CategoricalSpec(choices=members)}
        for name in members:
            for key, spec in self.members[name].default_space(kind).params.items():
                params[f"{name}.{key}"] = _prefixed(spec, name)
        return SearchSpace(params)

    def loop(
        self,
        config: Any,
        data: Any,
        *,
        steps: int | None = None,
        epochs: float | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> Loop:
        owner = next((f for f in self.members.values() if type(config) is f.config_cls), None)
        if owner is None:
            raise GentuneError(
                "an auto search trains a config of one of its families",
                value=type(config).__name__,
                fix=f"pass a config of {', '.join(self.members)} (auto.member(name).config_cls)",
            )
        return owner.loop(config, data, steps=steps, epochs=epochs, seed=seed, device=device)

    def sample(self, model: Any, n: int, *, seed: int = 0, device: str = "cpu") -> Any:
        raise GentuneError(
            "an auto search samples through the family that trained the model",
            value=type(model).__name__,
            fix="use auto.member(trial.user_attrs['family']).sample(model, n)",
        )

    def pick(self, params: dict[str, Any]) -> tuple[Family, dict[str, Any]]:
        name = params.get("model")
        if name not in self.members:
            raise unknown_choice("model in an auto search", str(name), self.members)
        prefix = name + "."
        return self.members[name], {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}

    def member(self, name: str | None) -> Family:
        if name not in self.members:
            raise unknown_choice("model in an auto search", str(name), self.members)
        return self.members[name]

    def objectives(self) -> tuple[str, ...]:
        # Each family's training loss and likelihood mean different things: only sample
        # metrics compare families (on text, where only the Transformer applies, its NLL).
        return ("nll",) if self.kind == "text" else ("fid", "kid")


def _prefixed(spec: Any, family: str) -> Any:
    if not hasattr(spec, "when"):
        return spec  # a fixed value
    when = spec.when or {}
    return spec.model_copy(
        update={"when": {"model": [family], **{f"{family}.{k}": v for k, v in when.items()}}}
    )
