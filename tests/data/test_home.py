"""Issue 14, item 17: an unusable GENTUNE_HOME (a file, under a file, not writable, full) is a
message with the fix `export GENTUNE_HOME=...`, not a traceback, and leaves no partial file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gentune.errors import GentuneError
from gentune.metrics.features import Autoencoder, _save_atomic
from gentune.paths import gentune_home

ROOT = Path(__file__).resolve().parents[2]


def _refusal(monkeypatch, home: Path) -> GentuneError:
    monkeypatch.setenv("GENTUNE_HOME", str(home))
    with pytest.raises(GentuneError) as info:
        gentune_home()
    err = info.value
    assert "$GENTUNE_HOME" in str(err) and err.value == str(home)
    assert err.fix.startswith("export GENTUNE_HOME=")
    return err


def test_a_file_is_refused(monkeypatch, tmp_path):
    (tmp_path / "home").write_text("")
    assert "is a file, not a folder" in str(_refusal(monkeypatch, tmp_path / "home"))


def test_a_path_under_a_file_is_refused(monkeypatch, tmp_path):
    (tmp_path / "home").write_text("")
    assert "lies under a file" in str(_refusal(monkeypatch, tmp_path / "home" / "cache"))


def test_a_folder_without_write_access_is_refused(monkeypatch, tmp_path):
    # root writes through chmod 555, so the answer of os.access (also False on a read-only
    # mount) is what is faked here.
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode))
    assert "is not writable" in str(_refusal(monkeypatch, tmp_path))


def test_a_usable_home_is_created(monkeypatch, tmp_path):
    monkeypatch.setenv("GENTUNE_HOME", str(tmp_path / "a" / "b"))
    assert gentune_home() == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()


def test_a_full_disk_while_caching_the_extractor_is_a_message_and_leaves_no_part(monkeypatch, tmp_path):
    def full(*args, **kwargs):  # what torch's writer raises on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 25024 vs 24920")

    monkeypatch.setattr(torch, "save", full)
    path = tmp_path / "extractors" / "x.pt"
    with pytest.raises(GentuneError) as info:
        _save_atomic(path, Autoencoder((1, 8, 8)), {})
    err = info.value
    assert "could not write the feature extractor's cache file" in str(err) and "KiB free" in str(err)
    assert "unexpected pos" not in str(err) and "export GENTUNE_HOME=" in err.fix
    assert list(path.parent.iterdir()) == []  # the temporary file is gone


def test_the_cli_says_so_in_one_line_with_exit_code_2(tmp_path):
    (tmp_path / "home").write_text("")
    r = subprocess.run(
        [sys.executable, "-m", "gentune", "tune", "--dataset", "digits", "--trials", "1", "--steps", "50"],
        cwd=tmp_path,
        env={"GENTUNE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    # The start banner (study, storage, outputs, resume) comes first; the error is its last line.
    *banner, error = r.stderr.splitlines()
    assert "Traceback" not in r.stderr and banner[0].startswith("study ")
    assert "is a file, not a folder" in error and "Fix: export GENTUNE_HOME=" in error
