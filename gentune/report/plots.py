"""Figures for the report: interactive plotly panels for HTML, matplotlib PNGs for `--format png`.

Optuna's own visualizations are used where they fit; learning curves coloured by trial state and
the timeline by worker are drawn here because Optuna's versions do not group that way. A plot
that the study cannot support (too few trials, one parameter, ...) becomes a Panel with a note.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import optuna
import optuna.visualization as ov
import plotly.graph_objects as go
from matplotlib.figure import Figure
from PIL import Image

from gentune.report.extract import StudyInfo, best_trials, decode_png, history, top_params

STATE_COLORS = {
    "COMPLETE": "#2563eb",
    "PRUNED": "#f59e0b",
    "FAIL": "#dc2626",
    "RUNNING": "#6b7280",
    "WAITING": "#9ca3af",
}
FRONT_COLOR = "#dc2626"  # the Pareto front in pareto.png
PNG_NAMES = ("history.png", "importance.png", "learning_curves.png", "overfit.png", "samples.png")


@dataclass
class Panel:
    """One plot slot on the page: a figure, or a note saying why there is none."""

    key: str
    title: str
    figure: go.Figure | None = None
    note: str | None = None
    wide: bool = False


def _tidy(fig: go.Figure, height: int = 400) -> go.Figure:
    # The page gives every panel its own heading, so the figure's title would only repeat it.
    # Optuna fixes the width of multi-panel figures; the page's grid should decide it instead.
    fig.layout.width = None
    fig.update_layout(
        title=None,
        template="plotly_white",
        height=height,
        margin=dict(l=60, r=20, t=30, b=50),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return fig


def _first_objective(info: StudyInfo) -> dict:
    """Optuna's target arguments: none for one objective, the first objective for several."""
    if len(info.directions) == 1:
        return {"target_name": info.objective_names[0]}
    return {"target": lambda t: t.values[0], "target_name": info.objective_names[0]}


def _history(study: optuna.Study, info: StudyInfo) -> Panel:
    panel = Panel("history", f"Optimisation history ({info.objective_names[0]})")
    if not info.completed:
        panel.note = "No completed trials yet."
        return panel
    fig = ov.plot_optimization_history(study, **_first_objective(info))
    if len(info.directions) > 1:  # Optuna draws no best-so-far line for a chosen target
        h = history(info)
        fig.add_scatter(x=h["numbers"], y=h["best"], mode="lines", name="Best so far")
    panel.figure = _tidy(fig)
    return panel


def _importance(info: StudyInfo, importance: dict, why_not: str | None, basis: str) -> Panel:
    """fANOVA importances as computed by gentune.report.trust (on complete and pruned trials),
    drawn here: Optuna's plot would compute them again on complete trials only."""
    panel = Panel("importance", f"Parameter importance ({basis})" if basis else "Parameter importance")
    if why_not:
        panel.note = f"Parameter importance skipped: {why_not}."
        return panel
    names = list(importance)[::-1]  # plotly draws the first bar at the bottom
    fig = go.Figure(
        go.Bar(
            x=[importance[n] for n in names],
            y=[escape(n) for n in names],
            orientation="h",
            marker_color=STATE_COLORS["COMPLETE"],
            text=[f"{importance[n]:.2f}" for n in names],
            textposition="outside",
        )
    )
    fig.update_xaxes(title=f"importance for {info.objective_names[0]} (fANOVA)")
    panel.figure = _tidy(fig)
    return panel


def _parallel(study: optuna.Study, info: StudyInfo) -> Panel:
    panel = Panel("parallel", "Parallel coordinates", wide=True)
    if len(info.completed) < 2 or not info.param_names:
        panel.note = "Needs at least 2 completed trials with parameters."
        return panel
    panel.figure = _tidy(ov.plot_parallel_coordinate(study, **_first_objective(info)))
    return panel


def _slice(study: optuna.Study, info: StudyInfo, importance: dict) -> Panel:
    params = top_params(info, importance, 4)
    panel = Panel("slice", "Slice plots of the top parameters", wide=True)
    if not info.completed or not params:
        panel.note = "Needs completed trials with parameters."
        return panel
    panel.figure = _tidy(ov.plot_slice(study, params=params, **_first_objective(info)))
    return panel


def _contour(study: optuna.Study, info: StudyInfo, importance: dict) -> Panel:
    params = top_params(info, importance, 2)
    panel = Panel("contour", "Contour of the two top parameters")
    if len(params) < 2 or len(info.completed) < 2:
        panel.note = (
            f"Needs 2 parameters and 2 completed trials (has {len(params)} and {len(info.completed)})."
        )
        return panel
    panel.figure = _tidy(ov.plot_contour(study, params=params, **_first_objective(info)))
    return panel


def _no_curves(info: StudyInfo) -> str:
    if len(info.directions) > 1:
        return (
            "A multi-objective study keeps no learning curves: Optuna takes no intermediate "
            "values there (the failure detectors still watch each trial)."
        )
    return "No trial reported intermediate values."


def _learning_curves(info: StudyInfo) -> Panel:
    panel = Panel("curves", f"Learning curves ({info.objective_names[0]} during training)")
    trials = [t for t in info.trials if t.curve]
    if not trials:
        panel.note = _no_curves(info)
        return panel
    fig, shown = go.Figure(), set()
    for t in trials:
        label = t.state.lower() + (f": {t.prune_reason}" if t.prune_reason else "")
        fig.add_scatter(
            x=[s for s, _ in t.curve],
            y=[v for _, v in t.curve],
            mode="lines+markers",
            line=dict(color=STATE_COLORS.get(t.state, "#6b7280"), width=1.5),
            marker=dict(size=4),
            opacity=0.8,
            name=t.state.lower(),
            legendgroup=t.state,
            showlegend=t.state not in shown,
            hovertext=escape(f"trial {t.number} ({label})"),
        )
        shown.add(t.state)
    fig.update_xaxes(title="step (G updates)")
    fig.update_yaxes(title=info.objective_names[0])
    panel.figure = _tidy(fig)
    return panel


OVERFIT_SHOWN = 3  # best trials drawn in the train/validation panel, besides flagged ones
PALETTE = ("#2563eb", "#16a34a", "#9333ea", "#dc2626", "#ea580c", "#0891b2")


NO_LOSS_CURVES = "No trial recorded training and validation losses."


def _overfit_shown(info: StudyInfo) -> list:
    """The trials whose loss curves the train/validation plot draws: the best few and every
    trial flagged as overfitting."""
    with_curves = [t for t in info.trials if len(t.loss_curves) > 1]
    ranked = [t for t in best_trials(info) if len(t.loss_curves) > 1][:OVERFIT_SHOWN]
    flagged = [t for t in with_curves if t.overfitting and t not in ranked]
    return ranked + flagged or with_curves[:OVERFIT_SHOWN]


def _overfit_style(t, i: int) -> tuple[str, str]:
    label = f"trial {t.number}" + (" (overfitting)" if t.overfitting else "")
    return label, "#dc2626" if t.overfitting else PALETTE[i % len(PALETTE)]


def _overfitting(info: StudyInfo) -> Panel:
    """Training (dashed) and validation (solid) loss of the best trials and of every trial
    flagged as overfitting: the tutorial's "watch a validation set"."""
    panel = Panel("overfit", "Training vs validation loss (best trials and overfitting flags)")
    shown = _overfit_shown(info)
    if not shown:
        panel.note = NO_LOSS_CURVES
        return panel
    fig = go.Figure()
    for i, t in enumerate(shown):
        label, color = _overfit_style(t, i)
        steps = [p["step"] for p in t.loss_curves]
        for key, dash in (("val", "solid"), ("train", "dash")):
            fig.add_scatter(
                x=steps,
                y=[p[key] for p in t.loss_curves],
                mode="lines",
                line=dict(color=color, dash=dash, width=1.5),
                legendgroup=label,
                name=escape(f"{label} {key}"),
                hovertext=escape(f"{label}: {key} loss"),
            )
    fig.update_xaxes(title="step (G updates)")
    fig.update_yaxes(title="loss (validation solid, training dashed)")
    panel.figure = _tidy(fig)
    return panel


def _timeline(info: StudyInfo) -> Panel:
    panel = Panel("timeline", "Timeline of trials across workers", wide=True)
    finished = [(t, t.start, t.end) for t in info.trials if t.start is not None and t.end is not None]
    if not finished:
        panel.note = "No finished trials with start and end times."
        return panel
    fig = go.Figure()
    for state in dict.fromkeys(t.state for t, _, _ in finished):
        rows = [(t, start, (end - start).total_seconds()) for t, start, end in finished if t.state == state]
        fig.add_bar(
            orientation="h",
            name=state.lower(),
            marker_color=STATE_COLORS.get(state),
            y=[escape(t.worker or "unknown worker") for t, _, _ in rows],
            base=[start.isoformat() for _, start, _ in rows],
            x=[seconds * 1000 for _, _, seconds in rows],
            text=[f"#{t.number}" for t, _, _ in rows],
            textposition="inside",
            hovertext=[escape(f"trial {t.number}: {t.state.lower()}, {s:.0f} s") for t, _, s in rows],
        )
    fig.update_xaxes(type="date")
    fig.update_layout(barmode="overlay")
    panel.figure = _tidy(fig, height=max(220, 110 + 45 * len({t.worker for t, _, _ in finished})))
    return panel


def _pareto(study: optuna.Study, info: StudyInfo) -> Panel:
    panel = Panel("pareto", "Pareto front")
    if len(info.directions) not in (2, 3):
        panel.note = "The Pareto front is drawn for 2 or 3 objectives."
    elif not info.completed:
        panel.note = "No completed trials yet."
    else:
        panel.figure = _tidy(ov.plot_pareto_front(study, target_names=list(info.objective_names)))
    return panel


def build_panels(
    study: optuna.Study, info: StudyInfo, importance: dict, why_not: str | None, *, basis: str = ""
) -> list[Panel]:
    """All plot panels of the HTML report, in page order; `basis` says what the importances
    rest on ("from 14 complete trials")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning and small-study warnings
        panels = [
            _history(study, info),
            _importance(info, importance, why_not, basis),
            _learning_curves(info),
            _overfitting(info),
            _contour(study, info, importance),
            _slice(study, info, importance),
            _parallel(study, info),
            _timeline(info),
        ]
        if len(info.directions) > 1:
            panels.insert(1, _pareto(study, info))
    return panels


# --- matplotlib PNGs ---------------------------------------------------------------------


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


def _png_history(ax, info: StudyInfo) -> None:
    h = history(info)
    if not h["numbers"]:
        return _note(ax, "No completed trials yet.")
    ax.scatter(h["numbers"], h["values"], s=18, color=STATE_COLORS["COMPLETE"], label=h["name"])
    ax.step(h["numbers"], h["best"], where="post", color="#dc2626", label="best so far")
    ax.set(xlabel="trial", ylabel=h["name"], title="Optimisation history")
    ax.legend()


def _png_importance(ax, importance: dict, why_not: str | None, basis: str) -> None:
    if why_not:
        return _note(ax, f"Parameter importance skipped:\n{why_not}")
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names], color=STATE_COLORS["COMPLETE"])
    ax.set(xlabel="importance", title=f"Parameter importance ({basis})" if basis else "Parameter importance")


def _png_curves(ax, info: StudyInfo) -> None:
    trials = [t for t in info.trials if t.curve]
    if not trials:
        return _note(ax, _no_curves(info))
    shown = set()
    for t in trials:
        ax.plot(
            [s for s, _ in t.curve],
            [v for _, v in t.curve],
            marker=".",
            alpha=0.8,
            color=STATE_COLORS.get(t.state, "#6b7280"),
            label=None if t.state in shown else t.state.lower(),
        )
        shown.add(t.state)
    ax.set(xlabel="step (G updates)", ylabel=info.objective_names[0], title="Learning curves")
    ax.legend()


def _png_overfit(ax, info: StudyInfo) -> None:
    shown = _overfit_shown(info)
    if not shown:
        return _note(ax, NO_LOSS_CURVES)
    for i, t in enumerate(shown):
        label, color = _overfit_style(t, i)
        steps = [p["step"] for p in t.loss_curves]
        ax.plot(steps, [p["val"] for p in t.loss_curves], color=color, label=label)
        ax.plot(steps, [p["train"] for p in t.loss_curves], color=color, linestyle="--")
    ax.set(
        xlabel="step (G updates)",
        ylabel="loss (validation solid, training dashed)",
        title="Training vs validation loss",
    )
    ax.legend(fontsize=8)


def _image(b64: str | None) -> np.ndarray | None:
    raw = decode_png(b64)
    return None if raw is None else np.asarray(Image.open(io.BytesIO(raw)).convert("L"))


def _png_pareto(ax, info: StudyInfo) -> None:
    """The first two objectives of every complete trial, the Pareto front highlighted."""
    if not info.completed:
        return _note(ax, "No completed trials yet.")
    names = info.objective_names
    done = [t for t in info.completed if len(t.values_or_empty) == len(names)]
    front = best_trials(info)
    ax.scatter(
        [t.values_or_empty[0] for t in done],
        [t.values_or_empty[1] for t in done],
        s=18,
        color=STATE_COLORS["WAITING"],
        label="trial",
    )
    # The front sorted by the first objective, joined so that the trade-off reads as a curve.
    ax.plot(
        [t.values_or_empty[0] for t in front],
        [t.values_or_empty[1] for t in front],
        marker="o",
        color=FRONT_COLOR,
        label="Pareto front",
    )
    for t in front:
        ax.annotate(
            str(t.number),
            (t.values_or_empty[0], t.values_or_empty[1]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
        )
    more = f" (first two of {len(names)} objectives)" if len(names) > 2 else ""
    ax.set(xlabel=names[0], ylabel=names[1], title=f"Pareto front{more}")
    ax.legend()


def _png_samples(fig: Figure, info: StudyInfo) -> None:
    grids = [("real data", _image(info.real_png))]
    for t in best_trials(info, 3):
        value = ", ".join(f"{n} {v:.4g}" for n, v in zip(info.objective_names, t.values_or_empty))
        grids.append((f"trial {t.number} ({value})", _image(t.samples_png)))
    shown = [(title, img) for title, img in grids if img is not None]
    if not shown:
        return _note(fig.add_subplot(), "No sample grids stored.")
    for i, (title, img) in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()


def write_pngs(
    info: StudyInfo, importance: dict, why_not: str | None, folder: Path, *, basis: str = ""
) -> list[Path]:
    """Write the key plots as PNG files into folder (and pareto.png for a multi-objective
    study); a plot without data shows a note instead."""
    folder.mkdir(parents=True, exist_ok=True)
    drawers = {
        "history.png": lambda fig: _png_history(fig.add_subplot(), info),
        "importance.png": lambda fig: _png_importance(fig.add_subplot(), importance, why_not, basis),
        "learning_curves.png": lambda fig: _png_curves(fig.add_subplot(), info),
        "overfit.png": lambda fig: _png_overfit(fig.add_subplot(), info),
        "samples.png": lambda fig: _png_samples(fig, info),
    }
    written = []
    for name in PNG_NAMES:
        fig = Figure(figsize=(12.8, 3.6) if name == "samples.png" else (7, 4.5), layout="constrained")
        drawers[name](fig)
        fig.savefig(folder / name, dpi=120)
        written.append(folder / name)
    if len(info.directions) > 1:  # a multi-objective study's result is its front
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        _png_pareto(fig.add_subplot(), info)
        fig.savefig(folder / "pareto.png", dpi=120)
        written.append(folder / "pareto.png")
    return written
