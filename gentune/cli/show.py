"""Printing results for people."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

TEXT_SHOWN = 400  # characters of the best text model's first sample


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_best(console: Console, best: dict | None) -> None:
    """The best configuration, its metrics beside the floor, and trial counts."""
    if best is None:
        console.print("no completed trial yet")
        return
    objective = best.get("objective") or "value"
    console.print(
        f"\n[bold]best trial {best['trial']}[/] of study {best['study']}: "
        f"{objective} = {_fmt(best['value'])}",
        highlight=False,
    )
    if best.get("family"):
        console.print(f"[bold]family:[/] {best['family']}", highlight=False)
    params = Table(title="configuration", show_header=True)
    params.add_column("parameter")
    params.add_column("value")
    for k, v in (best.get("params") or {}).items():
        params.add_row(k, _fmt(v))
    console.print(params)
    metrics, floor = best.get("metrics") or {}, best.get("floor") or {}
    if metrics:
        title = f"sample quality (N = {metrics['n']})" if metrics.get("n") else "validation metrics"
        table = Table(title=title, show_header=True)
        table.add_column("metric")
        table.add_column("best trial")
        table.add_column("floor: real vs real")
        for k, v in metrics.items():
            if k != "n":
                table.add_row(k, _fmt(v), _fmt(floor.get(k, "")))
        console.print(table)
    ex = best.get("extractor") or {}
    if ex:
        quality = (
            f"test accuracy {ex['test_accuracy']:.1%}"
            if ex.get("test_accuracy") is not None
            else f"reconstruction MSE {ex.get('reconstruction_mse', float('nan')):.3g}"
        )
        console.print(
            f"features: {ex.get('kind')} ({ex.get('feature_dim')}-d, {quality}), "
            f"reference split {ex.get('reference')} ({ex.get('n_ref')} images)",
            highlight=False,
        )
        if ex.get("kind") != "classifier" and ex.get("trust"):
            console.print(f"[yellow]note:[/] {ex['trust']}", highlight=False)
    loss = best.get("final_loss")
    if loss:
        names = {"g": "G", "d": "D"}  # the GANs' losses, named as in the tutorial
        shown = ", ".join(f"{names.get(k, k)} {_fmt(v)}" for k, v in loss.items())
        console.print(f"final training loss: {shown}  (not a quality measure)", highlight=False)
    texts = best.get("text_samples")
    if texts:
        sample = str(texts[0])[:TEXT_SHOWN]
        console.print(f"[bold]sample text[/] (best trial, first of {len(texts)}):", highlight=False)
        console.print(sample, markup=False, highlight=False, soft_wrap=True)
    if best.get("overfitting"):
        console.print(
            "[yellow]note:[/] the best trial's validation loss rose while its training "
            "loss fell (overfitting)",
            highlight=False,
        )
    counts = best.get("trials") or {}
    if counts:
        reasons = ", ".join(f"{k} {v}" for k, v in counts.get("pruned_by_reason", {}).items())
        console.print(
            f"trials: {counts.get('complete')} complete, {counts.get('pruned')} pruned"
            + (f" ({reasons})" if reasons else "")
            + f", {counts.get('failed')} failed",
            highlight=False,
        )
    _print_confirmed(console, best.get("confirmed"), best.get("objective") or "value")


def _print_confirmed(console: Console, confirmed: dict | None, objective: str) -> None:
    """The --confirm ranking: mean +- sd over seeds; the pick is the best mean."""
    if not confirmed:
        return
    table = Table(title=f"confirmed over seeds ({objective}: mean ± sd, best mean first)", show_header=True)
    for col in ("configuration", "mean ± sd", "n", "values", "stopped"):
        table.add_column(col)
    for r in confirmed["ranking"]:
        sd = f" ± {_fmt(r['sd'])}" if r.get("sd") is not None else ""
        stopped = ", ".join(f"seed {k}: {v}" for k, v in (r.get("stopped") or {}).items())
        table.add_row(
            r["source"],
            f"{_fmt(r['mean'])}{sd}",
            str(r["n"]),
            ", ".join(_fmt(v) for v in r["values"]),
            stopped,
        )
    console.print(table)
    pick = confirmed["best"]
    sd = f" ± {_fmt(pick['sd'])}" if pick.get("sd") is not None else ""
    console.print(
        f"[bold]pick by mean:[/] {pick['source']}: {objective} = {_fmt(pick['mean'])}{sd} "
        f"over {pick['n']} seeds; parameters {pick.get('params')}",
        highlight=False,
    )
