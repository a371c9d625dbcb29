"""Training is bit-identical to the code before the families moved onto the one loop.

The numbers were recorded from gentune at commit ba49d1e (each GAN with its own loop and
GANResult, the families in one module), at one thread on this project's 2-core machine, whose
CPU runs torch's AVX512 kernels; other kernels round differently, so elsewhere the test is
skipped. Each case trains with log_every=20 for the GANs (the trainer's default otherwise) and
compares the final losses, the last log window (means, grad_norm's maximum, the curves) and a
digest of the weights: the generator's (the model) and the discriminator's.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from gentune.families import get_family

pytestmark = pytest.mark.usefixtures("one_thread")

RECORDED_ON = ("AVX512", "2.13")  # torch's CPU kernels, torch major.minor

# case: ((family, config, steps, seed), final losses, last history entry, (model, D) digests)
RECORDED = {
    "gan-default": (
        ("gan-mlp", {}, 60, 0),
        {"g": 0.5862084627151489, "d": 1.158687949180603},
        {
            "step": 60,
            "g_loss": 0.5234819054603577,
            "d_loss": 1.160321831703186,
            "d_acc": 0.5,
            "grad_norm": 1.343356728553772,
            "train_loss": 1.1536478996276855,
            "val_loss": 1.1485648155212402,
        },
        ("70683250631c6b57", "b9a3f9ba5dcca7d6"),
    ),
    "gan-dsteps2": (
        ("gan-mlp", {"d_steps": 2, "beta1": 0.5, "lr": 0.0005, "optimizer": "adamw", "width": 64}, 60, 1),
        {"g": 0.8205300569534302, "d": 1.002234697341919},
        {
            "step": 60,
            "g_loss": 1.1021002531051636,
            "d_loss": 0.8843382596969604,
            "d_acc": 0.9443359375,
            "grad_norm": 4.15268611907959,
            "train_loss": 0.8065129518508911,
            "val_loss": 0.7838846445083618,
        },
        ("63f333b523d34d10", "ee1ec88ce7240fd4"),
    ),
    "gan-sigmoid-sgd": (
        ("gan-mlp", {"d_output": "sigmoid", "optimizer": "sgd", "lr": 0.01, "depth": 1}, 60, 2),
        {"g": 0.8489072322845459, "d": 1.0579596757888794},
        {
            "step": 60,
            "g_loss": 1.0979090929031372,
            "d_loss": 1.1171245574951172,
            "d_acc": 0.736328125,
            "grad_norm": 3.456678628921509,
            "train_loss": 1.107113003730774,
            "val_loss": 1.0947527885437012,
        },
        ("c512049ae1435ca8", "b73991666a343fc8"),
    ),
    "dcgan": (
        ("dcgan", {"width": 8, "latent_dim": 16, "batch_size": 32, "lr_d": 0.0004}, 60, 3),
        {"g": 0.7387889623641968, "d": 1.2486060857772827},
        {
            "step": 60,
            "g_loss": 0.7214052081108093,
            "d_loss": 1.1520965099334717,
            "d_acc": 0.9320312738418579,
            "grad_norm": 0.7431724071502686,
            "train_loss": 1.0901405811309814,
            "val_loss": 1.0853101015090942,
        },
        ("4d63bda7bf45289f", "4edd2c112f4cee91"),
    ),
    "dcgan-sn-d2": (
        (
            "dcgan",
            {"width": 8, "latent_dim": 16, "batch_size": 32, "spectral_norm": True, "d_steps": 2},
            60,
            4,
        ),
        {"g": 0.6798511743545532, "d": 1.1479088068008423},
        {
            "step": 60,
            "g_loss": 0.740432620048523,
            "d_loss": 1.0114787817001343,
            "d_acc": 0.87109375,
            "grad_norm": 1.384559154510498,
            "train_loss": 0.9746899604797363,
            "val_loss": 0.9802006483078003,
        },
        ("83222d6923c5be77", "f4ee87d1724e853c"),
    ),
    "vae": (
        ("vae", {"width": 64, "depth": 1, "batch_size": 32}, 40, 3),
        {"loss": 39.273094177246094, "recon": 38.490257263183594, "kl": 0.7828372120857239},
        {
            "step": 40,
            "loss": 35.18708419799805,
            "recon": 33.66819381713867,
            "kl": 1.51889169216156,
            "train_loss": 33.08484649658203,
            "val_loss": 32.82723820508357,
        },
        ("d3d3fa5685c3d80b", None),
    ),
    "transformer": (
        ("transformer", {"n_layer": 1, "d_model": 32, "n_head": 2, "batch_size": 16}, 30, 3),
        {"loss": 2.640072822570801, "grad_norm": 2.4663965702056885},
        {
            "step": 30,
            "loss": 2.5248212814331055,
            "grad_norm": 2.1987175941467285,
            "train_loss": 2.4949655532836914,
            "val_loss": 2.4937126636505127,
        },
        ("5670d81207ece517", None),
    ),
    "diffusion": (
        ("diffusion", {"width": 64, "depth": 1, "timesteps": 20}, 40, 3),
        {"loss": 0.9648923873901367},
        {
            "step": 40,
            "loss": 0.9232614040374756,
            "train_loss": 0.9178887605667114,
            "val_loss": 0.903944265211525,
        },
        ("072e9bb1776cac7b", None),
    ),
}


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _same_machine() -> bool:
    version = ".".join(torch.__version__.split(".")[:2])
    return (torch.backends.cpu.get_cpu_capability(), version) == RECORDED_ON


@pytest.mark.skipif(not _same_machine(), reason=f"numbers recorded with torch kernels {RECORDED_ON}")
@pytest.mark.parametrize("case", RECORDED)
def test_training_reproduces_the_recorded_numbers(case, digits):
    (name, overrides, steps, seed), losses, last, (model, discriminator) = RECORDED[case]
    family = get_family(name)
    config = family.config_cls.from_dict(overrides)
    log_every = 20 if name in ("gan-mlp", "dcgan") else None
    result = family.train(config, digits, steps=steps, seed=seed, log_every=log_every)
    assert result.losses == losses
    assert result.history[-1] == last
    assert _digest(result.model) == model
    if discriminator is not None:
        assert _digest(result.extras["discriminator"]) == discriminator
