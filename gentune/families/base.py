"""The contract between a model family and gentune: the abstract class `Family`.

A family is one kind of generative model that gentune can tune. Three parts are abstract:
`default_space` (what to tune), `loop` (one training run, as a step and a measurement that the
one loop runs) and `sample`. Everything else has a default that a family may override. The
objective (gentune.trial.objective) uses nothing else, so a built-in family and a user's are
tuned and scored the same way. See docs/families.md.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from gentune.device import resolve_device
from gentune.errors import GentuneError
from gentune.search.space import SearchSpace
from gentune.train.callback import Callback
from gentune.train.checkpoint import read_model, save_model
from gentune.train.loop import Loop, TrainResult, fit

IMAGE_OBJECTIVES = ("fid", "kid", "loss")
OBJECTIVES = IMAGE_OBJECTIVES + ("nll",)  # every objective some family applies to


class Family(abc.ABC):
    """A model family: a config class, a default search space, a training loop and a sampler.

    Subclass it, set `name` and `config_cls`, and write the three abstract methods:
    `default_space`, `loop` and `sample`. The rest has defaults: `train` runs `loop` on the one
    loop, `evaluate` measures nothing, `save` / `load` write and read a
    `gentune-model-checkpoint/1` file through `build_model` and `model_meta`.
    `gentune.testing.check_family` checks a family against this contract.
    """

    # Short name: the trial attribute `family`, the study's name, checkpoints. Required.
    name: ClassVar[str]
    # A frozen dataclass with to_dict() and from_dict(dict); from_dict raises GentuneError for
    # unknown keys or bad values (gentune.models.config.ConfigBase gives both). Required.
    config_cls: ClassVar[type[Any]]
    data_kinds: ClassVar[tuple[str, ...]] = ("image",)  # "image" (ImageDataset), "text" (TextDataset)
    main_loss: ClassVar[str] = "loss"  # the key of result.losses that --objective loss minimises
    likelihood: ClassVar[bool] = False  # evaluate() returns "nll", so --objective nll applies
    default_steps: ClassVar[dict[str, int]] = {}  # training steps per dataset when the user gives none
    # The steps of a trial whose study stored none, where a family's default changed since: a
    # new study stores its steps (settings.resolve_settings), an older one may not.
    unstored_steps: ClassVar[dict[str, int]] = {}
    # N of the evaluations during training when the user gives none (None: the monitor's
    # default); a family whose sampling is slow sets a smaller one.
    eval_samples: int | None = None
    # Whether K configs of this family can train in lockstep (gentune.train.population): its
    # loop's model is the generator and its extras["discriminator"] the discriminator, trained by
    # gentune.train.gan's losses. Families that cannot keep the one-at-a-time path.
    population: ClassVar[bool] = False

    @abc.abstractmethod
    def default_space(self, kind: str = "image") -> SearchSpace:
        """The search space used when the user gives none.

        Args:
            kind: the data's kind, "image" or "text".

        Returns:
            The parameters to tune, named as `config_cls`'s fields (gentune.search.space:
            FloatSpec, IntSpec, CategoricalSpec, `when=` conditions, or fixed values).
        """

    @abc.abstractmethod
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
        """One training run of `config` on `data`, set up for the one loop to run.

        Build the model and its optimizer under `seed` (the same seed must give the same run),
        turn the budget into a number of steps (`gentune.train.loop.check_budget`) and return a
        `gentune.train.loop.Loop` whose `step(i)` does optimiser step i and returns a 1-d tensor
        of training signals (the main loss first), and whose `measure()` returns the
        (train, validation) loss on fixed slices of each, measured the same way.

        Write the step's losses as functions of (parameters, buffers, batch), evaluated with
        `torch.func.functional_call` on the model's own parameters, and keep the optimizer
        update outside them: one model then gives exactly the numbers of calling the module,
        and a population trainer can stack K members (`torch.func.stack_module_state`) and map
        the same functions over them (`torch.func.vmap`), with per-member hyperparameters as
        tensors. `gentune.train.gan.GANLosses` is the example.

        Args:
            config: an instance of `config_cls`.
            data: an ImageDataset (`.train.x`, `.val.x`: (N, C, H, W) in [-1, 1]) or, for a
                family that models text, a TextDataset (`kind == "text"`).
            steps: optimiser steps; exactly one of `steps` and `epochs` is given.
            epochs: passes over the training data.
            seed: seeds the initial weights, the batches and any noise.
            device: where to train ("cpu", "cuda", "cuda:1", "mps", "auto").

        Returns:
            The Loop; its `model` is what `sample` takes, and the result's `model`.
        """

    @abc.abstractmethod
    def sample(self, model: Any, n: int, *, seed: int = 0, device: str = "cpu") -> Any:
        """Draw `n` samples from a trained model.

        Args:
            model: `loop(...).model`, or `load(...)`'s model.
            n: how many samples.
            seed: the same seed gives the same samples.
            device: where to run the model; the samples come back on the CPU.

        Returns:
            Images (n, C, H, W), float32 in [-1, 1], the data's shape; for text, n strings.
        """

    def train(
        self,
        config: Any,
        data: Any,
        *,
        steps: int | None = None,
        epochs: float | None = None,
        seed: int = 0,
        device: str = "cpu",
        callback: Callback | None = None,
        max_seconds: float | None = None,
        log_every: int | None = None,
    ) -> TrainResult:
        """Train `config` on `data`: `loop(...)` run by the one loop (gentune.train.loop.fit).

        Args:
            config, data, steps, epochs, seed, device: as for `loop`.
            callback: called `callback(step, total, signals, model)` every log step; it may
                raise (e.g. optuna.TrialPruned) to stop, and the exception propagates.
            max_seconds: stop after this much wall time (stop_reason "max_seconds").
            log_every: steps between log steps; None: the loop's own.

        Returns:
            A TrainResult: `.model` (in eval mode), `.losses`, `.curves`, `.history`,
            `.steps`, `.epochs`, `.seconds`, `.diverged`, `.stop_reason`.
        """
        t0 = time.perf_counter()
        loop = self.loop(config, data, steps=steps, epochs=epochs, seed=seed, device=device)
        return fit(loop, callback=callback, max_seconds=max_seconds, log_every=log_every, t0=t0)

    def evaluate(self, model: Any, data: Any, *, device: str = "cpu", final: bool = True) -> dict[str, float]:
        """Held-out metrics the family computes itself (likelihoods), merged into the trial's
        metrics. Default: none.

        Args:
            model: a trained model.
            data: the dataset; use its validation split, never the test split.
            device: where to run the model.
            final: False for the cheaper evaluations during training.

        Returns:
            {name: float}; with `likelihood = True` it holds "nll".
        """
        return {}

    def build_model(self, config: Any, meta: dict[str, Any]) -> torch.nn.Module:
        """A fresh model of `config` for `meta`, whose weights `load` then fills in.

        Args:
            config: an instance of `config_cls`.
            meta: `model_meta`'s output for the saved model.

        Returns:
            The model, with the saved model's parameter and buffer names and shapes.
        """
        raise GentuneError(
            f"the {self.name} family cannot rebuild a model from a checkpoint",
            value=self.name,
            fix="give the family a build_model(config, meta) method (docs/families.md)",
        )

    def model_meta(self, model: Any) -> dict[str, Any]:
        """Plain values that, with the config, rebuild `model` (image shape, vocabulary, ...).
        Default: `model.meta`."""
        return dict(getattr(model, "meta", {}))

    def save(self, path: str | Path, config: Any, model: torch.nn.Module, extra: dict | None = None) -> Path:
        """Write config, `model_meta(model)`, weights and `extra` (plain values) to `path`
        atomically, as `gentune-model-checkpoint/1`.

        Returns:
            The path written.
        """
        return save_model(path, self.name, config, model, self.model_meta(model), extra)

    def upgrade_checkpoint(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint payload of an older format, converted to `gentune-model-checkpoint/1`'s
        (format, family, config, meta, state, extra). Default: unchanged."""
        return payload

    def load(self, path: str | Path, device: str = "cpu") -> tuple[Any, torch.nn.Module, dict[str, Any]]:
        """Read a checkpoint that `save` wrote.

        Returns:
            (config, model in eval mode on `device`, {"meta", "extra"}).
        """
        payload = read_model(path, self.name, self.upgrade_checkpoint)
        config = self.config_cls.from_dict(payload["config"])
        model = self.build_model(config, payload["meta"])
        try:
            model.load_state_dict(payload["state"])
        except RuntimeError as e:
            raise GentuneError(
                "checkpoint weights do not match its config", value=str(path), fix="delete it and train again"
            ) from e
        return (
            config,
            model.to(resolve_device(device)).eval(),
            {"meta": payload["meta"], "extra": payload["extra"]},
        )

    def pick(self, params: dict[str, Any]) -> tuple[Family, dict[str, Any]]:
        """The family a trial's parameters belong to, and its own parameters. Default: this
        family and all of them (AutoFamily splits)."""
        return self, params

    def member(self, name: str | None) -> Family:
        """The family called `name` in this search (a queued --confirm re-run names its own).
        Default: this family."""
        return self

    def check_data(self, kind: str, dataset: str = "", alternatives: Sequence[str] = ()) -> None:
        """Raise GentuneError when this family cannot model data of `kind`.

        Args:
            kind: "image" or "text".
            dataset: the dataset's name, for the message.
            alternatives: families that can, suggested in the fix
                (gentune.families.registry.check_data passes the built-in ones).
        """
        if kind in self.data_kinds:
            return
        fix = f"for {kind} use --model {' or '.join(alternatives)}" if alternatives else None
        raise GentuneError(
            f"the {self.name} family models {' and '.join(self.data_kinds)} data, "
            f"but dataset {dataset or kind!r} is {kind}",
            value=self.name,
            fix=fix or f"for {kind} use a family that models {kind} data",
        )

    def population_key(self, config: Any) -> tuple:
        """What members of one population must share: the family and every config field but
        the hyperparameters a population holds per member (lr, lr_d, betas, momentum, weight
        decay). Configs with equal keys can train in one population.

        >>> from gentune.families import get_family
        >>> gan = get_family("gan-mlp")
        >>> C = gan.config_cls
        >>> gan.population_key(C(lr=1e-3)) == gan.population_key(C(lr=1e-4, beta1=0.5))
        True
        >>> gan.population_key(C(width=64)) == gan.population_key(C(width=128))
        False
        """
        from gentune.train.population import SETTABLE

        fields = config.to_dict()
        return (self.name,) + tuple((k, fields[k]) for k in sorted(fields) if k not in SETTABLE)

    def objectives(self) -> tuple[str, ...]:
        """The --objective values that apply: sample metrics on images, nll for a likelihood
        family, and the family's main training loss."""
        if "image" not in self.data_kinds:
            return ("nll", "loss")
        return IMAGE_OBJECTIVES + (("nll",) if self.likelihood else ())


def image_meta(model: Any) -> dict[str, Any]:
    """`model_meta` of an image model that knows its `image_shape`."""
    return {"image_shape": [int(s) for s in model.image_shape]}


def data_kind(data: Any) -> str:
    """ "text" for a TextDataset, "image" for an ImageDataset."""
    return getattr(data, "kind", "image")
