"""A user objective that stores 100 kB with each trial, to fill a small disk in a few trials."""


def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    trial.set_user_attr("bulk", "x" * 100_000)
    return x
