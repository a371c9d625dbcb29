"""`gentune ARGS` through its entry point in this process, for tests that read the studies and
the messages rather than the process (a fresh interpreter costs seconds of imports). Exit codes
of `python -m gentune` itself, signals and killed workers stay subprocess tests."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest


def gentune_here(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `gentune ARGS` here, in folder `cwd` with the variables `env` set; its exit code
    (SystemExit's, else 0), stdout and stderr as a CompletedProcess."""
    from gentune.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        if cwd is not None:
            mp.chdir(cwd)
        for name, value in (env or {}).items():
            mp.setenv(name, value)
        mp.setattr(sys, "argv", ["gentune", *args])
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, stdout.getvalue(), stderr.getvalue())
