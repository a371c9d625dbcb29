"""A user objective whose first configuration kills the process that runs it, as the kernel's
out-of-memory killer would: the parameters of the first trial are written to POISON_FILE, and
every trial drawing them again is SIGKILLed. Other parameters return at once."""

import os
import signal
from pathlib import Path


def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    poison = Path(os.environ["POISON_FILE"])
    if not poison.exists():
        poison.write_text(repr(x))
    if repr(x) == poison.read_text():
        os.kill(os.getpid(), signal.SIGKILL)
    return x
