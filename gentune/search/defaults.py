"""Default search spaces, one per model family.

The GAN space holds the tutorial's own parameters (learning rate log-uniform on [1e-5, 1e-2],
batch size 32-128) plus the others it names: Adam's beta1, the optimizer type, width and
depth, weight decay, and the number of D steps per G step. Ranges follow the large GAN studies
summarised in ../shared/notes (Lucic et al. 2018; Kurach et al. 2019).
"""

from __future__ import annotations

from .space import CategoricalSpec, FloatSpec, IntSpec, SearchSpace


def gan_mlp_space() -> SearchSpace:
    return SearchSpace({
        "lr": FloatSpec(low=1e-5, high=1e-2, log=True),
        "batch_size": IntSpec(low=32, high=128),
        "optimizer": CategoricalSpec(choices=["adam", "adamw", "sgd", "rmsprop"]),
        # beta1 = 0.9 (Adam's default) oscillates on GANs; 0.5 is the DCGAN choice.
        "beta1": FloatSpec(low=0.0, high=0.9, when={"optimizer": ["adam", "adamw"]}),
        "width": CategoricalSpec(choices=[64, 128, 256]),
        "depth": IntSpec(low=1, high=3),
        "weight_decay": FloatSpec(low=1e-7, high=1e-3, log=True),
        "d_steps": IntSpec(low=1, high=3),
    })
