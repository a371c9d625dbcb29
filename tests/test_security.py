"""Issue 14, security: no storage password in any output, file or report; study names that stay
inside runs/; a study's user file runs only as it was when the study was created."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from pg_fixture import postgres  # noqa: F401

from gentune.api import RunOptions, run_objective
from gentune.cli import main
from gentune.errors import GentuneError
from gentune.loading import CodeChangedError, load_object, trusting_changed_code
from gentune.settings import (
    DERIVED_NAME_ROOM,
    STUDY_NAME_MAX,
    SearchOptions,
    StudySettings,
    check_study_name,
    default_study_name,
)
from gentune.study.storage import hide_command_password, hide_password, rdb_url
from gentune.study.store import open_or_create
from gentune.study.targets import target_of
from gentune.trial.attrs import StudyKey

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVE = ROOT / "tests" / "objectives" / "noisy_quadratic.py"
SECRET = "secretpw"
UNREACHABLE = f"postgresql://u:{SECRET}@127.0.0.1:1/db"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("GENTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GENTUNE_DB_RETRY_SECONDS", "1")  # an unreachable server fails at once
    monkeypatch.delenv("GENTUNE_TRUST_CHANGED_CODE", raising=False)
    monkeypatch.delenv("GENTUNE_STORAGE", raising=False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:  # the users' files these tests load and change
        if name.startswith("gentune_user_"):
            del sys.modules[name]


def gentune(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the CLI in this process (its real entry point); (exit code, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["gentune", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def leaks(text: str) -> bool:
    """Whether `text` holds the password, also where a console wrapped it across lines."""
    return SECRET in text or SECRET in "".join(text.split())


def files_holding_secret(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def stored_text(storage: str) -> str:
    """Every attribute of every study and trial in `storage`, as text."""
    parts = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        system = study._storage.get_study_system_attrs(study._study_id)
        parts += [summary.study_name, repr(study.user_attrs), repr(system)]
        parts += [repr((t.params, t.user_attrs, t.system_attrs)) for t in study.trials]
    return "\n".join(parts)


# Item 1 and 2: passwords


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://u:secretpw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:secret@pw@h/db", "postgresql://u:***@h/db"),  # an unencoded "@"
        ("postgresql://u:secret pw@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=secretpw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("sqlite:///runs/x/study.db", "sqlite:///runs/x/study.db"),
        ("grpc://127.0.0.1:13000", "grpc://127.0.0.1:13000"),
    ],
)
def test_hide_password_on_a_url(url, shown):
    assert hide_password(url) == shown


def test_hide_password_in_messages():
    text = (
        "cannot open the storage 'redis://:secretpw@h:6379/0': refused; "
        "host=h user=u password=secretpw dbname=db; postgresql://u:secret@pw@h/db failed"
    )
    assert hide_password(text) == (
        "cannot open the storage 'redis://:***@h:6379/0': refused; "
        "host=h user=u password=*** dbname=db; postgresql://u:***@h/db failed"
    )


def test_hide_command_password_hides_quoted_passwords_whole():
    url = f"postgresql://u:it's a {SECRET}@h/db"
    command = shlex.join(["gentune", "tune", "--storage", url, "--study", "s"])
    assert hide_command_password(command) == "gentune tune --storage 'postgresql://u:***@h/db' --study s"
    unbalanced = f"gentune tune --storage 'postgresql://u:{SECRET}@h/db --study s"  # shlex refuses it
    assert hide_command_password(unbalanced) == "gentune tune --storage 'postgresql://u:***@h/db --study s"


def test_the_stored_command_hides_the_password(monkeypatch):
    """Item 1: the command gentune stores in a new study (and report.html shows) has no password,
    in either option form; a server run below checks the stored record itself."""
    from gentune.cli import _command_line

    argv = [
        "gentune",
        "tune",
        f"--storage=postgresql://u:{SECRET}@h/db",
        "--storage",
        UNREACHABLE,
        "--study",
        "s",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    assert _command_line() == (
        "gentune tune '--storage=postgresql://u:***@h/db' "
        "--storage 'postgresql://u:***@127.0.0.1:1/db' --study s"
    )


def test_report_and_best_of_an_old_study_hide_its_stored_password(monkeypatch, capsys, tmp_path):
    """Item 1: a study created before gentune hid passwords holds its command whole; the report
    (HTML and PNG), best.json and every message still show none."""
    monkeypatch.chdir(tmp_path)
    run_objective(
        load_object(f"{OBJECTIVE}:objective"),
        study="old",
        search=SearchOptions(trials=3, strategy="random"),
        run=RunOptions(runs_dir="runs", report=False, progress=False),
    )
    storage = f"sqlite:///{tmp_path / 'runs' / 'old' / 'study.db'}"
    study = optuna.load_study(study_name="old", storage=storage)
    old_command = f"gentune tune --storage postgresql://gentune:{SECRET}@db-host/gentune --study old"
    study.set_user_attr(StudyKey.COMMAND, old_command)

    code, out = gentune(monkeypatch, capsys, "report", "old")
    assert code == 0, out
    html = (tmp_path / "runs" / "old" / "report.html").read_text()
    assert "postgresql://gentune:***@db-host/gentune" in html  # the command is still shown
    code, more = gentune(monkeypatch, capsys, "report", "old", "--format", "png")
    assert code == 0, more
    out += more
    code, more = gentune(monkeypatch, capsys, "best", "--study", "old")
    assert code == 0, more
    out += more
    assert json.loads((tmp_path / "runs" / "old" / "best.json").read_text())["study"] == "old"
    assert not leaks(out)
    # study.db holds the old command as it was: that is the study's own record, not an output.
    assert files_holding_secret(tmp_path) == [str(tmp_path / "runs" / "old" / "study.db")]


@pytest.mark.parametrize(
    "url",
    [UNREACHABLE, "redis://u:secretpw@127.0.0.1:1/0", "postgresql://u@127.0.0.1:1/db?password=secretpw"],
)
def test_errors_against_an_unreachable_database_hide_the_password(monkeypatch, capsys, tmp_path, url):
    """Item 2: worker, best and report against a storage that cannot be opened."""
    monkeypatch.chdir(tmp_path)
    for args in (
        ("worker", "--storage", url, "--study", "nosuch"),
        ("best", "--study", "nosuch", "--storage", url),
        ("report", "nosuch", "--storage", url),
    ):
        code, out = gentune(monkeypatch, capsys, *args)
        assert code == 2 and "error:" in out, (args, out)
        assert not leaks(out), out
    assert files_holding_secret(tmp_path) == []


def test_a_worker_process_against_an_unreachable_server_prints_no_password(tmp_path):
    """Item 2's reproduction, as a user runs it: exit 2, one message, no password, no traceback."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "1000",
        "GENTUNE_HOME": str(tmp_path / "home"),
        "GENTUNE_DB_RETRY_SECONDS": "1",
    }
    r = subprocess.run(
        [sys.executable, "-m", "gentune", "worker", "--storage", UNREACHABLE, "--study", "nosuch"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "cannot open the storage postgresql+psycopg://u:***@127.0.0.1:1/db" in r.stderr
    assert "Traceback" not in r.stderr and not leaks(r.stdout + r.stderr)


def test_with_a_postgresql_server_no_output_file_report_or_record_holds_the_password(
    postgres,  # noqa: F811 - the fixture imported above
    monkeypatch,
    capsys,
    tmp_path,
):
    """Items 1 and 2 end to end on a real server (trust auth: the password is accepted and
    ignored): tune, create, worker, best and report, right and wrong names; then every output,
    every file and every stored attribute is searched for the password."""
    monkeypatch.chdir(tmp_path)
    plain = postgres.create_database()
    url = plain.replace("postgresql://gentune@", f"postgresql://gentune:{SECRET}@")
    objective = ["--objective-fn", f"{OBJECTIVE}:objective"]
    outputs = []
    for args, expected in (
        (("tune", *objective, "--trials", "2", "--storage", url, "--study", "pg"), 0),
        (("create", *objective, "--storage", url, "--study", "pg-created"), 0),
        (("worker", "--storage", url, "--study", "nosuch"), 2),
        (("best", "--study", "nosuch", "--storage", url), 2),
        (("report", "nosuch", "--storage", url), 2),
        (("best", "--study", "pg", "--storage", url), 0),
        (("report", "pg", "--storage", url, "-o", "pg.html"), 0),
        (("tune", *objective, "--trials", "2", "--storage", url, "--study", "pg", "--strategy", "random"), 2),
    ):
        code, out = gentune(monkeypatch, capsys, *args)
        assert code == expected, (args, out)
        outputs.append(out)
    text = "\n".join(outputs)
    assert "pg-created" in text and "gentune:***@127.0.0.1" in text  # create's worker line
    assert "no study named 'nosuch'" in text and "pg, pg-created" in text  # the names it lists
    assert not leaks(text)
    assert (tmp_path / "runs" / "pg" / "report.html").exists() and (tmp_path / "pg.html").exists()
    assert files_holding_secret(tmp_path) == []
    records = stored_text(rdb_url(plain))
    assert "gentune:***@127.0.0.1" in records and not leaks(records)


# Item 3: study names

BAD_NAMES = ["../../x", "ABS", ".", "..", "a" * 300, "a/b", "a b", "-x", ""]
ESCAPING = {"../../x", "ABS", ".", "..", "a/b", ""}  # refused even when opening an old study


def _bad(name: str, tmp_path: Path) -> str:
    return str(tmp_path / "abs-victim") if name == "ABS" else name


@pytest.mark.parametrize(
    "command",
    [
        ["tune", "--dataset", "digits", "--steps", "100", "--n-eval", "200", "--trials", "1", "--study"],
        ["tune", "--objective-fn", f"{OBJECTIVE}:objective", "--trials", "1", "--study"],
        ["create", "--objective-fn", f"{OBJECTIVE}:objective", "--study"],
        ["worker", "--storage", "sqlite:///runs/w/study.db", "--study"],
        ["best", "--study"],
        ["sample", "--n", "5", "--study"],
        ["report", "--"],
    ],
    ids=lambda c: c[0] + ("-objective" if "--objective-fn" in c and c[0] == "tune" else ""),
)
def test_bad_study_names_are_refused_before_anything_is_created(monkeypatch, capsys, tmp_path, command):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    opens = command[0] in ("worker", "best", "sample", "report")  # an existing study, maybe older
    for name in BAD_NAMES:
        code, out = gentune(monkeypatch, capsys, *command, _bad(name, tmp_path))
        assert code == 2, (name, out)
        assert "Traceback" not in out
        if opens and name not in ESCAPING:
            continue  # a name made before the rule still opens a study; here there is none
        assert (
            "the study name" in out and "letters a-z A-Z, digits" in out and "Fix: pass e.g. --study" in out
        )
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no x, no abs-victim, no GENTUNE_HOME
    assert list(work.iterdir()) == []


def test_a_study_named_by_a_path_cannot_overwrite_files_there(monkeypatch, capsys, tmp_path):
    """Item 3's reproduction: `--study /some/dir` overwrote report.html and best.json there."""
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("best.json", "report.html"):
        (victim / name).write_text("keep me")
    storage = f"sqlite:///{tmp_path / 'other.db'}"
    study = optuna.create_study(study_name=str(victim), storage=storage)  # made by another tool
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    for args in (("best", "--study", str(victim)), ("report", str(victim)), ("best", "--study", "../victim")):
        code, out = gentune(monkeypatch, capsys, *args, "--storage", storage)
        assert code == 2 and "the study name contains '/'" in out, out
    assert {p.name: p.read_text() for p in victim.iterdir()} == {
        "best.json": "keep me",
        "report.html": "keep me",
    }


def test_nul_and_long_names_are_refused_by_the_api(tmp_path):
    for name in ("a\0b", "x" * 300, "../x", "/abs"):
        with pytest.raises(GentuneError, match="the study name"):
            RunOptions(study=name, runs_dir=tmp_path)
        with pytest.raises(GentuneError, match="the study name"):
            run_objective(lambda t: 0.0, study=name, run=RunOptions(runs_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_names_phases_derive_from_the_longest_name_stay_valid(tmp_path):
    """A 100-character study runs --stages, --narrow and --confirm: its derived studies
    (<study>-screen, -stageN, -narrow, -confirm) are valid names and their folders exist."""
    from gentune.api import Phases

    name = "n" * STUDY_NAME_MAX
    result = run_objective(
        load_object(f"{OBJECTIVE}:objective"),
        study=name,
        search=SearchOptions(trials=4, strategy="random"),
        run=RunOptions(runs_dir=tmp_path, report=False, progress=False, workers=1),
        phases=Phases(
            stages="auto", screen_trials=4, narrow=True, narrow_trials=3, confirm=1, confirm_seeds=1
        ),
        objective_spec=f"{OBJECTIVE}:objective",
    )
    folders = sorted(p.name.removeprefix(name) for p in tmp_path.iterdir())
    assert "-screen" in folders and "-stage1" in folders and any(f.endswith("-confirm") for f in folders), (
        folders
    )
    assert any("-narrow" in f for f in folders), folders
    for folder in folders:
        check_study_name(name + folder, derived=True)
        assert len(name + folder) <= STUDY_NAME_MAX + DERIVED_NAME_ROOM
    assert result.best is not None


def test_default_names_are_valid_whatever_the_data_folder():
    name = default_study_name("gan-mlp", "files:my faces (2024)", "tpe", "fid")
    assert name == "gan-mlp-files-my_faces__2024_-tpe-fid" and check_study_name(name) == name
    assert check_study_name(default_study_name("x" * 90, "files:" + "y" * 90, "tpe", "fid"))


# Item 4: a shared study database is a trust boundary


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_changed_objective_file_is_refused_unless_trusted(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    obj = tmp_path / "obj.py"
    obj.write_text(OBJECTIVE.read_text())
    storage = f"sqlite:///{tmp_path / 'runs' / 'u' / 'study.db'}"
    code, out = gentune(
        monkeypatch, capsys, "create", "--objective-fn", "obj.py:objective", "--trials", "3", "--study", "u"
    )
    assert code == 0, out
    created = _sha(obj)
    study = optuna.load_study(study_name="u", storage=storage)
    assert study.user_attrs[StudyKey.CODE_SHA256] == created

    # The file changes (here: a line that would leave a mark if it ran).
    marker = tmp_path / "ran"
    obj.write_text(OBJECTIVE.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    changed = _sha(obj)
    code, out = gentune(monkeypatch, capsys, "worker", "--study", "u", "--storage", storage, "--no-progress")
    assert code == 2 and not marker.exists()
    flat = " ".join(out.split())
    assert f"the objective file {obj} is not the file this study was created with" in flat
    assert changed[:12] in flat and created[:12] in flat and "--trust-changed-code" in flat
    assert len(study.get_trials()) == 0
    # A worker that trusts the change runs it, and leaves the stored hash alone.
    code, out = gentune(
        monkeypatch,
        capsys,
        "worker",
        "--study",
        "u",
        "--storage",
        storage,
        "--no-progress",
        "--trials",
        "1",
        "--trust-changed-code",
    )
    assert code == 0, out
    assert marker.exists() and "GENTUNE_TRUST_CHANGED_CODE" not in os.environ
    assert optuna.load_study(study_name="u", storage=storage).user_attrs[StudyKey.CODE_SHA256] == created
    marker.unlink()
    # Resuming with gentune tune is refused the same way, before any trial.
    code, out = gentune(
        monkeypatch, capsys, "tune", "--objective-fn", "obj.py:objective", "--trials", "3", "--study", "u"
    )
    assert code == 2 and "is not the file this study was created with" in " ".join(out.split())
    assert len(study.get_trials()) == 1

    # gentune tune --trust-changed-code stores the new hash: workers accept the file from then on.
    code, out = gentune(
        monkeypatch,
        capsys,
        "tune",
        "--objective-fn",
        "obj.py:objective",
        "--trials",
        "2",
        "--study",
        "u",
        "--trust-changed-code",
        "--no-report",
    )
    assert code == 0, out
    assert optuna.load_study(study_name="u", storage=storage).user_attrs[StudyKey.CODE_SHA256] == changed
    code, out = gentune(
        monkeypatch, capsys, "worker", "--study", "u", "--storage", storage, "--no-progress", "--trials", "3"
    )
    assert code == 0, out


def test_a_changed_family_file_is_refused_by_a_worker(monkeypatch, capsys, tmp_path):
    """--model FILE.py:Class: created (gentune create stores the hash), then changed: a worker
    does not import it, and with --trust-changed-code it does."""
    monkeypatch.chdir(tmp_path)
    fam = tmp_path / "fam.py"
    fam.write_text(
        "from gentune.families.transformer import Transformer\n\n\nclass MyT(Transformer):\n    pass\n"
    )
    text = tmp_path / "t.txt"
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran"]
    text.write_text(" ".join(words[(i * 7) % 9] for i in range(3000)))
    create = [
        "create",
        "--model",
        "fam.py:MyT",
        "--dataset",
        "text",
        "--data-file",
        str(text),
        "--steps",
        "5",
        "--study",
        "f",
    ]
    code, out = gentune(monkeypatch, capsys, *create)
    assert code == 0, out
    storage = f"sqlite:///{tmp_path / 'runs' / 'f' / 'study.db'}"
    study = optuna.load_study(study_name="f", storage=storage)
    assert study.user_attrs[StudyKey.CODE_SHA256] == _sha(fam)

    marker = tmp_path / "ran"
    fam.write_text(fam.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    with pytest.raises(CodeChangedError, match="the model family file .*fam.py is not the file"):
        target_of(study)
    assert not marker.exists()
    with trusting_changed_code():
        assert type(target_of(study).family).__name__ == "MyT"
    assert marker.exists()


def test_the_bytes_hashed_are_the_bytes_run(tmp_path):
    path = tmp_path / "lt_pinned.py"
    path.write_text("VALUE = 1\n\ndef f():\n    return VALUE\n")
    good = _sha(path)
    try:
        assert load_object(f"{path}:f", sha256=good)() == 1
        path.write_text("VALUE = 2\n\ndef f():\n    return VALUE\n")
        with pytest.raises(CodeChangedError) as e:
            load_object(f"{path}:f", sha256=good)
        assert e.value.fix and "--trust-changed-code" in e.value.fix
        assert load_object(f"{path}:f")() == 2  # no hash asked: the file as it is
    finally:
        sys.modules.pop("gentune_user_lt_pinned", None)


def test_a_built_in_study_stores_no_hash(tmp_path):
    settings = StudySettings()
    study = open_or_create("b", f"sqlite:///{tmp_path / 'b.db'}", settings=settings)
    from gentune.phases.search import pin_code

    pin_code(study, settings.model, "model family", trust=False)
    pin_code(study, "math:sqrt", "objective", trust=False)
    assert StudyKey.CODE_SHA256 not in study.user_attrs


def test_the_trust_boundary_is_documented():
    doc = (ROOT / "docs" / "distributed.md").read_text()
    assert "## A shared study database is a trust boundary" in doc
    assert "--trust-changed-code" in doc and "code_sha256" in doc and "PGPASSWORD" in doc


def test_worker_processes_get_the_storage_url_in_their_environment_not_their_command_line():
    from gentune.study.workers import worker_command

    cmd = worker_command(
        "s", 0, device="cpu", threads=1, trials=2, timeout=None, data_dir=None, runs_dir="runs"
    )
    assert "--storage" not in cmd and not any("secretpw" in part for part in cmd)  # `ps` shows this
