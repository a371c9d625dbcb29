"""A cheap user objective that takes a moment per trial, for interruption tests."""

import os
import time


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_int("y", 0, 5)
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0.4")))
    return (x - 2) ** 2 + y
