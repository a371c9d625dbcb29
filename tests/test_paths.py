"""gentune.paths: outputs are written whole or not at all, with a message that says why."""

from __future__ import annotations

import pytest

from gentune.errors import GentuneError
from gentune.paths import write_atomic


def test_a_failed_write_leaves_the_old_file_whole_and_says_why(tmp_path):
    target = tmp_path / "best.json"
    write_atomic(target, "old", "best.json")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(GentuneError, match="could not write best.json") as e:
        write_atomic(blocker / "best.json", "new", "best.json", fix="pass -o elsewhere")
    assert e.value.fix == "pass -o elsewhere"
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "best.json",
        "blocker",
    ]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # the umask's mode, like other outputs


def test_the_api_refuses_a_runs_folder_it_cannot_write(tmp_path):
    from gentune.api import RunOptions, SearchOptions, run_objective

    (tmp_path / "f").write_text("a file where runs/ should be")
    with pytest.raises(GentuneError, match="the study's folder must be a folder gentune can write to"):
        run_objective(
            lambda t: t.suggest_float("x", 0, 1),
            study="q",
            search=SearchOptions(trials=1),
            run=RunOptions(runs_dir=tmp_path / "f", progress=False),
        )
