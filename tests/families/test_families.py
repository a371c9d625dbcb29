"""Conformance of every model family to the contract (docs/families.md), on the 8x8 digits.

gentune.testing.check_family runs each built-in family, the user family of
tests/objectives/pixel_gaussian.py and one written to a folder outside the package through the
whole contract (training, reproducibility, samples, evaluation, checkpoints, config); the tests
here add what is particular to a family, the contract's errors and whole tuning runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gentune.errors import GentuneError
from gentune.families import BUILTIN, Family, get_family, load_family
from gentune.metrics import Evaluator
from gentune.testing import check_family
from gentune.train.loop import overfit_step, overfitting

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 30
# Small members of each family, so that the whole suite stays fast on one thread.
CASES = {
    "gan-mlp": ("gan-mlp", {"width": 32, "depth": 1, "batch_size": 32}),
    "dcgan": ("dcgan", {"width": 8, "latent_dim": 16, "batch_size": 32}),
    "vae-mlp": ("vae", {"width": 64, "depth": 1, "batch_size": 32}),
    "vae-conv": ("vae", {"arch": "conv", "channels": 8, "decoder": "gaussian", "kl_warmup": 0.5}),
    "transformer": ("transformer", {"n_layer": 1, "d_model": 32, "n_head": 2, "batch_size": 16}),
    "diffusion-mlp": ("diffusion", {"width": 64, "depth": 1, "timesteps": 20}),
    "diffusion-unet": (
        "diffusion",
        {"arch": "unet", "channels": 8, "depth": 1, "timesteps": 20, "sample_steps": 5, "batch_size": 16},
    ),
}


@pytest.fixture(scope="module")
def trained(digits):
    """Each case through check_family once (STEPS steps); its result is shared by the tests below."""
    cache = {}

    def get(case):
        if case not in cache:
            name, overrides = CASES[case]
            family = get_family(name)
            result = check_family(family, digits, config=overrides, steps=STEPS)
            cache[case] = family, result.config, result
        return cache[case]

    return get


def test_every_builtin_family_has_a_case():
    assert {name for name, _ in CASES.values()} == set(BUILTIN)


@pytest.mark.parametrize("case", CASES)
def test_builtin_family_passes_check_family(case, trained, digits):
    family, config, result = trained(case)
    assert isinstance(family, Family) and result.steps == STEPS
    other = family.train(config, digits, steps=STEPS, seed=4)
    assert other.losses != result.losses  # the seed reaches the weights, the batches and the noise


@pytest.fixture(scope="module")
def evaluator(digits):
    return Evaluator(digits, n=100).prepare()


@pytest.mark.parametrize("case", CASES)
def test_the_sample_metric_and_the_family_metrics_compute(case, trained, digits, evaluator):
    family, _, result = trained(case)
    metrics = evaluator.evaluate(family.sample(result.model, 100, seed=0))
    assert math.isfinite(metrics["fid"]) and metrics["fid"] > evaluator.floor["fid"]
    own = family.evaluate(result.model, digits)
    assert all(math.isfinite(v) for v in own.values())
    assert ("nll" in own) == family.likelihood


def test_vae_importance_sampled_nll_tightens_the_elbo(trained, digits):
    family, _, result = trained("vae-mlp")
    own = family.evaluate(result.model, digits)
    # log p(x) >= IWAE bound >= ELBO, so NLL <= -ELBO (up to Monte Carlo noise).
    assert own["nll"] <= -own["elbo"] + 0.5
    assert own["bits_per_dim"] == pytest.approx(own["nll"] / (64 * math.log(2)))


def test_transformer_tokens_are_the_pixels(trained, digits):
    from gentune.models.transformer import images_to_tokens, tokens_to_images

    _, _, result = trained("transformer")
    meta = result.model.meta
    assert meta["max_len"] == 64 and meta["vocab_size"] == meta["levels"] + 1
    tokens = images_to_tokens(digits.val.x[:5], meta)
    assert tokens.shape == (5, 64) and tokens.max() < meta["levels"]
    back = tokens_to_images(tokens, meta)
    assert (back - digits.val.x[:5]).abs().max() <= 1 / (meta["levels"] - 1) + 1e-6


def test_transformer_reduces_large_images():
    from gentune.models.transformer import TransformerConfig, image_meta, images_to_tokens

    meta = image_meta(TransformerConfig(max_side=14), (1, 28, 28))
    assert meta["max_len"] == 196 and meta["token_shape"] == [1, 14, 14]
    assert images_to_tokens(torch.zeros(2, 1, 28, 28), meta).shape == (2, 196)


@pytest.mark.parametrize("name", BUILTIN)
def test_configs_reject_unknown_fields_and_bad_values(name):
    family = get_family(name)
    with pytest.raises(GentuneError, match="unknown"):
        family.config_cls.from_dict({"no_such_field": 1})
    with pytest.raises(GentuneError, match="lr"):
        family.config_cls.from_dict({"lr": -1.0})
    config = family.config_cls.from_dict({"lr": 1})  # an int from YAML is stored as a float
    assert family.config_cls.from_dict(config.to_dict()) == config and isinstance(config.lr, float)


def test_auto_space_prefixes_each_family_and_picks_one():
    import optuna

    auto = get_family("auto")
    space = auto.default_space()
    assert set(space.params["model"].choices) == set(BUILTIN)
    assert space.params["vae.width"].when == {"model": ["vae"], "vae.arch": ["mlp"]}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(25):
        trial = study.ask()
        params = space.suggest(trial)
        family, own = auto.pick(params)
        family.config_cls.from_dict(own)  # every draw is a valid config of its family
        assert not any("." in k for k in own)
        assert all(k == "model" or k.startswith(family.name + ".") for k in trial.params)
        seen.add(family.name)
        study.tell(trial, 0.0)
    assert len(seen) >= 4


def test_mismatched_data_and_objectives_are_clear_errors():
    from gentune.families import get_family
    from gentune.settings import check_objective

    def check_study(model: str, kind: str, objective: str | None) -> str:
        return check_objective(get_family(model, kind), kind, objective, kind)

    with pytest.raises(GentuneError, match="gan-mlp family models image data.*is text.*--model transformer"):
        check_study("gan-mlp", "text", None)
    with pytest.raises(GentuneError, match="nll does not apply"):
        check_study("dcgan", "image", "nll")
    with pytest.raises(GentuneError, match="loss does not apply"):
        check_study("auto", "image", "loss")
    assert check_study("transformer", "text", None) == "nll"
    assert check_study("vae", "image", None) == "fid"


def test_overfitting_needs_rising_validation_and_falling_training():
    rising = [{"step": 10 * i, "train": 5 - i, "val": 1 + i} for i in range(5)]
    assert overfitting(rising, patience=3) and overfit_step(rising, patience=3) == 30
    assert not overfitting([{"train": 1 + i, "val": 1 + i} for i in range(5)], patience=3)  # underfit
    assert not overfitting(rising[:3], patience=3)  # too few evaluations yet
    dip = rising[:3] + [{"step": 30, "train": 1, "val": 2.5}] + rising[4:]
    assert not overfitting(dip, patience=3) and overfit_step(dip, patience=3) is None
    # Once flagged, a trial stays flagged even if validation later falls back.
    assert overfit_step(rising + [{"step": 50, "train": 0, "val": 0}], patience=3) == 30


OUTSIDE = str(Path(__file__).parents[1] / "objectives" / "pixel_gaussian.py") + ":PixelGaussian"


def _tune(
    tmp_path,
    *,
    model,
    trials,
    steps=None,
    space=None,
    objective=None,
    prune_overfitting=False,
    dataset="digits",
    data_dir=None,
    n_eval=100,
    evals=0,
):
    """A random search with detectors off and no report, in tmp_path."""
    from gentune.api import tune
    from gentune.settings import Budget, EarlyStop, RunOptions, SearchOptions

    return tune(
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        objective=objective,
        n_eval=n_eval,
        budget=Budget(steps=steps),
        search=SearchOptions(strategy="random", trials=trials, space=space),
        early_stop=EarlyStop(detectors="off", evals=evals, prune_overfitting=prune_overfitting),
        run=RunOptions(runs_dir=tmp_path, report=False, progress=False),
    )


def test_a_family_defined_outside_the_package_is_tuned_and_flagged(tmp_path):
    from gentune.search.space import SearchSpace

    result = _tune(tmp_path, model=OUTSIDE, trials=1, space=SearchSpace({"lr": 0.05, "n_train": 5}))
    trial = result.study.trials[0]
    assert result.best["family"] == "pixel-gaussian" and result.study.study_name.startswith("pixel-gaussian-")
    attrs = trial.user_attrs
    assert attrs["overfitting"] is True  # five training images: its scales shrink to fit them
    assert attrs["loss_curves"][-1]["gap"] > attrs["loss_curves"][0]["gap"]
    assert set(attrs["final_loss"]) == {"loss"} and "nll" in attrs["metrics"]
    assert (result.out_dir / "trials" / "0" / "generator.pt").is_file()


def test_prune_overfitting_stops_such_a_trial(tmp_path):
    from optuna.trial import TrialState

    from gentune.search.space import SearchSpace

    result = _tune(
        tmp_path,
        model=OUTSIDE,
        trials=1,
        prune_overfitting=True,
        space=SearchSpace({"lr": 0.05, "n_train": 5}),
    )
    trial = result.study.trials[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["prune_reason"] == "overfitting"
    assert trial.user_attrs["overfitting"] is True


def test_the_user_family_of_the_tests_passes_check_family(digits):
    result = check_family(OUTSIDE, digits, config={"lr": 0.05}, steps=20)
    assert result.losses["loss"] < result.history[0]["loss"]


# A family in a folder outside the package, the way a user writes one: the mean image of the
# training data plus Gaussian noise of one learnt scale.
USER_FAMILY = """
from dataclasses import dataclass

import torch

from gentune.families import Family
from gentune.models.config import ConfigBase
from gentune.search.space import FloatSpec, SearchSpace
from gentune.train.loop import Loop, check_budget, fixed_subset


@dataclass(frozen=True)
class NoisyMeanConfig(ConfigBase):
    lr: float = 0.1  # step size of the scale's gradient descent
    _POSITIVE = ("lr",)


class NoisyMeanModel(torch.nn.Module):
    def __init__(self, image_shape):
        super().__init__()
        self.meta = {"image_shape": list(image_shape)}
        self.register_buffer("mean", torch.zeros(image_shape))
        self.log_scale = torch.nn.Parameter(torch.zeros(()))

    def nll(self, x):
        z = (x - self.mean) / self.log_scale.exp()
        return (0.5 * z**2 + self.log_scale).flatten(1).sum(1).mean()


class NoisyMean(Family):
    name = "noisy-mean"
    config_cls = NoisyMeanConfig

    def default_space(self, kind="image"):
        return SearchSpace({"lr": FloatSpec(low=0.01, high=1.0, log=True)})

    def loop(self, config, data, *, steps=None, epochs=None, seed=0, device="cpu"):
        model = NoisyMeanModel(data.shape)
        model.mean.copy_(data.train.x.mean(0))
        opt = torch.optim.SGD(model.parameters(), lr=config.lr)
        batch = torch.Generator().manual_seed(seed)
        train, val = fixed_subset(data.train.x, 256, 1), fixed_subset(data.val.x, 256, 2)

        def step(i):
            x = data.train.x[torch.randint(len(data.train.x), (32,), generator=batch)]
            loss = model.nll(x) / x[0].numel()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss.detach()[None]

        def measure():
            with torch.no_grad():
                return float(model.nll(train)), float(model.nll(val))

        total = check_budget(steps, epochs, len(data.train.x) // 32)
        return Loop(step, measure, ("loss",), model, total, config=config, seed=seed)

    def sample(self, model, n, *, seed=0, device="cpu"):
        z = torch.randn(n, *model.mean.shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return (model.mean + model.log_scale.exp() * z).clamp(-1, 1)

    def build_model(self, config, meta):
        return NoisyMeanModel(meta["image_shape"])
"""


def test_a_family_written_outside_the_package_passes_check_family(tmp_path, digits):
    path = tmp_path / "elsewhere" / "noisy_mean.py"
    path.parent.mkdir()
    path.write_text(USER_FAMILY)
    family = load_family(f"{path}:NoisyMean")
    assert family.name == "noisy-mean" and type(family).__module__ == "gentune_user_noisy_mean"
    result = check_family(family, digits, steps=30)
    assert result.model.log_scale < 0  # the noise shrank towards the spread of the data


def test_check_family_names_what_breaks(digits):
    from objectives.pixel_gaussian import PixelGaussian

    from gentune.search.space import SearchSpace

    class Loud(PixelGaussian):
        def sample(self, model, n, *, seed=0, device="cpu"):
            return 3 * super().sample(model, n, seed=seed, device=device)

    loud = r"^check_family\(pixel-gaussian\): samples must lie in \[-1, 1\]"
    with pytest.raises(AssertionError, match=loud):
        check_family(Loud, digits)

    class Misnamed(PixelGaussian):
        def default_space(self, kind="image"):
            return SearchSpace({"learning_rate": 0.1})

    with pytest.raises(AssertionError, match="default_space names parameters .* not have.*learning_rate"):
        check_family(Misnamed, digits)


def test_a_class_that_does_not_subclass_family_is_refused(tmp_path):
    bad = tmp_path / "bad_family.py"
    bad.write_text("class Half:\n    name = 'half'\n    def train(self, *a, **k):\n        pass\n")
    with pytest.raises(GentuneError) as err:
        get_family(f"{bad}:Half")
    msg = str(err.value)
    assert "is not a gentune family: a family must subclass gentune.families.Family" in msg
    assert "Half" in msg and "Fix: write `class Half(gentune.families.Family)`" in msg


def test_a_family_that_lacks_required_parts_is_named(tmp_path):
    bad = tmp_path / "half_family.py"
    bad.write_text(
        "from gentune.families import Family\n"
        "class Half(Family):\n    name = 'half'\n    def loop(self, *a, **k):\n        pass\n"
    )
    with pytest.raises(GentuneError, match="lacks config_cls, default_space, sample"):
        get_family(f"{bad}:Half")


def test_text_trial_is_scored_by_nll_with_samples(tmp_path):
    from gentune.search.space import SearchSpace

    text = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "text" / "input.txt"
    if not text.is_file():
        pytest.skip(f"tiny-shakespeare is not at {text}")
    small = tmp_path / "small.txt"
    small.write_text(text.read_text()[:20_000])
    space = SearchSpace({"n_layer": 1, "d_model": 32, "n_head": 2, "context": 32, "batch_size": 8})
    result = _tune(
        tmp_path,
        model="transformer",
        dataset="text",
        data_dir=small,
        trials=1,
        steps=20,
        space=space,
        n_eval=None,
        evals=None,
    )
    attrs = result.study.trials[0].user_attrs
    assert result.best["objective"] == "nll" and result.best["settings"]["dataset"] == "text:small.txt"
    metrics = attrs["metrics"]
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["nll"]))
    assert math.log(2) < metrics["nll"] < math.log(len(set(small.read_text()))) + 0.5
    assert len(attrs["text_samples"]) == 4 and all(len(s) == 300 for s in attrs["text_samples"])
    assert set("".join(attrs["text_samples"])) <= set(small.read_text())
    # The summary carries the samples and prints the first one.
    import io

    from rich.console import Console

    from gentune.cli.show import print_best

    assert result.best["text_samples"] == attrs["text_samples"]
    buf = io.StringIO()
    print_best(Console(file=buf, width=120), result.best)
    assert "sample text" in buf.getvalue() and attrs["text_samples"][0][:40] in buf.getvalue()


def test_gentune_sample_loads_or_retrains_any_family(tmp_path):
    import numpy as np

    from gentune.search.space import SearchSpace
    from gentune.study.sampling import sample_trial

    result = _tune(tmp_path, model=OUTSIDE, trials=1, steps=50, space=SearchSpace({"lr": 0.02}))
    storage = f"sqlite:///{result.out_dir / 'study.db'}"
    args = dict(trial=None, n=10, seed=0, storage=storage, runs_dir=tmp_path, device="cpu")
    path, source = sample_trial(result.study.study_name, output=tmp_path / "a.npy", **args)
    first = np.load(path)
    assert first.shape == (10, 8, 8) and source.startswith("checkpoint")
    (result.out_dir / "trials" / "0" / "generator.pt").unlink()
    path, source = sample_trial(result.study.study_name, output=tmp_path / "b.npy", **args)
    assert source.startswith("retrained") and np.array_equal(np.load(path), first)


def test_auto_search_names_the_winning_family(tmp_path):
    result = _tune(tmp_path, model="auto", trials=3, steps=20)
    families = {t.user_attrs["family"] for t in result.study.trials}
    assert families <= set(BUILTIN) and result.best["family"] in families
    best = result.study.best_trial
    assert best.params["model"] == result.best["family"]
    assert all(k == "model" or k.startswith(best.params["model"] + ".") for k in best.params)


def test_nll_objective_ranks_by_the_validation_nll(tmp_path):
    from gentune.search.space import SearchSpace

    result = _tune(
        tmp_path,
        model="vae",
        objective="nll",
        trials=1,
        steps=50,
        space=SearchSpace({"width": 32, "depth": 1, "nll_samples": 10}),
    )
    trial = result.study.trials[0]
    assert trial.value == pytest.approx(trial.user_attrs["metrics"]["nll"])
    assert 0 < trial.value < -trial.user_attrs["metrics"]["elbo"] + 1
