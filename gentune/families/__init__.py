"""Model families: a config class, a default search space, a training loop and a sampler.

Every family subclasses `Family` (families/base.py; the contract, written down in
docs/families.md), and the objective uses nothing else, so a user's family passed as
`--model pkg.module:Class` or `--model FILE.py:Class` is tuned and scored exactly like a built-in
one. One file per built-in family (gan.py holds the MLP GAN and the DCGAN; vae.py,
transformer.py, diffusion.py); registry.py names them; `--model auto` searches across them at
once (auto.py). `gentune.testing.check_family` checks a family against the contract.
"""

from gentune.families.auto import AutoFamily
from gentune.families.base import IMAGE_OBJECTIVES, OBJECTIVES, Family, data_kind, image_meta
from gentune.families.diffusion import Diffusion
from gentune.families.gan import DCGAN, LEGACY_GAN_FORMAT, GanMlp
from gentune.families.registry import (
    BUILTIN,
    BUILTIN_FAMILIES,
    MODELS,
    REQUIRED,
    builtin_for,
    check_contract,
    check_data,
    default_space,
    get_family,
    load_family,
    missing_parts,
    portable_model,
)
from gentune.families.transformer import Transformer
from gentune.families.vae import VAE

__all__ = [
    "BUILTIN",
    "BUILTIN_FAMILIES",
    "DCGAN",
    "IMAGE_OBJECTIVES",
    "LEGACY_GAN_FORMAT",
    "MODELS",
    "OBJECTIVES",
    "REQUIRED",
    "VAE",
    "AutoFamily",
    "Diffusion",
    "Family",
    "GanMlp",
    "Transformer",
    "builtin_for",
    "check_contract",
    "check_data",
    "data_kind",
    "default_space",
    "get_family",
    "image_meta",
    "load_family",
    "missing_parts",
    "portable_model",
]
