"""User objectives that break the rules, as careless or buggy code does (tests/study/test_user_code.py)."""

import os
import sys
import time


def returns_str(trial):
    trial.suggest_float("x", 0, 1)
    return "0.5"


def returns_tuple(trial):
    trial.suggest_float("x", 0, 1)
    return (1.0, 2.0)


def returns_nan(trial):
    trial.suggest_float("x", 0, 1)
    return float("nan")


def returns_none(trial):
    trial.suggest_float("x", 0, 1)


def exits(trial):
    trial.suggest_float("x", 0, 1)
    sys.exit(0)


def hangs(trial):
    """Sleeps far past any test's timeout, and swallows the ordinary exceptions on the way."""
    trial.suggest_float("x", 0, 1)
    try:
        time.sleep(float(os.environ.get("HANG_SECONDS", "1000")))
    except Exception:  # noqa: BLE001 - a careless objective: gentune's stop must get through
        return 0.0
    return 1.0


def fails_on_odd(trial):
    """Every other trial raises, with brackets in its message that rich would read as markup."""
    x = trial.suggest_categorical("opt", ["[/x]", "[adam, sgd]"])
    if trial.number % 2:
        raise ValueError(f"bad value [/x] for {x}")
    return float(len(x))


def brackets(trial):
    """Choices and a message that rich would read as markup."""
    opt = trial.suggest_categorical("opt", ["[/x]", "[adam, sgd]"])
    return float(len(opt)) + trial.suggest_float("x", 0, 1)
