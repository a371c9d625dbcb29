"""A cheap objective that logs each evaluation it starts, to count evaluations across workers."""

import os
import time


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_int("y", 0, 5)
    log = os.environ.get("EVAL_LOG")
    if log:
        with open(log, "a") as f:  # one short append per line: atomic across processes
            f.write(f"{trial.number} {x!r} {y} {os.getpid()}\n")
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0.4")))
    return (x - 2) ** 2 + y
