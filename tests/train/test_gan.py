"""The MLP GAN: its layers match the tutorial, its config rejects bad values, and its trainer
is budgeted, deterministic, survives divergence and round-trips through a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gentune.errors import GentuneError
from gentune.families import GanMlp
from gentune.models.gan_mlp import GANConfig, build
from gentune.train.checkpoint import MODEL_FORMAT
from gentune.train.gan import GANLosses, GANResult, sample, train_gan
from gentune.train.loop import TrainResult

pytestmark = pytest.mark.usefixtures("one_thread")


def _structure(module: nn.Module) -> list[tuple]:
    """Layer types with their sizes / slopes, in order."""
    out = []
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            out.append(("Linear", layer.in_features, layer.out_features))
        elif isinstance(layer, nn.LeakyReLU):
            out.append(("LeakyReLU", layer.negative_slope))
        elif isinstance(layer, (nn.ReLU, nn.Tanh, nn.Sigmoid)):
            out.append((type(layer).__name__,))
    return out


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# The tutorial's section 3.2, verbatim apart from the class wrappers.
def _tutorial_generator(input_dim, output_dim):
    return nn.Sequential(
        nn.Linear(input_dim, 128),
        nn.ReLU(),
        nn.Linear(128, 256),
        nn.ReLU(),
        nn.Linear(256, output_dim),
        nn.Tanh(),
    )


def _tutorial_discriminator(input_dim):
    return nn.Sequential(
        nn.Linear(input_dim, 256),
        nn.LeakyReLU(0.2),
        nn.Linear(256, 128),
        nn.LeakyReLU(0.2),
        nn.Linear(128, 1),
        nn.Sigmoid(),
    )


def test_default_layers_are_the_tutorials():
    g, d = build(GANConfig(d_output="sigmoid"), (1, 28, 28))
    assert _structure(g) == _structure(_tutorial_generator(100, 784))
    assert _structure(d) == _structure(_tutorial_discriminator(784))
    _, d_logits = build(GANConfig(), (1, 28, 28))
    assert _structure(d_logits) == _structure(_tutorial_discriminator(784))[:-1]
    assert g(torch.zeros(3, 100)).shape == (3, 1, 28, 28)
    assert d(torch.zeros(3, 1, 28, 28)).shape == (3, 1)


def test_width_and_depth_scale_the_pattern():
    g, d = build(GANConfig(width=32, depth=3), (1, 8, 8))
    widths = [layer.out_features for layer in g.modules() if isinstance(layer, nn.Linear)]
    assert widths == [32, 64, 128, 64]
    widths = [layer.out_features for layer in d.modules() if isinstance(layer, nn.Linear)]
    assert widths == [128, 64, 32, 1]


@pytest.mark.parametrize(
    "field, value, fix_words",
    [
        ("optimizer", "adagrad", ["adam, adamw, rmsprop, sgd"]),
        ("d_output", "tanh", ["logits, sigmoid"]),
        ("lr", 0.0, ["learning rate"]),
        ("lr", float("nan"), ["learning rate"]),
        ("lr_d", -1e-3, ["None to reuse lr"]),
        ("batch_size", 0, ["positive integer"]),
        ("depth", 0, ["positive integer"]),
        ("d_steps", 1.5, ["positive integer"]),
        ("beta1", 1.0, ["[0, 1)"]),
        ("weight_decay", -0.1, ["weight_decay to"]),
    ],
)
def test_config_errors_name_field_value_and_fix(field, value, fix_words):
    with pytest.raises(GentuneError) as err:
        GANConfig(**{field: value})
    msg = str(err.value)
    assert field in msg and "Fix:" in msg and repr(value) in msg
    assert all(w in msg for w in fix_words)


def test_config_dict_round_trip_and_unknown_keys():
    c = GANConfig(lr=1, beta1=0.5, lr_d=4e-4, optimizer="rmsprop")
    assert c.lr == 1.0 and isinstance(c.lr, float)
    assert GANConfig.from_dict(c.to_dict()) == c
    with pytest.raises(GentuneError) as err:
        GANConfig.from_dict({"lr": 1e-3, "learning_rate": 1e-3})
    assert "learning_rate" in str(err.value) and "latent_dim" in str(err.value)


def test_short_training_gives_finite_losses_and_valid_samples(digits):
    r = train_gan(GANConfig(), digits, steps=200, log_every=50)
    assert isinstance(r, GANResult) and isinstance(r, TrainResult)  # the shared result, GAN names added
    assert r.losses == {"g": r.g_loss, "d": r.d_loss} and r.model is r.generator
    assert r.steps == 200 and not r.diverged and r.stop_reason == "budget"
    assert math.isfinite(r.g_loss) and math.isfinite(r.d_loss)
    assert [h["step"] for h in r.history] == [50, 100, 150, 200]
    assert r.epochs == pytest.approx(200 / (len(digits.train) // 64))
    assert not r.generator.training
    s = sample(r.generator, 300, seed=3)
    assert s.shape == (300, 1, 8, 8) and s.dtype == torch.float32
    assert s.min() >= -1 and s.max() <= 1 and s.std() > 0.1
    # Latents are fixed by the seed, whatever the batch size.
    assert torch.allclose(s, sample(r.generator, 300, seed=3, batch_size=7), atol=1e-6)
    assert not torch.equal(s, sample(r.generator, 300, seed=4))


def test_same_seed_same_weights_other_seed_differs(digits):
    cfg = GANConfig(beta1=0.5, lr=5e-4)
    a = train_gan(cfg, digits, steps=60, seed=7)
    b = train_gan(cfg, digits, steps=60, seed=7)
    c = train_gan(cfg, digits, steps=60, seed=8)
    assert _same_weights(a.generator, b.generator)
    assert _same_weights(a.discriminator, b.discriminator)
    assert torch.equal(sample(a.generator, 50), sample(b.generator, 50))
    assert a.history == b.history
    assert not _same_weights(a.generator, c.generator)


def test_training_leaves_global_rng_alone(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_gan(GANConfig(), digits, steps=2)
    assert torch.equal(torch.rand(3), expected)


def test_epochs_budget_counts_real_batches_seen_by_d(digits):
    per_epoch = len(digits.train) // 64  # the last partial batch is dropped
    r = train_gan(GANConfig(), digits, epochs=2)
    assert r.steps == 2 * per_epoch and r.epochs == pytest.approx(2.0)
    r = train_gan(GANConfig(d_steps=2), digits, epochs=2)
    assert r.steps == per_epoch and r.epochs == pytest.approx(2.0)
    r = train_gan(GANConfig(), digits, epochs=0.5)
    assert r.steps == per_epoch // 2
    for budget in ({}, {"steps": 5, "epochs": 1.0}, {"steps": 0}, {"epochs": -1.0}):
        with pytest.raises(GentuneError, match="steps|epochs"):
            train_gan(GANConfig(), digits, **budget)


def test_batch_larger_than_data_is_a_clear_error(digits):
    with pytest.raises(GentuneError, match="batch_size"):
        train_gan(GANConfig(batch_size=100_000), digits, steps=1)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_every_optimizer_trains(digits, optimizer):
    cfg = GANConfig(optimizer=optimizer, lr=1e-3, lr_d=2e-3, weight_decay=1e-4)
    r = train_gan(cfg, digits, steps=30, log_every=10)
    assert not r.diverged and math.isfinite(r.g_loss) and math.isfinite(r.d_loss)
    torch.manual_seed(0)
    before, _ = build(cfg, digits.shape)  # train_gan initialises under the seed, here 0
    assert not _same_weights(before, r.generator)


def test_sigmoid_head_is_the_same_model_as_logits(digits):
    """Sigmoid + BCELoss and BCEWithLogits compute the same loss, so short runs nearly coincide."""
    a = train_gan(GANConfig(d_output="logits"), digits, steps=20, seed=1)
    b = train_gan(GANConfig(d_output="sigmoid"), digits, steps=20, seed=1)
    assert not b.diverged and math.isfinite(b.g_loss)
    assert a.g_loss == pytest.approx(b.g_loss, rel=1e-3)
    for (k, va), vb in zip(a.generator.state_dict().items(), b.generator.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-4), k


def test_checkpoint_round_trip_gives_identical_samples(digits, tmp_path):
    cfg = GANConfig(beta1=0.5, latent_dim=16, width=32)
    r = train_gan(cfg, digits, steps=20)
    family = GanMlp()
    path = family.save(tmp_path / "g.pt", cfg, r.generator, extra={"fid": 1.5})
    assert torch.load(path, weights_only=True)["format"] == MODEL_FORMAT  # one format for every family
    cfg2, g2, info = family.load(path)
    assert cfg2 == cfg and info == {"meta": {"image_shape": [1, 8, 8]}, "extra": {"fid": 1.5}}
    assert torch.equal(sample(r.generator, 64, seed=5), sample(g2, 64, seed=5))
    assert [p.name for p in tmp_path.iterdir()] == ["g.pt"]  # no temp file left behind


def test_checkpoint_errors_name_the_fix(digits, tmp_path):
    family = GanMlp()
    with pytest.raises(GentuneError, match="not found.*Fix"):
        family.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(GentuneError, match="corrupt.*Fix"):
        family.load(bad)
    g, _ = build(GANConfig(), digits.shape)
    with pytest.raises(GentuneError, match="extra"):
        family.save(tmp_path / "x.pt", GANConfig(), g, extra={"t": torch.ones(1)})


def test_huge_learning_rate_diverges_without_crashing(digits):
    r = train_gan(GANConfig(optimizer="sgd", lr=10.0), digits, steps=500, log_every=10)
    assert r.diverged and r.stop_reason == "diverged"
    assert r.steps < 500 and r.history[-1]["step"] == r.steps


def test_callback_sees_progress_and_its_exception_propagates(digits):
    seen = []

    class Stop(Exception):
        pass

    def callback(step, total, losses):
        seen.append((step, total, sorted(losses)))
        if step == 20:
            raise Stop

    with pytest.raises(Stop):
        train_gan(GANConfig(), digits, steps=100, log_every=10, callback=callback)
    # A three-argument callback still works; train_loss / val_loss are D's loss on fixed train
    # and validation images (the overfitting monitor's curves, gentune.train.loop).
    keys = ["d_acc", "d_loss", "g_loss", "grad_norm", "train_loss", "val_loss"]
    assert seen == [(10, 100, keys), (20, 100, keys)]


def test_max_seconds_stops_early_and_says_so(digits):
    r = train_gan(GANConfig(), digits, steps=10_000, max_seconds=0.0)
    assert r.steps == 1 and r.stop_reason == "max_seconds" and not r.diverged


def test_the_losses_as_pure_functions_give_the_modules_numbers(digits):
    """functional_call over the modules' own parameters computes exactly what calling them does."""
    g, d = build(GANConfig(width=32, depth=1), digits.shape)
    losses = GANLosses(g, d)
    params_g, params_d = dict(g.named_parameters()), dict(d.named_parameters())
    z, real = torch.randn(16, 100, generator=torch.Generator().manual_seed(0)), digits.train.x[:16]
    fake = losses.generate(params_g, {}, z)
    assert torch.equal(fake, g(z))
    loss, acc = losses.d_loss(params_d, {}, real, fake.detach())
    ones, zeros = torch.ones(16, 1), torch.zeros(16, 1)
    direct = F.binary_cross_entropy_with_logits(d(real), ones) + F.binary_cross_entropy_with_logits(
        d(fake.detach()), zeros
    )
    assert torch.equal(loss, direct) and 0 <= float(acc) <= 1
    frozen = {k: v.detach() for k, v in params_d.items()}
    assert torch.equal(losses.g_loss(frozen, {}, fake), F.binary_cross_entropy_with_logits(d(fake), ones))


def test_the_losses_map_over_stacked_members(digits):
    """The shape a population trainer needs: K members' parameters stacked, one vmap."""
    from torch.func import stack_module_state, vmap

    config, k = GANConfig(width=32, depth=1), 3
    pairs = []
    for seed in range(k):
        torch.manual_seed(seed)
        pairs.append(build(config, digits.shape))
    losses = GANLosses(*pairs[0])
    params_g, buffers_g = stack_module_state([g for g, _ in pairs])
    params_d, buffers_d = stack_module_state([d for _, d in pairs])
    z = torch.randn(k, 16, 100, generator=torch.Generator().manual_seed(0))
    real = digits.train.x[:16].expand(k, *digits.train.x[:16].shape)
    fakes = vmap(losses.generate)(params_g, buffers_g, z)
    d_losses, accs = vmap(losses.d_loss)(params_d, buffers_d, real, fakes)
    g_losses = vmap(losses.g_loss)(params_d, buffers_d, fakes)
    for i, (g, d) in enumerate(pairs):
        one = GANLosses(g, d)
        fake = one.generate(dict(g.named_parameters()), {}, z[i])
        assert torch.allclose(fakes[i], fake, atol=1e-6)
        loss, acc = one.d_loss(dict(d.named_parameters()), {}, real[i], fake)
        assert torch.allclose(d_losses[i], loss, atol=1e-6) and accs[i] == acc
        assert torch.allclose(g_losses[i], one.g_loss(dict(d.named_parameters()), {}, fake), atol=1e-6)
    assert len(set(d_losses.tolist())) == k  # the members are independent
