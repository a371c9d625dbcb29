"""The population trainer: members independent of their neighbours, equal to the one-at-a-time
step, masked when they diverge, and continued exactly from their state."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from gentune.errors import GentuneError
from gentune.families import get_family
from gentune.train.population import Population

SIGNALS = ("g_loss", "d_loss", "d_acc", "grad_norm")
STEPS = 100
# The stacked matmuls of K members and the single model's round differently (about 1 ulp a
# step); at lr 2e-4 that stays below 1e-6 over 100 steps. A leak between members (a shared RNG
# stream, another member's lr) moves the losses by 1e-2 or more within a few steps. At lr 1e-3
# the GAN is chaotic enough to grow 1 ulp into 1e-3 by step 80, so the test keeps to 2e-4.
ATOL = 1e-5


@pytest.fixture(scope="module")
def gan():
    return get_family("gan-mlp")


def _config(gan, **kw):
    return gan.config_cls(**{"width": 32, "depth": 2, "batch_size": 32, "lr": 2e-4, "beta1": 0.5, **kw})


def _per_step(pop: Population, slot: int, steps: int) -> torch.Tensor:
    rows = []
    for _ in range(steps):
        out = pop.step(1)[slot]
        rows.append([out[k] for k in SIGNALS])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.fixture(scope="module")
def crowded(gan, digits):
    """The member (seed 7) trained among three neighbours, one of them diverging."""
    pop = Population(gan, digits, capacity=4, log_every=25)
    pop.add(_config(gan, lr=1e-3), seed=1)
    slot = pop.add(_config(gan), seed=7)
    wild = pop.add(_config(gan, lr=50.0, lr_d=50.0), seed=2)
    pop.add(_config(gan, weight_decay=1e-3, beta1=0.9), seed=3)
    rows, diverged = [], {}
    for _ in range(STEPS):
        out = pop.step(1)
        rows.append([out[slot][k] for k in SIGNALS])
        diverged.update({s: o["steps"] for s, o in out.items() if o["diverged"]})
    return pop, slot, wild, torch.tensor(rows, dtype=torch.float64), diverged


def test_member_does_not_depend_on_neighbours(gan, digits, crowded):
    pop, slot, wild, crowded_losses, diverged = crowded
    alone = Population(gan, digits, capacity=1)
    alone_slot = alone.add(_config(gan), seed=7)
    alone_losses = _per_step(alone, alone_slot, STEPS)
    assert torch.allclose(crowded_losses, alone_losses, atol=ATOL, rtol=0)

    # The one-at-a-time step (gan_loop, what fit runs) gives the same numbers.
    loop = gan.loop(_config(gan), digits, steps=STEPS, seed=7)
    single = torch.stack([loop.step(i) for i in range(1, STEPS + 1)]).double()
    assert torch.allclose(single, alone_losses, atol=ATOL, rtol=0)
    # Weights too, at the end.
    model = pop.model(slot)
    for name, p in loop.model.state_dict().items():
        assert torch.allclose(model.state_dict()[name], p, atol=1e-5), name


def test_a_diverging_member_is_masked(crowded):
    pop, slot, wild, losses, diverged = crowded
    # step(1) checks at every call: lr 50 blows up at once; reported diverged once, then frozen.
    assert list(diverged) == [wild] and diverged[wild] < 5
    assert wild not in pop.alive and pop.steps(wild) == diverged[wild] and pop.steps(slot) == STEPS
    assert len(pop.alive) == 3 and torch.isfinite(losses).all()
    assert wild not in pop.step(1)
    pop.remove(wild)
    assert not pop.accepts(_config(get_family("gan-mlp"), width=64))
    assert pop.accepts(_config(get_family("gan-mlp"), lr=1e-4))  # the freed slot


def test_state_continues_exactly(gan, digits):
    config = _config(gan, optimizer="adam")
    straight = Population(gan, digits, capacity=1)
    s = straight.add(config, seed=3)
    straight.step(60)

    first = Population(gan, digits, capacity=1)
    a = first.add(config, seed=3)
    first.step(30)
    buffer = io.BytesIO()
    torch.save(first.state(a), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    second = Population(gan, digits, capacity=2)
    second.add(_config(gan, lr=1e-3), seed=11)  # a neighbour, so the row differs too
    b = second.add(config, seed=3, state=state)
    assert second.steps(b) == 30
    second.step(30)
    want, got = straight.state(s), second.state(b)
    assert want["steps"] == got["steps"] == 60
    for name, t in want["tensors"].items():
        assert torch.allclose(got["tensors"][name], t, atol=1e-6, rtol=0), name
    assert torch.equal(want["rng"], got["rng"])


def test_samples_models_and_hyperparameters(gan, digits, crowded):
    pop, slot, *_ = crowded
    samples = pop.samples(50, seed=4)
    assert set(samples) == set(pop.alive)
    model = pop.model(slot)
    assert not model.training
    assert torch.allclose(samples[slot], gan.sample(model, 50, seed=4), atol=1e-6)
    assert not torch.allclose(samples[pop.alive[0]], samples[slot])

    pop.set_hyperparameters(slot, lr=1e-3, beta1=0.9)
    state = pop.state(slot)
    assert state["config"]["lr"] == 1e-3 and state["config"]["beta1"] == 0.9
    with pytest.raises(GentuneError, match="only these hyperparameters"):
        pop.set_hyperparameters(slot, width=64)
    with pytest.raises(GentuneError, match="cannot join"):
        pop.add(_config(gan, batch_size=16), seed=0)


def test_population_key(gan):
    assert gan.population
    assert gan.population_key(_config(gan, lr=1)) == gan.population_key(_config(gan, lr_d=3e-4, momentum=0.5))
    for change in ({"optimizer": "sgd"}, {"d_steps": 2}, {"latent_dim": 10}, {"batch_size": 16}):
        assert gan.population_key(_config(gan, **change)) != gan.population_key(_config(gan))
    assert not get_family("vae").population


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_dcgan_member_equals_its_loop(digits, spectral_norm):
    """Convolutions, batch norm in G (buffers stacked per member) and spectral norm in D (its
    power iteration rewritten so vmap can batch it) train as the one-at-a-time loop does."""
    dcgan = get_family("dcgan")
    config = dcgan.config_cls(width=8, latent_dim=16, batch_size=16, spectral_norm=spectral_norm)
    pop = Population(dcgan, digits, capacity=2)
    slot = pop.add(config, seed=5)
    pop.add(dataclasses.replace(config, lr=1e-3), seed=6)
    got = _per_step(pop, slot, 30)
    loop = dcgan.loop(config, digits, steps=30, seed=5)
    want = torch.stack([loop.step(i) for i in range(1, 31)]).double()
    assert torch.allclose(got[:, :2], want[:, :2], atol=ATOL, rtol=0)
    buffers = pop.state(slot)["tensors"]
    for name, b in loop.extras["discriminator"].named_buffers():  # spectral norm's u and v
        assert torch.allclose(buffers[f"bd.{name}"], b, atol=1e-5), name
    for name, b in loop.model.named_buffers():  # batch norm's running statistics
        assert torch.allclose(buffers[f"bg.{name}"].to(b.dtype), b, atol=1e-3), name


def test_evaluate_many_equals_evaluate_per_member(digits, crowded):
    from gentune.metrics.evaluator import Evaluator

    pop = crowded[0]
    evaluator = Evaluator(digits, n=200).prepare()
    samples = pop.samples(200, seed=0)
    images = [samples[s] for s in pop.alive]
    many = evaluator.evaluate_many(images)
    assert many == [evaluator.evaluate(x) for x in images]
    assert len({m["fid"] for m in many}) == len(images)
    assert evaluator.evaluate_many(images, keys={"fid"}) == [
        evaluator.evaluate(x, keys={"fid"}) for x in images
    ]


@pytest.mark.parametrize("name", ["gan-mlp", "dcgan"])
def test_member_models_follow_the_family_contract(digits, name):
    """check_family's sample and checkpoint checks on a population member's model."""
    from gentune.testing import _Check, _check_checkpoint, _check_samples

    family = get_family(name)
    config = family.config_cls.from_dict({"batch_size": 16, "latent_dim": 16, "width": 8})
    pop = Population(family, digits, capacity=2)
    slot = pop.add(config, seed=0)
    pop.add(dataclasses.replace(config, lr=1e-3), seed=1)
    pop.step(4)
    model, check = pop.model(slot), _Check(family)
    samples = family.sample(model, 8, seed=1)
    _check_samples(check, family, samples, digits, 8, "image")
    _check_checkpoint(check, family, config, model, samples)
    assert not model.training and torch.equal(samples, family.sample(pop.model(slot), 8, seed=1))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
@pytest.mark.parametrize("fused", [False, True])
def test_stacked_optimizer_follows_torch(name, fused):
    """Each member of optim.Stacked (the formula a GPU runs, or torch's fused kernel per member)
    updates as torch's own optimizer does with that member's hyperparameters."""
    from gentune.models.gan_mlp import GANConfig
    from gentune.train.optim import MEMBER_HYPERPARAMETERS, Stacked, optimizer

    if fused and name == "rmsprop":
        pytest.skip("torch has no fused RMSprop")
    configs = [
        GANConfig(optimizer=name, lr=1e-2, beta1=0.5, momentum=0.0, weight_decay=0.0),
        GANConfig(optimizer=name, lr=3e-3, beta1=0.9, beta2=0.99, momentum=0.9, weight_decay=0.1),
    ]
    gen = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(2, 5, 3, generator=gen), "b": torch.randn(2, 3, generator=gen)}
    grads = [{n: torch.randn_like(p) for n, p in start.items()} for _ in range(4)]
    hyper = {
        h: torch.tensor([getattr(c, h) for c in configs], dtype=torch.float64) for h in MEMBER_HYPERPARAMETERS
    }
    params = {n: p.clone() for n, p in start.items()}
    stacked = Stacked(name, hyper, params, fused=fused)
    for g in grads:
        stacked.step(params, g)
    for k, config in enumerate(configs):
        own = {n: p[k].clone().requires_grad_(True) for n, p in start.items()}
        opt = optimizer(name, own.values(), config.lr, config)
        for g in grads:
            for n, p in own.items():
                p.grad = g[n][k].clone()
            opt.step()
        for n, p in own.items():
            assert torch.allclose(params[n][k], p.detach(), atol=1e-6, rtol=1e-5), (name, k, n)
