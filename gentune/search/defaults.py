"""Default search spaces, one per model family.

Every space holds the tutorial's parameters where they apply (learning rate, batch size, width
and depth, optimizer type, weight decay) and then the family's own. Likelihood-defining fields
(the VAE's decoder, the Transformer's grey levels) stay fixed, so NLLs within a study compare.

The GAN space holds the tutorial's own parameters (learning rate log-uniform on [1e-5, 1e-2],
batch size 32-128) plus the others it names: Adam's beta1, the optimizer type, width and
depth, weight decay, and the number of D steps per G step. Ranges follow the large GAN studies
summarised in ../shared/notes (Lucic et al. 2018; Kurach et al. 2019).
"""

from __future__ import annotations

from gentune.search.space import CategoricalSpec, FloatSpec, IntSpec, SearchSpace


def gan_mlp_space() -> SearchSpace:
    return SearchSpace(
        {
            "lr": FloatSpec(low=1e-5, high=1e-2, log=True),
            "batch_size": IntSpec(low=32, high=128),
            "optimizer": CategoricalSpec(choices=["adam", "adamw", "sgd", "rmsprop"]),
            # beta1 = 0.9 (Adam's default) oscillates on GANs; 0.5 is the DCGAN choice.
            "beta1": FloatSpec(low=0.0, high=0.9, when={"optimizer": ["adam", "adamw"]}),
            "width": CategoricalSpec(choices=[64, 128, 256]),
            "depth": IntSpec(low=1, high=3),
            "weight_decay": FloatSpec(low=1e-7, high=1e-3, log=True),
            "d_steps": IntSpec(low=1, high=3),
        }
    )


def _common(lr=(1e-4, 3e-3), optimizers=("adam", "adamw", "sgd")) -> dict:
    """The tutorial's optimisation parameters, shared by the likelihood families."""
    return {
        "lr": FloatSpec(low=lr[0], high=lr[1], log=True),
        "batch_size": IntSpec(low=32, high=128),
        "optimizer": CategoricalSpec(choices=list(optimizers)),
        "weight_decay": FloatSpec(low=1e-7, high=1e-3, log=True),
    }


def dcgan_space() -> SearchSpace:
    # DCGAN practice (Radford et al. 2016; Kurach et al. 2019): beta1 near 0.5, lr near 2e-4,
    # a D learning rate of its own (TTUR), spectral normalisation worth trying.
    return SearchSpace(
        {
            "lr": FloatSpec(low=5e-5, high=2e-3, log=True),
            "lr_d": FloatSpec(low=5e-5, high=2e-3, log=True),
            "batch_size": IntSpec(low=32, high=128),
            "optimizer": CategoricalSpec(choices=["adam", "adamw", "sgd"]),
            "beta1": FloatSpec(low=0.0, high=0.9, when={"optimizer": ["adam", "adamw"]}),
            # 128 channels cost 5x the time of 32 on a CPU for 8x8 images; a GPU takes them easily.
            "width": CategoricalSpec(choices=[16, 32, 64]),
            "latent_dim": CategoricalSpec(choices=[32, 64, 128]),
            "spectral_norm": CategoricalSpec(choices=[False, True]),
            "batch_norm": CategoricalSpec(choices=[True, False]),
            "weight_decay": FloatSpec(low=1e-7, high=1e-3, log=True),
            "d_steps": IntSpec(low=1, high=2),
        }
    )


def vae_space() -> SearchSpace:
    return SearchSpace(
        {
            **_common(),
            "arch": CategoricalSpec(choices=["mlp", "conv"]),
            "width": CategoricalSpec(choices=[128, 256, 512], when={"arch": ["mlp"]}),
            "depth": IntSpec(low=1, high=3, when={"arch": ["mlp"]}),
            "dropout": FloatSpec(low=0.0, high=0.3, when={"arch": ["mlp"]}),
            "channels": CategoricalSpec(choices=[16, 32, 64], when={"arch": ["conv"]}),
            "latent_dim": CategoricalSpec(choices=[8, 16, 32]),
            "beta": FloatSpec(low=0.25, high=4.0, log=True),
            "kl_warmup": FloatSpec(low=0.0, high=0.5),
        }
    )


def transformer_space(kind: str = "image") -> SearchSpace:
    """On text the context length is tuned too and the models are larger (nanoGPT's
    character-level baseline is 4 layers of 128); on images a whole image is one window, and
    small models keep a trial to seconds on a CPU."""
    params = {
        **_common(lr=(1e-4, 3e-3), optimizers=("adamw", "adam", "sgd")),
        "weight_decay": FloatSpec(low=0.0, high=0.2),
        "n_layer": IntSpec(low=1, high=3),
        "n_head": CategoricalSpec(choices=[2, 4]),
        "d_model": CategoricalSpec(choices=[32, 64]),
        "dropout": FloatSpec(low=0.0, high=0.2),
        "batch_size": IntSpec(low=16, high=64),
    }
    if kind == "text":
        # At most 16 x 64 tokens a step through 4 layers of 128: about 1.3x nanoGPT's CPU
        # baseline (12 x 64), which reaches 1.88 nats/char in 2000 steps, about 3 min on one core.
        params.update(
            {
                "n_layer": IntSpec(low=2, high=4),
                "d_model": CategoricalSpec(choices=[64, 128]),
                "batch_size": IntSpec(low=8, high=16),
                "context": CategoricalSpec(choices=[32, 64]),
            }
        )
    return SearchSpace(params)


def diffusion_space() -> SearchSpace:
    # Sampling uses 50 respaced steps whatever T, so sampling cost stays fixed across trials.
    return SearchSpace(
        {
            **_common(),
            "arch": CategoricalSpec(choices=["mlp", "unet"]),
            "width": CategoricalSpec(choices=[128, 256, 512], when={"arch": ["mlp"]}),
            "channels": CategoricalSpec(choices=[8, 16], when={"arch": ["unet"]}),
            "depth": IntSpec(low=1, high=3),
            "timesteps": IntSpec(low=50, high=1000, log=True),
            "noise_schedule": CategoricalSpec(choices=["linear", "cosine"]),
            "ema": CategoricalSpec(choices=[0.0, 0.99, 0.995, 0.999]),
            "sample_steps": 50,
        }
    )
