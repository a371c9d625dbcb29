"""Issue 14, item 15 end to end: `gentune tune --dataset files` on 12, 50 and 200 of your images.

Below 100 images the run is refused in one line that names the rule, the count and the fix;
200 images (the fewest the default batch sizes of up to 128 fit) tune and report a floor.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("gentune-home")


def tune_files(n: int, cwd: Path, home: Path, *extra: str) -> subprocess.CompletedProcess:
    images = (load_digits().images[:n] / 16).astype(np.float32)  # unlabelled: an autoencoder's features
    np.save(cwd / f"mine{n}.npy", images)
    args = ["tune", "--dataset", "files", "--data-dir", f"mine{n}.npy", "--trials", "1", "--steps", "50"]
    return subprocess.run(
        [sys.executable, "-m", "gentune", *args, "--study", f"mine{n}", *extra],
        cwd=cwd,
        env={
            "GENTUNE_HOME": str(home),
            "OMP_NUM_THREADS": "1",
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("n", [12, 50])
def test_fewer_than_100_images_are_refused_in_one_line(tmp_path, home, n):
    r = tune_files(n, tmp_path, home)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert (
        r.stderr.startswith("error: the files dataset needs at least 100 images")
        and r.stderr.count("\n") == 1
    )
    assert f"(got {n}). Fix: add images until there are 100 or more" in r.stderr
    assert not any(home.rglob("*.pt"))  # no extractor was trained for data that is refused
    assert not (tmp_path / "runs" / f"mine{n}").exists()  # a refused dataset leaves no study behind


def test_200_images_tune_and_are_scored_next_to_their_floor(tmp_path, home):
    r = tune_files(200, tmp_path, home, "--no-report")
    assert r.returncode == 0, r.stderr
    best = json.loads((tmp_path / "runs" / "mine200" / "best.json").read_text())
    ex, floor = best["extractor"], best["floor"]
    assert ex["kind"] == "autoencoder" and ex["n"] == floor["n"] == best["metrics"]["n"] == 100
    assert ex["n_ref"] == 50 and "the reference split holds 50 images" in ex["trust"]
    assert best["metrics"]["fid"] > floor["fid"] > 0  # 50 steps of training: far from real
    assert "the reference split holds 50 images" in " ".join(r.stdout.split())  # `best`'s note
