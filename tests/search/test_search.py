"""Search spaces: parsing, validation messages that name the field, grid exhaustiveness."""

from __future__ import annotations

import optuna
import pytest

from gentune.errors import GentuneError, SpaceError
from gentune.families import get_family
from gentune.phases.search import resolve_space
from gentune.search import SearchSpace, grid_size, make_sampler

GAN = get_family("gan-mlp")

TUTORIAL_GRID = """\
mode: replace
params:
  lr: [1e-3, 5e-4, 1e-4]
  batch_size: [32, 64, 128]
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_default_gan_space_has_the_tutorial_parameters():
    space = resolve_space(GAN, None)
    for name in ("lr", "batch_size", "beta1", "optimizer", "width", "depth", "weight_decay", "d_steps"):
        assert name in space.params
    lr = space.params["lr"]
    assert (lr.low, lr.high, lr.log) == (1e-5, 1e-2, True)
    bs = space.params["batch_size"]
    assert (bs.low, bs.high) == (32, 128)


def test_yaml_narrow_keeps_the_rest(tmp_path):
    p = write(
        tmp_path, "s.yaml", "params:\n  lr: {type: float, low: 1e-4, high: 1e-3, log: true}\n  beta1: 0.5\n"
    )
    space = resolve_space(GAN, p)
    assert space.params["lr"].low == 1e-4 and space.params["lr"].high == 1e-3
    assert space.params["beta1"] == 0.5
    assert "d_steps" in space.params  # untouched default


def test_toml_replace_with_int_step(tmp_path):
    p = write(
        tmp_path,
        "s.toml",
        'mode = "replace"\n[params.batch_size]\ntype = "int"\nlow = 32\n'
        'high = 128\nstep = 32\n[params.optimizer]\ntype = "categorical"\n'
        'choices = ["adam", "sgd"]\n',
    )
    space = resolve_space(GAN, p)
    assert set(space.params) == {"batch_size", "optimizer"}
    assert space.grid() == {"batch_size": [32, 64, 96, 128], "optimizer": ["adam", "sgd"]}


@pytest.mark.parametrize(
    "body, field, words",
    [
        (
            "params:\n  lr: {type: float, low: 1e-2, high: 1e-5, log: true}\n",
            "params.lr",
            "low must not exceed high",
        ),
        (
            "params:\n  lr: {type: float, low: 0, high: 1e-2, log: true}\n",
            "params.lr",
            "log range needs low > 0",
        ),
        ("params:\n  lr: {type: float, low: 1e-4, hgh: 1e-3}\n", "params.lr.hgh", "Extra inputs"),
        ("params:\n  learning_rate: {type: float, low: 1e-4, high: 1e-3}\n", "params", "learning_rate"),
        ("params:\n  optimizer: [adam, adamx]\n", "params.optimizer", "adamx"),
        ("params:\n  batch_size: {type: int, low: 0, high: 64}\n", "params.batch_size", "batch_size"),
        ("params:\n  lr: {type: gaussian, low: 1, high: 2}\n", "params.lr", "type"),
    ],
)
def test_validation_errors_name_the_field(tmp_path, body, field, words):
    p = write(tmp_path, "s.yaml", body)
    with pytest.raises(SpaceError) as e:
        resolve_space(GAN, p)
    msg = str(e.value)
    assert field in msg and words in msg and "Fix:" in msg


def test_bad_files(tmp_path):
    with pytest.raises(SpaceError, match="does not exist"):
        resolve_space(GAN, tmp_path / "nope.yaml")
    with pytest.raises(SpaceError, match="'params'"):
        resolve_space(GAN, write(tmp_path, "a.yaml", "lr: 1\n"))
    with pytest.raises(SpaceError, match="mode must be"):
        resolve_space(GAN, write(tmp_path, "b.yaml", "mode: widen\nparams: {lr: 0.1}\n"))
    with pytest.raises(SpaceError, match="not valid YAML"):
        resolve_space(GAN, write(tmp_path, "c.yaml", "params: [\n"))
    with pytest.raises(SpaceError, match=r"\.yaml, \.yml or \.toml"):
        resolve_space(GAN, write(tmp_path, "d.json", "{}"))


def test_grid_needs_finite_values():
    space = resolve_space(GAN, None)
    with pytest.raises(SpaceError, match="continuous range"):
        make_sampler("grid", SearchSpace({"lr": space.params["lr"]}), seed=0)


def test_unknown_strategy_lists_choices():
    with pytest.raises(
        GentuneError,
        match=r"unknown strategy \(got .anneal.\). Fix: use one of: gp, grid, nsga2, (pbt, )?qmc, "
        "random, tpe",
    ):
        make_sampler("anneal", SearchSpace({}), seed=0)


def test_grid_search_is_exhaustive_and_visits_each_point_once(tmp_path):
    space = resolve_space(GAN, write(tmp_path, "g.yaml", TUTORIAL_GRID))
    assert grid_size(space) == 9
    study = optuna.create_study(sampler=make_sampler("grid", space, seed=0))
    study.optimize(lambda t: sum(hash(str(v)) % 7 for v in space.suggest(t).values()), n_trials=20)
    points = [(t.params["lr"], t.params["batch_size"]) for t in study.trials]
    assert len(points) == 9 and len(set(points)) == 9  # stopped by itself, no repeats
    assert set(points) == {(lr, bs) for lr in (1e-3, 5e-4, 1e-4) for bs in (32, 64, 128)}


def test_conditional_parameter_only_under_its_parent():
    space = resolve_space(GAN, None)
    study = optuna.create_study(sampler=make_sampler("random", space, seed=3))
    study.optimize(lambda t: (space.suggest(t), 0.0)[1], n_trials=30)
    for t in study.trials:
        assert ("beta1" in t.params) == (t.params["optimizer"] in ("adam", "adamw"))


@pytest.mark.parametrize("strategy", ["random", "qmc", "tpe", "gp"])
def test_strategies_are_seeded(strategy):
    space = SearchSpace.from_dict(
        {
            "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
            "batch_size": {"type": "int", "low": 32, "high": 128},
        }
    )

    def params(seed):
        study = optuna.create_study(sampler=make_sampler(strategy, space, seed=seed))
        study.optimize(lambda t: abs(space.suggest(t)["lr"] - 1e-3), n_trials=12)
        return [t.params for t in study.trials]

    assert params(1) == params(1)
    assert params(1) != params(2)


def test_space_round_trips_through_json():
    space = resolve_space(GAN, None)
    again = SearchSpace.from_dict(space.to_dict())
    assert again.to_dict() == space.to_dict()
