"""Loading a user's FILE.py:NAME: sys.path restored, reloads only on change, errors that name the line."""

from __future__ import annotations

import sys

import pytest

from gentune.errors import GentuneError
from gentune.loading import load_object


@pytest.fixture
def write(tmp_path, request):
    """Write a file under tmp_path; its gentune_user_* module is dropped after the test."""
    stems = []

    def write(name: str, text: str):
        path = tmp_path / name
        path.write_text(text)
        stems.append(path.stem)
        return path

    yield write
    for stem in stems:
        sys.modules.pop(f"gentune_user_{stem}", None)
        sys.modules.pop(stem, None)


def test_a_file_imports_its_neighbours_and_sys_path_is_restored(write):
    write("lt_helper.py", "K = 3\n")
    path = write("lt_main.py", "from lt_helper import K\n\ndef f():\n    return K\n")
    before = list(sys.path)
    assert load_object(f"{path}:f")() == 3
    assert sys.path == before
    assert "gentune_user_lt_main" in sys.modules  # pickle finds the file's objects by module


def test_sys_path_is_restored_when_the_file_fails(write):
    path = write("lt_fails.py", "raise RuntimeError('boom')\n")
    before = list(sys.path)
    with pytest.raises(RuntimeError, match="boom"):
        load_object(f"{path}:f")
    assert sys.path == before
    assert "gentune_user_lt_fails" not in sys.modules  # no half-run module is left behind


def test_an_unchanged_file_is_not_run_again_and_a_changed_one_is(write):
    path = write("lt_reload.py", "class C:\n    v = 1\n")
    first = load_object(f"{path}:C")
    assert load_object(f"{path}:C") is first  # instances of C stay picklable and isinstance-able
    path.write_text("class C:\n    v = 22\n")
    assert load_object(f"{path}:C").v == 22


def test_a_failed_reload_keeps_the_module_that_worked(write):
    path = write("lt_keep.py", "def f():\n    return 1\n")
    load_object(f"{path}:f")
    path.write_text("def f(:\n")
    with pytest.raises(GentuneError):
        load_object(f"{path}:f")
    assert sys.modules["gentune_user_lt_keep"].f() == 1


def test_a_syntax_error_names_the_file_and_line(write):
    path = write("lt_syntax.py", "x = 1\n\ndef objective(trial:\n    return 0\n")
    with pytest.raises(GentuneError) as info:
        load_object(f"{path}:objective")
    msg = str(info.value)
    assert "lt_syntax.py line 3" in msg and "Fix: correct the syntax at lt_syntax.py line 3" in msg
    assert "objective cannot be loaded" in msg


def test_a_syntax_error_in_a_neighbour_names_the_neighbour(write):
    write("lt_badhelper.py", "def g(:\n")
    path = write("lt_usesbad.py", "import lt_badhelper\n")
    with pytest.raises(GentuneError, match=r"lt_badhelper\.py line 1"):
        load_object(f"{path}:f", "model family")


def test_a_missing_package_names_the_import_line_and_the_install(write):
    path = write("lt_missing.py", "import os\nimport lt_no_such_package\n")
    with pytest.raises(GentuneError) as info:
        load_object(f"{path}:f")
    msg = str(info.value)
    assert "lt_missing.py line 2" in msg
    assert "pip install lt_no_such_package" in msg


def test_a_missing_name_is_not_told_to_install_anything(write):
    path = write("lt_badname.py", "\nfrom os import no_such_name\n")
    with pytest.raises(GentuneError) as info:
        load_object(f"{path}:f")
    msg = str(info.value)
    assert "lt_badname.py line 2" in msg and "pip install" not in msg


def test_a_missing_file_and_a_missing_name(write, tmp_path):
    with pytest.raises(GentuneError, match="does not exist"):
        load_object(f"{tmp_path / 'nope.py'}:f")
    path = write("lt_names.py", "def alpha():\n    pass\n")
    with pytest.raises(GentuneError, match="use one of: alpha"):
        load_object(f"{path}:beta")


def test_a_syntax_error_in_an_imported_module_names_it(tmp_path, monkeypatch):
    (tmp_path / "lt_badmod.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lt_badmod", raising=False)
    with pytest.raises(GentuneError, match=r"lt_badmod\.py line 1 is not valid Python"):
        load_object("lt_badmod:f")
