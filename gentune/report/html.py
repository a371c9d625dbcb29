"""Assemble the one-file HTML report: summary, plots, sample galleries and a sortable trial table.

Every string that comes from the study (names, parameters, reasons, commands, texts) goes through
html.escape, and the figures' JSON is made safe to sit inside a <script> element, so a study
named `<script>alert(1)</script>` shows exactly that text. Plotly's JavaScript is inlined once.
"""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from importlib import resources
from pathlib import Path
from string import Template

import plotly.offline

from gentune.paths import write_atomic
from gentune.report.extract import (
    KEY_METRICS,
    StudyInfo,
    TrialInfo,
    best_trials,
    compute_totals,
    state_counts,
)
from gentune.report.lineage import lineage_html
from gentune.report.plots import Panel
from gentune.report.trust import Band, LossPick, loss_pick, noise
from gentune.study.storage import hide_password
from gentune.study.summary import ACRONYMS, band_text, confirm_hint

SECTIONS = ("Summary", "Plots", "Samples", "Trials")
NUM = ' class="num"'
METRIC_ORDER = ("fid", "kid", "kid_std", "precision", "recall", "label_entropy", "classes_covered")


def _e(value) -> str:
    return escape(str(value))


def _fmt(value) -> str:
    """A float short enough for a table cell; anything else as text. Not escaped."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min {rest % 60:02d} s"


def script_json(text: str) -> str:
    """JSON text made safe inside <script>: no '<' can close the element or open a comment."""
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _kv(rows: list[tuple[str, str]]) -> str:
    """A two-column table; keys and values must already be escaped."""
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _card(title: str, inner: str, wide: bool = False) -> str:
    return f'<div class="card{" wide" if wide else ""}"><h3>{title}</h3>{inner}</div>'


def _values_text(info: StudyInfo, trial: TrialInfo) -> str:
    return ", ".join(f"{_e(n)} = {_fmt(v)}" for n, v in zip(info.objective_names, trial.values_or_empty))


def _best_card(info: StudyInfo, best: list[TrialInfo]) -> str:
    if not best:
        return _card("Best configuration", '<p class="note">No completed trial yet.</p>')
    top = best[0]
    config = {**top.params, **top.config}  # tuned parameters first; the frozen config wins
    rows = [
        (
            f'<span class="tuned">{_e(k)}</span>' if k in top.params else _e(k),
            f'<span class="tuned">{_e(_fmt(v))}</span>' if k in top.params else _e(_fmt(v)),
        )
        for k, v in config.items()
    ]
    lead = f'<p class="big">{_values_text(info, top)}</p>{_band_lines(noise(info))}<p>Trial #{top.number}'
    if len(info.directions) > 1:
        lead += f" (best {_e(info.objective_names[0])} of {len(best)} trials on the Pareto front)"
    lead += '. Tuned parameters are <span class="tuned">highlighted</span>.</p>'
    return _card("Best configuration", lead + _kv(rows))


def _band_lines(band: Band | None) -> str:
    """The best value's noise band under the headline value, the trials inside it, what to do."""
    if band is None:
        return ""
    lines = f'<p class="band">{_e(band_text(band.raw))}</p>'
    hint = confirm_hint({"trial": band.raw["trial"], "within": band.within})
    if hint:
        lines += f'<p class="note">{_e(hint)}; they are marked in the trial table.</p>'
    return lines


def _loss_card(info: StudyInfo) -> str:
    """What ranking by the final training loss (the tutorial's objective) would have picked."""
    pick = loss_pick(info)
    if pick is None:
        return ""
    name = ACRONYMS.get(info.objective_names[0], info.objective_names[0])
    loss = _e(_loss_label(pick))
    value, best_value = pick.trial.values_or_empty[0], pick.best.values_or_empty[0]
    if pick.trial.number == pick.best.number:
        lead = (
            f'<p class="big">The loss would have picked the best trial, #{pick.best.number}</p>'
            f"<p>Its final training loss ({loss} {_fmt(pick.loss)}) is also the lowest.</p>"
        )
        return _card("What the loss would have picked", lead)
    ratio = (
        f", {value / best_value:.2g}x the best"
        if info.directions[0] == "minimize" and best_value > 0
        else f"; the best has {_fmt(best_value)}"
    )
    lead = (
        f'<p class="big">The loss would have picked trial #{pick.trial.number}: '
        f"{_e(name)} {_fmt(value)}{ratio}</p><p>It has the lowest final training loss "
        f"({loss} {_fmt(pick.loss)}).</p>"
    )
    rows = [("", f"trial #{pick.trial.number} (loss)", f"trial #{pick.best.number} (best)")]
    rows.append((_e(name), _fmt(value), _fmt(best_value)))
    for key in ("classes_covered", "precision", "recall"):
        if key in pick.trial.metrics or key in pick.best.metrics:
            cells = [_e(_fmt(t.metrics.get(key, "–"))) for t in (pick.trial, pick.best)]
            rows.append((_e(key), cells[0], cells[1]))
    rows.append((loss, _fmt(pick.loss), _e(_fmt(pick.best.final_loss.get(pick.loss_name, "–")))))
    body = "".join(
        f'<tr><th>{a}</th><td class="num">{b}</td><td class="num">{c}</td></tr>' for a, b, c in rows
    )
    note = (
        '<p class="note">gentune ranks trials by what they generate; the final training loss '
        "does not measure sample quality.</p>"
    )
    return _card("What the loss would have picked", lead + f'<table class="kv">{body}</table>' + note)


def _loss_label(pick: LossPick) -> str:
    return {"g": "G loss", "d": "D loss"}.get(pick.loss_name, f"{pick.loss_name} loss")


def _metrics_card(info: StudyInfo, best: list[TrialInfo]) -> str:
    metrics = best[0].metrics if best else {}
    n = metrics.get("n") or info.floor.get("n") or info.gentune.get("n_eval") or "?"
    keys = [k for k in METRIC_ORDER if k in metrics or k in info.floor]
    keys += [k for k in {**metrics, **info.floor} if k not in keys and k != "n"]
    if not keys:
        return _card("Metrics", '<p class="note">No metrics stored.</p>')
    head = '<tr><th>metric</th><th class="num">best trial</th><th class="num">floor</th></tr>'
    body = "".join(
        f'<tr><td>{_e(k)}</td><td class="num">{_e(_fmt(metrics.get(k, "–")))}</td>'
        f'<td class="num">{_e(_fmt(info.floor.get(k, "–")))}</td></tr>'
        for k in keys
    )
    note = (
        f'<p class="note">N = {_e(n)} generated samples per evaluation. The floor is N real '
        "training images scored the same way: the best a model can be expected to reach.</p>"
    )
    return _card(f"Metrics (N = {_e(n)})", f'<table class="kv">{head}{body}</table>{note}')


def _trials_card(info: StudyInfo) -> str:
    c = state_counts(info)
    rows = [("completed", str(c["completed"]))]
    rows += [
        ("pruned by the pruner" if reason == "pruned" else f"pruned: {_e(reason)}", str(n))
        for reason, n in c["pruned"].items()
    ]
    rows.append(("failed", str(c["failed"])))
    rows += [(key, str(c[key])) for key in ("interrupted", "running") if c[key]]
    return _card("Trials", f'<p class="big">{c["total"]} trials</p>' + _kv(rows))


def _compute_card(info: StudyInfo) -> str:
    t = compute_totals(info)
    rows = [
        ("wall time (sum of trials)", _duration(t["wall_seconds"])),
        ("training time", _duration(t["train_seconds"])),
        ("workers", _e(", ".join(t["workers"]) or "unknown")),
        ("device", _e(", ".join(t["devices"]) or "unknown")),
    ]
    return _card("Compute", f'<p class="big">{_duration(t["wall_seconds"])}</p>' + _kv(rows))


def _extractor_card(info: StudyInfo) -> str:
    x = info.extractor
    if not x:
        return _card("Feature extractor", '<p class="note">No extractor information stored.</p>')
    labels = {
        "kind": "kind",
        "feature_dim": "feature dim",
        "test_accuracy": "test accuracy",
        "n": "n",
        "reference": "reference",
        "n_ref": "reference N",
    }
    percent = lambda key: key == "test_accuracy" and isinstance(x[key], float)  # noqa: E731
    rows = [
        (label, _e(f"{x[key]:.2%}" if percent(key) else _fmt(x[key])))
        for key, label in labels.items()
        if key in x
    ]
    trust = f'<p class="note">{_e(x["trust"])}</p>' if x.get("trust") else ""
    return _card("Feature extractor", _kv(rows) + trust)


def _study_card(info: StudyInfo) -> str:
    g = info.gentune
    objective = ", ".join(f"{n} ({d})" for n, d in zip(info.objective_names, info.directions))
    # Settings are hidden like the command: a hand-made or future study may hold a URL there.
    rows = [
        (label, _e(hide_password(json.dumps(g[key]) if isinstance(g[key], (dict, list)) else str(g[key]))))
        for key, label in (
            ("model", "model"),
            ("dataset", "dataset"),
            ("strategy", "strategy"),
            ("budget", "budget"),
            ("seed", "seed"),
            ("version", "gentune version"),
        )
        if key in g
    ]
    rows.insert(0, ("objective", _e(objective)))
    command = (
        f"<pre>{_e(info.command)}</pre>"
        if info.command
        else '<p class="note">The command was not stored.</p>'
    )
    return _card("Study and command", _kv(rows) + "<p>Command that ran the study:</p>" + command)


def _summary(info: StudyInfo, best: list[TrialInfo]) -> str:
    cards = [
        _best_card(info, best),
        _loss_card(info),
        _metrics_card(info, best),
        _trials_card(info),
        _compute_card(info),
        _extractor_card(info),
        _study_card(info),
    ]
    return '<section id="summary"><h2>Summary</h2><div class="cards">' + "".join(cards) + "</div></section>"


def _plots(panels: list[Panel]) -> tuple[str, str]:
    """The plots section and the JSON of its figures, keyed by element id.

    Plots the study cannot support are listed together at the end, so the grid has no gaps.
    """
    cards, figures = [], []
    for p in panels:
        if p.figure is not None:
            # A fixed height keeps plotly's responsive resizing from collapsing the card.
            height = int(p.figure.layout.height or 400)
            inner = f'<div class="plot" id="plot-{p.key}" style="height: {height}px"></div>'
            cards.append(_card(_e(p.title), inner, wide=p.wide))
            figures.append(f'"plot-{p.key}": {p.figure.to_json()}')
    skipped = "".join(
        f'<li><b>{_e(p.title)}</b>: <span class="note">{_e(p.note)}</span></li>'
        for p in panels
        if p.figure is None
    )
    if skipped:
        cards.append(_card("Plots not drawn", f'<ul class="skipped">{skipped}</ul>', wide=True))
    html = '<section id="plots"><h2>Plots</h2><div class="plots">' + "".join(cards) + "</div></section>"
    return html, script_json("{" + ",".join(figures) + "}")


def _img(b64: str | None, caption: str, alt: str) -> str:
    """A figure with an inline PNG (extract.clean_png has checked it), or nothing."""
    if not b64:
        return ""
    return (
        f'<figure><img src="data:image/png;base64,{_e(b64)}" alt="{alt}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _samples(info: StudyInfo, best: list[TrialInfo]) -> str:
    top = best[:4]
    grids = [_img(info.real_png, "real data (reference split)", "real images")]
    grids += [
        _img(t.samples_png, f"trial #{t.number}: {_values_text(info, t)}", f"samples of trial {t.number}")
        for t in top
    ]
    parts = []
    if any(grids[1:]):
        parts.append(
            _card(
                "Best trials next to real data",
                '<div class="gallery">' + "".join(grids) + "</div>",
                wide=True,
            )
        )
    if top and top[0].samples_progress:
        strip = "".join(
            _img(png, f"step {step}", f"samples at step {step}") for step, png in top[0].samples_progress
        )
        parts.append(
            _card(
                f"Trial #{top[0].number} during training",
                f'<div class="gallery strip">{strip}</div>',
                wide=True,
            )
        )
    texts = "".join(
        f"<h4>Trial #{t.number}</h4>" + "".join(f"<pre>{_e(s)}</pre>" for s in t.text_samples)
        for t in top[:2]
        if t.text_samples
    )
    if texts:
        parts.append(_card("Text samples", texts, wide=True))
    if not parts:
        parts.append(
            '<p class="note">No samples stored: no completed trial has a sample grid or text samples.</p>'
        )
    return '<section id="samples"><h2>Samples</h2><div class="cards">' + "".join(parts) + "</div></section>"


def _cell(value, numeric: bool = False) -> str:
    if value is None:
        return '<td data-v=""></td>'
    attrs = f'{NUM} data-v="{_e(value)}"' if numeric else ""
    return f"<td{attrs}>{_e(_fmt(value))}</td>"


def _trial_row(
    info: StudyInfo,
    t: TrialInfo,
    params: list[str],
    metrics: list[str],
    best_number: int | None,
    within: frozenset[int] = frozenset(),
) -> str:
    values = list(t.values) if t.values else [None] * len(info.objective_names)
    note = t.prune_reason or ("interrupted" if t.interrupted else t.error) or ""
    cells = [
        _cell(t.number, True),
        f'<td data-v="{_e(t.state)}"><span class="state state-{_e(t.state.lower())}">'
        f"{_e(t.state.lower())}</span></td>",
    ]
    cells += [_cell(v, True) for v in values]
    cells += [_cell(t.params.get(p), isinstance(t.params.get(p), (int, float))) for p in params]
    cells += [_cell(t.metrics.get(m), True) for m in metrics]
    short = note if len(note) <= 60 else note[:59] + "…"
    cells += [
        f'<td title="{_e(note)}">{_e(short)}</td>',
        _cell(None if t.duration_s is None else round(t.duration_s, 1), True),
        _cell(t.worker),
    ]
    cls = ' class="best"' if t.number == best_number else ' class="within"' if t.number in within else ""
    return f"<tr{cls}>{''.join(cells)}</tr>"


def _trials(info: StudyInfo, best: list[TrialInfo]) -> str:
    params = info.param_names
    metrics = [
        m for m in KEY_METRICS if m not in info.objective_names and any(m in t.metrics for t in info.trials)
    ]
    numeric = {p for p in params if all(isinstance(t.params.get(p, 0), (int, float)) for t in info.trials)}
    heads = (
        [("#", True), ("state", False)]
        + [(n, True) for n in info.objective_names]
        + [(p, p in numeric) for p in params]
        + [(m, True) for m in metrics]
        + [("prune reason / error", False), ("duration (s)", True), ("worker", False)]
    )
    head = "".join(f'<th title="click to sort"{NUM if num else ""}>{_e(h)}</th>' for h, num in heads)
    best_number = best[0].number if best else None
    band = noise(info)
    within = frozenset(band.within if band else ())
    rows = "".join(_trial_row(info, t, params, metrics, best_number, within) for t in info.trials)
    marked = (
        f" Trials within its noise band ({_e(band_text(band.raw))}) are marked in yellow."
        if within and band
        else ""
    )
    return (
        '<section id="trials"><h2>Trials</h2><p class="note">Click a column header to sort; '
        f'the best trial is highlighted.{marked}</p><div class="tablewrap">'
        f'<table class="sortable" id="trial-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div></section>"
    )


def render_html(info: StudyInfo, panels: list[Panel]) -> str:
    """The whole report page as one string."""
    best = best_trials(info)
    plots_html, figures = _plots(panels)
    g = info.gentune
    subtitle = " · ".join(_e(g[k]) for k in ("model", "dataset", "strategy") if k in g)
    subtitle += f" · generated {dt.datetime.now():%Y-%m-%d %H:%M}"
    page = resources.files("gentune.report").joinpath("page.html").read_text(encoding="utf-8")
    return Template(page).substitute(
        title=_e(info.name),
        subtitle=subtitle,
        version=_e(g.get("version", "")),
        body=_summary(info, best)
        + plots_html
        + _samples(info, best)
        + lineage_html(info.trials)
        + _trials(info, best),
        plotlyjs=plotly.offline.get_plotlyjs(),
        figures=figures,
    )


def write_html(info: StudyInfo, panels: list[Panel], out: Path) -> Path:
    """Write the report page to out (folders created as needed), whole or not at all.

    The page goes to a temporary file renamed over `out`, so a full disk leaves no truncated
    report under the name (an older one stays as it was) and raises a GentuneError saying why.
    """
    page = render_html(info, panels)
    fix = "free space on that disk or pass -o with a path elsewhere; the study is unchanged"
    return write_atomic(out, page, "the report", fix=fix)
