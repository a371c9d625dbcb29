"""Conformance of every model family to the contract (docs/families.md), on the 8x8 digits:
it trains with finite losses and train/validation curves, reproduces under a seed, samples the
right shape and range, survives a checkpoint round trip and can be scored by the metric."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gentune.errors import GentuneError
from gentune.families import BUILTIN, get_family
from gentune.metrics import Evaluator
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
    """Each case trained once for STEPS steps; shared by the tests below."""
    cache = {}

    def get(case):
        if case not in cache:
            name, overrides = CASES[case]
            family = get_family(name)
            config = family.config_cls.from_dict(overrides)
            cache[case] = family, config, family.train(config, digits, steps=STEPS, seed=3)
        return cache[case]

    return get


def test_every_builtin_family_has_a_case():
    assert {name for name, _ in CASES.values()} == set(BUILTIN)


@pytest.mark.parametrize("case", CASES)
def test_trains_with_finite_losses_and_curves(case, trained):
    family, _, result = trained(case)
    assert result.steps == STEPS and not result.diverged
    assert family.main_loss in result.losses
    assert all(math.isfinite(v) for v in result.losses.values())
    assert result.curves and result.curves[-1]["step"] == STEPS
    for point in result.curves:
        assert point["gap"] == pytest.approx(point["val"] - point["train"])
        assert math.isfinite(point["train"]) and math.isfinite(point["val"])
    assert result.seconds > 0 and not result.model.training


@pytest.mark.parametrize("case", CASES)
def test_reproducible_under_a_seed(case, trained, digits):
    family, config, first = trained(case)
    again = family.train(config, digits, steps=STEPS, seed=3)
    assert again.losses == first.losses and again.curves == first.curves
    a, b = first.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = family.train(config, digits, steps=STEPS, seed=4)
    assert other.losses != first.losses


@pytest.mark.parametrize("case", CASES)
def test_samples_have_the_data_shape_and_range(case, trained, digits):
    family, _, result = trained(case)
    images = family.sample(result.model, 20, seed=1)
    assert images.shape == (20, *digits.shape) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, family.sample(result.model, 20, seed=1))
    assert not torch.equal(images, family.sample(result.model, 20, seed=2))


@pytest.mark.parametrize("case", CASES)
def test_checkpoint_round_trip(case, trained, tmp_path):
    family, config, result = trained(case)
    path = family.save(tmp_path / "model.pt", config, result.model, extra={"seed": 3})
    loaded_config, model, info = family.load(path)
    assert loaded_config == config and info["extra"] == {"seed": 3}
    assert torch.equal(family.sample(model, 10, seed=5), family.sample(result.model, 10, seed=5))


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
    from gentune.families import check_family

    with pytest.raises(GentuneError, match="gan-mlp family models image data.*is text"):
        check_family("gan-mlp", "text", None)
    with pytest.raises(GentuneError, match="nll does not apply"):
        check_family("dcgan", "digits", "nll")
    with pytest.raises(GentuneError, match="loss does not apply"):
        check_family("auto", "digits", "loss")
    assert check_family("transformer", "text", None)[2] == "nll"
    assert check_family("vae", "digits", None)[2] == "fid"


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


def _tune(tmp_path, **kw):
    from gentune.api import tune

    return tune(
        dataset="digits",
        runs_dir=tmp_path,
        report=False,
        progress=False,
        detectors="off",
        evals=0,
        n_eval=100,
        strategy="random",
        **kw,
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


def test_a_family_that_breaks_the_contract_is_named(tmp_path):
    bad = tmp_path / "bad_family.py"
    bad.write_text("class Half:\n    name = 'half'\n    def train(self, *a, **k):\n        pass\n")
    with pytest.raises(GentuneError, match="lacks config_cls, default_space, sample"):
        get_family(f"{bad}:Half")


def test_text_trial_is_scored_by_nll_with_samples(tmp_path):
    from gentune.search.space import SearchSpace

    text = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "text" / "input.txt"
    small = tmp_path / "small.txt"
    small.write_text(text.read_text()[:20_000])
    space = SearchSpace({"n_layer": 1, "d_model": 32, "n_head": 2, "context": 32, "batch_size": 8})
    from gentune.api import tune

    result = tune(
        model="transformer",
        dataset="text",
        data_dir=small,
        trials=1,
        steps=20,
        space=space,
        runs_dir=tmp_path,
        report=False,
        progress=False,
        detectors="off",
        strategy="random",
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
