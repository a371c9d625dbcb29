"""A cheap user objective in the tutorial's Optuna style, with seed-dependent noise."""

import math

import numpy as np


def objective(trial):
    lr = trial.suggest_loguniform("lr", 1e-5, 1e-1)
    width = trial.suggest_int("width", 16, 256)
    optimizer = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    noise = np.random.normal(0, 0.01)  # seeded by gentune before each trial
    return (math.log10(lr) + 3) ** 2 + (width - 64) ** 2 / 1e4 + (optimizer == "sgd") * 0.5 + noise
