"""`gentune report` from a study's storage alone: the HTML page, its safety, and the PNG plots."""

from __future__ import annotations

import html
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image
from report_fixtures import HOSTILE, make_study

from gentune.errors import GentuneError, StudyError
from gentune.report import write_report
from gentune.report.extract import (
    best_trials,
    compute_totals,
    extract_study,
    history,
    open_study,
    state_counts,
)
from gentune.report.html import SECTIONS, script_json
from gentune.report.plots import PNG_NAMES

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[str, str, Path]:
    """A 12-trial study (1 failed, 4 pruned, 7 complete) and its HTML report."""
    tmp = tmp_path_factory.mktemp("demo")
    storage, name = make_study(tmp, n_trials=12)
    return storage, name, write_report(storage, name, tmp / "out" / "report.html")[0]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> str:
    """The page of a study whose name, a choice, prune reasons and texts are markup."""
    tmp = tmp_path_factory.mktemp("hostile")
    storage, name = make_study(tmp, name=HOSTILE, n_trials=8, hostile=True, text=True)
    return write_report(storage, name, tmp / "report.html")[0].read_text(encoding="utf-8")


class _Tags(HTMLParser):
    """Every start tag with its attributes; script bodies are not parsed as markup."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def _plot_ids(page: str) -> set[str]:
    return set(re.findall(r'<div class="plot" id="plot-(\w+)"', page))


def test_html_report_has_every_section_and_plot(demo):
    storage, name, out = demo
    page = out.read_text(encoding="utf-8")
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    assert _plot_ids(page) == {
        "history",
        "importance",
        "curves",
        "overfit",
        "contour",
        "slice",
        "parallel",
        "timeline",
    }
    figures = json.loads(re.search(r'id="figures">(.*?)</script>', page, re.S).group(1))
    assert set(figures) == {f"plot-{k}" for k in _plot_ids(page)}
    assert page.count("plotly.js v") == 1  # the library is inlined exactly once
    # Train/validation losses: the best trials, and every trial flagged as overfitting in red.
    traces = {t["name"]: t for t in figures["plot-overfit"]["data"]}
    flagged = [n for n in traces if "(overfitting)" in n]
    assert flagged and all(traces[n]["line"]["color"] == "#dc2626" for n in flagged)
    assert {n.rsplit(" ", 1)[1] for n in traces} == {"train", "val"}
    # Summary: counts by state, the floor, the extractor's trust note, the command.
    assert "<th>completed</th><td>7</td>" in page
    assert "<th>pruned: diverged</th><td>2</td>" in page
    assert "<th>failed</th><td>1</td>" in page
    assert "Metrics (N = 2000)" in page and "compare only within this study" in page
    assert html.escape("gentune tune --model gan-mlp --trials 20 --objective fid 'a&b' <x>") in page
    assert page.count('<img src="data:image/png;base64,') == 1 + 4 + 4  # real, best 4, progress


def test_html_report_loads_nothing_from_the_network(demo):
    page = demo[2].read_text(encoding="utf-8")
    tags = _tags(page)
    assert not [t for t, a in tags if t == "script" and "src" in a]
    links = [a.get("src") or a.get("href") or "" for _, a in tags]
    assert not [u for u in links if u.startswith(("http:", "https:", "//"))]
    assert not [t for t, a in tags if t == "link" and a.get("rel") == "stylesheet"]


def test_injected_markup_is_shown_as_text(hostile):
    assert HOSTILE not in hostile
    assert f"gentune report: {html.escape(HOSTILE)}</h1>" in hostile
    assert f"<title>gentune report: {html.escape(HOSTILE)}</title>" in hostile
    assert f"<pre>{html.escape(HOSTILE)}</pre>" in hostile  # a text sample
    assert hostile.count("<script") == 3  # plotly.js, the figures' JSON, the page's own code
    # The hostile categorical choice still reaches the figures, as data.
    figures = json.loads(re.search(r'id="figures">(.*?)</script>', hostile, re.S).group(1))
    assert HOSTILE in json.dumps(figures["plot-parallel"])


def test_script_json_cannot_end_the_script_element():
    raw = json.dumps({"a": "</script><!-- & \u2028"})
    safe = script_json(raw)
    assert "<" not in safe and ">" not in safe and "\u2028" not in safe
    assert json.loads(safe) == json.loads(raw)


def test_png_mode_writes_the_key_plots(demo, tmp_path):
    storage, name, _ = demo
    written = write_report(storage, name, tmp_path / "pngs", fmt="png")
    assert [p.name for p in written] == list(PNG_NAMES)
    for path in written:
        image = Image.open(io.BytesIO(path.read_bytes()))
        assert image.format == "PNG" and image.width > 400 and image.height > 300
    # the demo flags overfitting trials: their curves are drawn in red (#dc2626)
    pixels = np.asarray(Image.open(tmp_path / "pngs" / "overfit.png").convert("RGB")).reshape(-1, 3)
    assert (np.abs(pixels.astype(int) - (220, 38, 38)).sum(axis=1) < 30).sum() > 100


def test_study_without_completed_trials_still_reports(tmp_path):
    storage, name = make_study(tmp_path, n_trials=3, n_failed=1, n_pruned=2)
    optuna.load_study(study_name=name, storage=storage).ask()  # a trial still running
    page = write_report(storage, name, tmp_path)[0].read_text(encoding="utf-8")
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    assert "No completed trial yet." in page
    assert "<th>running</th><td>1</td>" in page and '<p class="big">4 trials</p>' in page
    assert "drawn from 10 trials or more, at least 2 of them complete; this study has 0 complete" in page
    assert _plot_ids(page) == {"curves", "timeline"}  # both are drawn from unfinished trials
    assert len(write_report(storage, name, tmp_path / "png", fmt="png")) == len(PNG_NAMES)


def test_study_with_no_trials_at_all_reports(tmp_path):
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(storage=storage, study_name="empty")
    page = write_report(storage, "empty", tmp_path / "r.html")[0].read_text(encoding="utf-8")
    assert '<p class="big">0 trials</p>' in page and _plot_ids(page) == set()
    assert len(write_report(storage, "empty", tmp_path / "png", fmt="png")) == len(PNG_NAMES)


def test_single_parameter_study_reports(tmp_path):
    storage, name = make_study(tmp_path, n_trials=6, params=("lr",), n_pruned=1, images=False)
    page = write_report(storage, name, tmp_path / "report.html")[0].read_text(encoding="utf-8")
    assert "Needs 2 parameters and 2 completed trials (has 1 and 4)." in page
    assert {"history", "slice"} <= _plot_ids(page)
    # 4 complete and 1 pruned trial: too few to rest importances on (tests/report/test_trust.py).
    assert "importance" not in _plot_ids(page) and "this study has 4 complete and 1 pruned" in page
    assert "No samples stored" in page


def test_multi_objective_study_draws_the_pareto_front(tmp_path):
    storage, name = make_study(tmp_path, n_trials=10, n_objectives=2, n_pruned=2)
    page = write_report(storage, name, tmp_path / "report.html")[0].read_text(encoding="utf-8")
    assert "pareto" in _plot_ids(page) and "history" in _plot_ids(page)
    assert "trials on the Pareto front" in page
    info = extract_study(open_study(storage, name))
    front = best_trials(info)
    for t in front:  # no front member is beaten on both objectives by any completed trial
        assert not any(o.values[0] < t.values[0] and o.values[1] > t.values[1] for o in info.completed)


def test_extracted_counts_totals_and_history(demo):
    storage, name, _ = demo
    info = extract_study(open_study(storage, name))
    counts = state_counts(info)
    assert (counts["completed"], counts["failed"], counts["total"]) == (7, 1, 12)
    assert counts["pruned"] == {"diverged": 2, "pruned": 2}
    totals = compute_totals(info)
    # The fixture's trials last train_seconds + 5 s: 1 failed (50), 4 pruned (60), 7 done (80).
    assert totals["train_seconds"] == 50 + 4 * 60 + 7 * 80
    assert totals["wall_seconds"] == pytest.approx(totals["train_seconds"] + 12 * 5)
    assert totals["workers"] == ["node-a:101", "node-b:202"]
    h = history(info)
    assert h["best"] == [min(h["values"][: i + 1]) for i in range(len(h["values"]))]
    ranked = best_trials(info)
    assert [t.values[0] for t in ranked] == sorted(t.values[0] for t in info.completed)


def test_stored_strings_that_are_not_pngs_never_reach_the_page(tmp_path):
    storage, name = make_study(tmp_path, n_trials=3, n_failed=0, n_pruned=0)
    study = optuna.load_study(study_name=name, storage=storage)
    study.set_user_attr("real_png", '"><script>alert(2)</script>')
    page = write_report(storage, name, tmp_path / "r.html")[0].read_text(encoding="utf-8")
    assert "alert(2)" not in page
    assert page.count('<img src="data:image/png;base64,') == 3 + 4  # best trials, progress


def test_missing_study_or_storage_is_a_user_error(demo, tmp_path):
    storage, name, _ = demo
    with pytest.raises(StudyError, match=f"no study named 'nope' in .*; studies there: {name}"):
        write_report(storage, "nope", tmp_path / "r.html")
    missing = tmp_path / "absent.db"
    with pytest.raises(StudyError, match="does not exist"):
        write_report(f"sqlite:///{missing}", name, tmp_path / "r.html")
    assert not missing.exists()
    with pytest.raises(GentuneError, match="unknown report format.*'pdf'.*html, png"):
        write_report(storage, name, tmp_path / "r.pdf", fmt="pdf")
