"""Model families: a config class, a default search space, a trainer, a sampler, a checkpoint.

Every family is a subclass of `Family` (the contract, written down in docs/families.md), and the
objective uses nothing else, so a user's family passed as `--model pkg.module:Class` or
`--model FILE.py:Class` is tuned and scored exactly like a built-in one. `--model auto` searches
across the built-in families at once (`AutoFamily`).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import torch

from gentune.errors import GentuneError, unknown_choice
from gentune.models.dcgan import DCGANConfig
from gentune.models.diffusion import DiffusionConfig
from gentune.models.gan_mlp import GANConfig
from gentune.models.transformer import TransformerConfig
from gentune.models.vae import VAEConfig
from gentune.search.space import CategoricalSpec, SearchSpace

IMAGE_OBJECTIVES = ("fid", "kid", "loss")


class Family:
    """The contract between a model family and gentune; subclass it and fill in the blanks.

    Required: `name`, `config_cls` (a frozen dataclass with to_dict / from_dict that validates
    itself), `default_space`, `train` and `sample`. `evaluate`, `build_model` (for checkpoints)
    and the class attributes have defaults.
    """

    name: str = ""
    config_cls: type = type(None)
    data_kinds: tuple[str, ...] = ("image",)  # "image" (ImageDataset), "text" (TextDataset)
    main_loss: str = "loss"  # the key of result.losses that --objective loss minimises
    likelihood: bool = False  # evaluate() returns "nll", so --objective nll applies
    default_steps: dict[str, int] = {}  # training steps per dataset when the user gives none
    # N of the evaluations during training when the user gives none (None: the monitor's
    # default); a family whose sampling is slow sets a smaller one.
    eval_samples: int | None = None

    def default_space(self, kind: str = "image") -> SearchSpace:
        """The search space used when the user gives none; `kind` is the data's kind."""
        raise NotImplementedError

    def train(
        self,
        config,
        data,
        *,
        steps: int | None = None,
        epochs: float | None = None,
        seed: int = 0,
        device: str = "cpu",
        callback=None,
        max_seconds: float | None = None,
    ):
        """Train and return a result with .model, .losses, .curves, .history, .steps, .seconds,
        .diverged (gentune.train.loop.TrainResult has them all)."""
        raise NotImplementedError

    def sample(self, model, n: int, *, seed: int = 0, device: str = "cpu"):
        """n images (n, C, H, W) in [-1, 1] on the CPU; for text, n strings."""
        raise NotImplementedError

    def evaluate(self, model, data, *, device: str = "cpu", final: bool = True) -> dict:
        """Held-out metrics the family can compute itself (likelihoods); merged into the trial's metrics."""
        return {}

    def build_model(self, config, meta: dict) -> torch.nn.Module:
        """A fresh model of `config` for `meta` (model_meta's output); used to load checkpoints."""
        raise NotImplementedError(f"family {self.name!r} does not rebuild models from checkpoints")

    def model_meta(self, model) -> dict:
        """Plain values that, with the config, rebuild `model` (image shape, vocabulary, ...)."""
        return dict(getattr(model, "meta", {}))

    def save(self, path, config, model, extra: dict | None = None) -> Path:
        from gentune.train.checkpoint import save_model

        return save_model(path, self.name, config, model, self.model_meta(model), extra)

    def load(self, path, device: str = "cpu") -> tuple[Any, torch.nn.Module, dict]:
        """(config, model in eval mode on `device`, {"meta", "extra"}) from `save`'s file."""
        from gentune.device import resolve_device
        from gentune.train.checkpoint import read_model

        payload = read_model(path, self.name)
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

    def pick(self, params: dict) -> tuple[Family, dict]:
        """The family a trial's parameters belong to, and its own parameters (AutoFamily splits)."""
        return self, params

    def member(self, name: str | None) -> Family:
        """The family called `name` in this search (a queued --confirm re-run names its own)."""
        return self

    def check_data(self, kind: str, dataset: str = "") -> None:
        """A GentuneError when this family cannot model data of `kind`."""
        if kind not in self.data_kinds:
            others = [n for n in BUILTIN if kind in _REGISTRY[n].data_kinds]
            raise GentuneError(
                f"the {self.name} family models {' and '.join(self.data_kinds)} data, "
                f"but dataset {dataset or kind!r} is {kind}",
                value=self.name,
                fix=f"for {kind} use --model {' or '.join(others) or '(none yet)'}",
            )

    def objectives(self) -> tuple[str, ...]:
        if "image" not in self.data_kinds:
            return ("nll", "loss")
        return IMAGE_OBJECTIVES + (("nll",) if self.likelihood else ())


def _image_meta(model) -> dict:
    return {"image_shape": [int(s) for s in model.image_shape]}


class GanMlp(Family):
    """The tutorial's MLP GAN."""

    name, main_loss = "gan-mlp", "g"

    config_cls = GANConfig

    def default_space(self, kind="image"):
        from gentune.search.defaults import gan_mlp_space

        return gan_mlp_space()

    def train(self, config, data, **kw):
        from gentune.train.gan import train_gan

        return train_gan(config, data, **kw)

    def sample(self, model, n, *, seed=0, device="cpu"):
        from gentune.train.gan import sample

        return sample(model, n, seed=seed, device=device)

    def model_meta(self, model):
        return _image_meta(model)

    def save(self, path, config, model, extra=None):
        from gentune.train.checkpoint import save_checkpoint  # the GAN's own format, readable before families

        return save_checkpoint(path, config, model, model.image_shape, extra)

    def load(self, path, device="cpu"):
        from gentune.train.checkpoint import load_checkpoint

        config, generator, info = load_checkpoint(path, device)
        return config, generator, {"meta": {"image_shape": list(info["image_shape"])}, "extra": info["extra"]}


class DCGAN(GanMlp):
    """A small convolutional GAN, trained by the same loop as the MLP GAN."""

    name = "dcgan"
    default_steps = {"digits": 1000, "mnist": 4000}

    config_cls = DCGANConfig

    def default_space(self, kind="image"):
        from gentune.search.defaults import dcgan_space

        return dcgan_space()

    def train(self, config, data, **kw):
        from gentune.models.dcgan import build
        from gentune.train.gan import train_gan

        return train_gan(config, data, builder=build, **kw)

    def build_model(self, config, meta):
        from gentune.models.dcgan import Generator

        return Generator(config, meta["image_shape"])

    save, load = Family.save, Family.load


class _ModuleFamily(Family):
    """A family whose code follows gentune's layout: gentune.train.<module> holds
    train_<module>, sample and evaluate; gentune.models.<module> holds build(config, image_shape);
    gentune.search.defaults holds <module>_space()."""

    module = ""

    def _trainer(self):
        return importlib.import_module(f"gentune.train.{self.module}")

    def default_space(self, kind="image"):
        from gentune.search import defaults

        return getattr(defaults, f"{self.module}_space")()

    def train(self, config, data, **kw):
        return getattr(self._trainer(), f"train_{self.module}")(config, data, **kw)

    def sample(self, model, n, *, seed=0, device="cpu"):
        return self._trainer().sample(model, n, seed=seed, device=device)

    def evaluate(self, model, data, *, device="cpu", final=True):
        return self._trainer().evaluate(model, data, device=device, final=final)

    def build_model(self, config, meta):
        models = importlib.import_module(f"gentune.models.{self.module}")
        return models.build(config, meta["image_shape"])


class VAE(_ModuleFamily):
    """A variational autoencoder, MLP or convolutional."""

    name, module, likelihood = "vae", "vae", True
    default_steps = {"digits": 3000, "mnist": 6000}
    config_cls = VAEConfig


class Transformer(_ModuleFamily):
    """A small decoder-only Transformer over pixels (raster order) or characters."""

    name, module, likelihood = "transformer", "transformer", True
    data_kinds = ("image", "text")
    default_steps = {"digits": 400, "mnist": 3000, "text": 2000}
    config_cls = TransformerConfig

    def default_space(self, kind="image"):
        from gentune.search.defaults import transformer_space

        return transformer_space(kind)

    def build_model(self, config, meta):
        from gentune.models.transformer import build

        return build(config, meta)  # text models need the vocabulary too, not just a shape


class Diffusion(_ModuleFamily):
    """A small DDPM with an MLP or tiny U-Net noise predictor."""

    name, module = "diffusion", "diffusion"
    default_steps = {"digits": 1000, "mnist": 6000}
    config_cls = DiffusionConfig
    # Sampling 1000 images (50 denoising steps) takes 6-19 s on one core against 14-25 s for
    # the 1000 training steps of a digits trial: at N = 1000 the five evaluations would cost
    # more than the training they watch.
    eval_samples = 250


class AutoFamily(Family):
    """One search across families: `model` is a categorical parameter and each family's
    parameters exist only under it, prefixed by its name ("vae.lr")."""

    name = "auto"
    data_kinds = ("image", "text")

    def __init__(self, kind: str = "image"):
        self.kind = kind
        self.members = {n: _REGISTRY[n]() for n in BUILTIN if kind in _REGISTRY[n].data_kinds}
        # One N for every family, so that the pruner compares values measured alike.
        given = [f.eval_samples for f in self.members.values() if f.eval_samples]
        self.eval_samples = min(given) if given else None

    def default_space(self, kind="image"):
        members = [n for n, f in self.members.items() if kind in f.data_kinds]
        params: dict[str, Any] = {"model": CategoricalSpec(choices=members)}
        for name in members:
            for key, spec in self.members[name].default_space(kind).params.items():
                params[f"{name}.{key}"] = _prefixed(spec, name)
        return SearchSpace(params)

    def pick(self, params):
        name = params.get("model")
        if name not in self.members:
            raise unknown_choice("model in an auto search", name, self.members)
        prefix = name + "."
        return self.members[name], {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}

    def member(self, name):
        if name not in self.members:
            raise unknown_choice("model in an auto search", name, self.members)
        return self.members[name]

    def objectives(self):
        # Each family's training loss and likelihood mean different things: only sample
        # metrics compare families (on text, where only the Transformer applies, its NLL).
        return ("nll",) if self.kind == "text" else ("fid", "kid")


def _prefixed(spec, family: str):
    if not hasattr(spec, "when"):
        return spec  # a fixed value
    when = spec.when or {}
    return spec.model_copy(
        update={"when": {"model": [family], **{f"{family}.{k}": v for k, v in when.items()}}}
    )


_REGISTRY: dict[str, type[Family]] = {
    "gan-mlp": GanMlp,
    "dcgan": DCGAN,
    "vae": VAE,
    "transformer": Transformer,
    "diffusion": Diffusion,
}
BUILTIN = tuple(_REGISTRY)
MODELS = BUILTIN + ("auto",)
REQUIRED = ("name", "config_cls", "default_space", "train", "sample")


def get_family(name: str, kind: str = "image") -> Family:
    """The family `name`: a built-in one, "auto" (all built-ins that model `kind` data), or a
    user's class given as "pkg.module:Class" or "FILE.py:Class"."""
    if name == "auto":
        return AutoFamily(kind)
    if name in _REGISTRY:
        return _REGISTRY[name]()
    if ":" in name:
        return load_family(name)
    raise unknown_choice("model", name, MODELS + ("pkg.module:Class", "FILE.py:Class"))


def load_family(spec: str) -> Family:
    """A user's family class (or instance) from an import path; checks the contract's parts."""
    from gentune.loading import load_object

    obj = load_object(spec, "model family")
    family = obj() if inspect.isclass(obj) else obj
    missing = [a for a in REQUIRED if getattr(family, a, None) in (None, "", type(None))]
    if missing:
        raise GentuneError(
            f"{spec} does not follow the family contract: it lacks {', '.join(missing)}",
            value=spec,
            fix="subclass gentune.families.Family and fill in those parts (see docs/families.md)",
        )
    return family if isinstance(family, Family) else _Borrowed(family)


class _Borrowed(Family):
    """A user's family that does not subclass Family: its own parts, Family's for the rest."""

    def __init__(self, inner):
        self.inner = inner
        for attr in (
            "name",
            "config_cls",
            "data_kinds",
            "main_loss",
            "likelihood",
            "default_steps",
            "eval_samples",
            "train",
            "sample",
            "evaluate",
            "build_model",
            "model_meta",
        ):
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))

    def default_space(self, kind="image"):
        return default_space(self.inner, kind)


def check_family(model: str, dataset: str, objective: str | None):
    """(family, data kind, objective) after checking that the family can model the dataset and
    be scored by the objective; the objective defaults to nll for text and fid for images."""
    from gentune.data import dataset_kind
    from gentune.study.store import OBJECTIVES

    kind = dataset_kind(dataset)
    family = get_family(model, kind)
    family.check_data(kind, dataset)
    objective = objective or ("nll" if kind == "text" else "fid")
    if objective not in OBJECTIVES:
        raise unknown_choice("objective", objective, OBJECTIVES)
    if objective not in family.objectives():
        raise GentuneError(
            f"--objective {objective} does not apply to --model {model} on {kind} data",
            value=objective,
            fix=f"use one of: {', '.join(family.objectives())}",
        )
    return family, kind, objective


def portable_model(model: str) -> str:
    """A user's FILE.py:Class with an absolute path, so workers started elsewhere find it."""
    target, sep, name = model.rpartition(":")
    return f"{Path(target).resolve()}:{name}" if sep and target.endswith(".py") else model


def default_space(family: Family, kind: str) -> SearchSpace:
    """family.default_space(kind), or default_space() for a user's family that takes no kind."""
    params = inspect.signature(family.default_space).parameters
    return family.default_space(kind) if params else family.default_space()


def data_kind(data) -> str:
    """ "text" for a TextDataset, "image" for an ImageDataset."""
    return getattr(data, "kind", "image")
