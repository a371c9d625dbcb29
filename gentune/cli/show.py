"""Printing results for people.

Study names, parameter values and error messages are the user's text and may hold brackets
("[adam, sgd]", "[/x]"), which rich would read as markup and drop or fail on. So nothing here
is printed as markup: styled words are `Text` spans, everything else plain `Text`.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

TEXT_SHOWN = 400  # characters of the best text model's first sample


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _cell(v) -> Text:
    return Text(_fmt(v))


def _say(console: Console, *parts: str | tuple[str, str]) -> None:
    """Print plain strings and (text, style) spans as one line, none of it read as markup."""
    console.print(Text.assemble(*parts), soft_wrap=True)


def print_best(console: Console, best: dict | None) -> None:
    """The best configuration, its metrics beside the floor, and trial counts."""
    if best is None:
        _say(console, "no completed trial yet")
        return
    if "front" in best:
        return print_front(console, best)
    objective = best.get("objective") or "value"
    _say(
        console,
        "\n",
        (f"best trial {best['trial']}", "bold"),
        f" of study {best['study']}: {objective} = {_fmt(best['value'])}",
    )
    if best.get("family"):
        _say(console, ("family:", "bold"), f" {best['family']}")
    params = Table(title=Text("configuration"), show_header=True)
    params.add_column("parameter")
    params.add_column("value")
    for k, v in (best.get("params") or {}).items():
        params.add_row(_cell(k), _cell(v))
    console.print(params)
    metrics, floor = best.get("metrics") or {}, best.get("floor") or {}
    if metrics:
        title = f"sample quality (N = {metrics['n']})" if metrics.get("n") else "validation metrics"
        table = Table(title=Text(title), show_header=True)
        table.add_column("metric")
        table.add_column("best trial")
        table.add_column("floor: real vs real")
        for k, v in metrics.items():
            if k != "n":
                table.add_row(_cell(k), _cell(v), _cell(floor.get(k, "")))
        console.print(table)
    ex = best.get("extractor") or {}
    if ex:
        quality = (
            f"test accuracy {ex['test_accuracy']:.1%}"
            if ex.get("test_accuracy") is not None
            else f"reconstruction MSE {ex.get('reconstruction_mse', float('nan')):.3g}"
        )
        _say(
            console,
            f"features: {ex.get('kind')} ({ex.get('feature_dim')}-d, {quality}), "
            f"reference split {ex.get('reference')} ({ex.get('n_ref')} images)",
        )
        if ex.get("kind") != "classifier" and ex.get("trust"):
            _say(console, ("note:", "yellow"), f" {ex['trust']}")
    loss = best.get("final_loss")
    if loss:
        names = {"g": "G", "d": "D"}  # the GANs' losses, named as in the tutorial
        shown = ", ".join(f"{names.get(k, k)} {_fmt(v)}" for k, v in loss.items())
        _say(console, f"final training loss: {shown}  (not a quality measure)")
    texts = best.get("text_samples")
    if texts:
        sample = str(texts[0])[:TEXT_SHOWN]
        _say(console, ("sample text", "bold"), f" (best trial, first of {len(texts)}):")
        _say(console, sample)
    if best.get("overfitting"):
        _say(
            console,
            ("note:", "yellow"),
            " the best trial's validation loss rose while its training loss fell (overfitting)",
        )
    counts = best.get("trials") or {}
    if counts:
        reasons = ", ".join(f"{k} {v}" for k, v in counts.get("pruned_by_reason", {}).items())
        _say(
            console,
            f"trials: {counts.get('complete')} complete, {counts.get('pruned')} pruned"
            + (f" ({reasons})" if reasons else "")
            + f", {counts.get('failed')} failed",
        )
    _print_confirmed(console, best.get("confirmed"), best.get("objective") or "value")


def _print_confirmed(console: Console, confirmed: dict | None, objective: str) -> None:
    """The --confirm ranking: mean +- sd over seeds; the pick is the best mean."""
    if not confirmed:
        return
    table = Table(
        title=Text(f"confirmed over seeds ({objective}: mean ± sd, best mean first)"), show_header=True
    )
    for col in ("configuration", "mean ± sd", "n", "values", "stopped"):
        table.add_column(col)
    for r in confirmed["ranking"]:
        sd = f" ± {_fmt(r['sd'])}" if r.get("sd") is not None else ""
        stopped = ", ".join(f"seed {k}: {v}" for k, v in (r.get("stopped") or {}).items())
        table.add_row(
            Text(str(r["source"])),
            Text(f"{_fmt(r['mean'])}{sd}"),
            Text(str(r["n"])),
            Text(", ".join(_fmt(v) for v in r["values"])),
            Text(stopped),
        )
    console.print(table)
    pick = confirmed["best"]
    sd = f" ± {_fmt(pick['sd'])}" if pick.get("sd") is not None else ""
    _say(
        console,
        ("pick by mean:", "bold"),
        f" {pick['source']}: {objective} = {_fmt(pick['mean'])}{sd} "
        f"over {pick['n']} seeds; parameters {pick.get('params')}",
    )


def print_front(console: Console, summary: dict) -> None:
    """A multi-objective study's Pareto front (gentune.study.front): each trial's values and
    parameters, the floor beside the sample metrics, and the trial counts."""
    names, directions = summary["objectives"], summary.get("directions") or []
    front = summary.get("front") or []
    _say(
        console,
        "\n",
        (f"Pareto front of study {summary['study']}", "bold"),
        f": {len(front)} trial{'s' if len(front) != 1 else ''} ("
        + ", ".join(f"{n} {d}d" for n, d in zip(names, directions))
        + ")",
    )
    table = Table(show_header=True)
    table.add_column("trial")
    for name in names:
        table.add_column(name)
    table.add_column("parameters")
    for member in front:
        values = member.get("values") or {}
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in (member.get("params") or {}).items())
        table.add_row(_cell(member["trial"]), *(_cell(values.get(n, "")) for n in names), Text(params))
    console.print(table)
    floor = summary.get("floor") or {}
    shown = [n for n in names if n in floor]
    if shown:
        _say(console, "floor (real vs real): " + ", ".join(f"{n} {_fmt(floor[n])}" for n in shown))
    counts = summary.get("trials") or {}
    if counts:
        _say(
            console,
            f"trials: {counts.get('complete')} complete, {counts.get('pruned')} pruned, "
            f"{counts.get('failed')} failed",
        )
    _say(console, ("note:", "yellow"), f" {summary.get('note', '')}")
