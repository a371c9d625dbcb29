"""Checkpoints: one format for every family, and the files gentune 0.1.0 wrote still load.

tests/legacy/v0.1.0 holds real trials of that version: MLP GANs in the old
`gentune-gan-checkpoint/1` format and VAEs in `gentune-model-checkpoint/1`. Each test copies the
file it reads into tmp_path first, so that nothing is ever written there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from gentune.errors import GentuneError
from gentune.families import LEGACY_GAN_FORMAT, get_family
from gentune.models.gan_mlp import GANConfig
from gentune.models.vae import VAEConfig
from gentune.train.checkpoint import MODEL_FORMAT

pytestmark = pytest.mark.usefixtures("one_thread")

LEGACY = Path(__file__).parents[1] / "legacy" / "v0.1.0"
FILES = [
    ("gan-mlp", GANConfig, LEGACY / "legacy-gan" / "trials" / str(i) / "generator.pt") for i in range(3)
] + [("vae", VAEConfig, LEGACY / "legacy-vae" / "trials" / str(i) / "generator.pt") for i in range(2)]
IDS = [f"{name}-{path.parent.name}" for name, _, path in FILES]


def _copy(path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(path, tmp_path / "generator.pt"))


def _fmt(path: Path) -> str:
    return torch.load(path, map_location="cpu", weights_only=True)["format"]


def test_the_legacy_files_are_what_these_tests_claim():
    assert [_fmt(path) for _, _, path in FILES] == [LEGACY_GAN_FORMAT] * 3 + [MODEL_FORMAT] * 2


@pytest.mark.parametrize("name, config_cls, path", FILES, ids=IDS)
def test_a_legacy_checkpoint_loads_and_samples(name, config_cls, path, tmp_path):
    family = get_family(name)
    config, model, info = family.load(_copy(path, tmp_path))
    assert isinstance(config, config_cls) and not model.training
    steps = 150 if name == "gan-mlp" else 100  # the README's commands
    assert info == {"meta": {"image_shape": [1, 8, 8]}, "extra": {"seed": 0, "budget": {"steps": steps}}}
    images = family.sample(model, 16, seed=1)
    assert images.shape == (16, 1, 8, 8) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, family.sample(model, 16, seed=1))


@pytest.mark.parametrize("name, config_cls, path", FILES, ids=IDS)
def test_a_legacy_checkpoint_saved_again_is_in_the_one_format(name, config_cls, path, tmp_path):
    family = get_family(name)
    config, model, info = family.load(_copy(path, tmp_path))
    again = family.save(tmp_path / "again.pt", config, model, extra=info["extra"])
    assert _fmt(again) == MODEL_FORMAT
    config2, model2, info2 = family.load(again)
    assert config2 == config and info2 == info
    assert torch.equal(family.sample(model2, 16, seed=1), family.sample(model, 16, seed=1))


def test_a_legacy_gan_file_is_refused_by_another_family(tmp_path):
    path = _copy(FILES[0][2], tmp_path)
    with pytest.raises(GentuneError, match="holds a 'gan-mlp' model, not 'dcgan'.*--model gan-mlp"):
        get_family("dcgan").load(path)


@pytest.mark.parametrize("name", ["gan-mlp", "dcgan"])
def test_new_gan_checkpoints_use_the_model_format(name, digits, tmp_path):
    family = get_family(name)
    config = family.config_cls.from_dict({"width": 8, "batch_size": 32})
    result = family.train(config, digits, steps=2)
    path = family.save(tmp_path / "generator.pt", config, result.model)
    payload = torch.load(path, weights_only=True)
    assert (payload["format"], payload["family"]) == (MODEL_FORMAT, name)
    assert payload["meta"] == {"image_shape": [1, 8, 8]} and "discriminator" not in str(payload.keys())


def _same_machine() -> bool:
    # The legacy files were written on this project's machine (AVX512 kernels), one thread.
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


@pytest.mark.skipif(not _same_machine(), reason="the legacy trials were trained with AVX512 kernels")
@pytest.mark.parametrize("name, config_cls, path", FILES, ids=IDS)
def test_retraining_a_legacy_trial_gives_its_saved_weights(name, config_cls, path, tmp_path, digits):
    """Training is bit-identical to gentune 0.1.0's: its trial, trained again, gives its file."""
    family = get_family(name)
    config, saved, info = family.load(_copy(path, tmp_path))
    result = family.train(config, digits, steps=info["extra"]["budget"]["steps"], seed=info["extra"]["seed"])
    a, b = saved.state_dict(), result.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
