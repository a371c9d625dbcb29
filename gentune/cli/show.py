"""Printing results for people."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


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
    console.print(f"\n[bold]best trial {best['trial']}[/] of study {best['study']}: "
                  f"{objective} = {_fmt(best['value'])}", highlight=False)
    params = Table(title="configuration", show_header=True)
    params.add_column("parameter")
    params.add_column("value")
    for k, v in (best.get("params") or {}).items():
        params.add_row(k, _fmt(v))
    console.print(params)
    metrics, floor = best.get("metrics") or {}, best.get("floor") or {}
    if metrics:
        table = Table(title=f"sample quality (N = {metrics.get('n')})", show_header=True)
        table.add_column("metric")
        table.add_column("best trial")
        table.add_column("floor: real vs real")
        for k, v in metrics.items():
            if k != "n":
                table.add_row(k, _fmt(v), _fmt(floor.get(k, "")))
        console.print(table)
    ex = best.get("extractor") or {}
    if ex:
        quality = (f"test accuracy {ex['test_accuracy']:.1%}" if ex.get("test_accuracy") is not None
                   else f"reconstruction MSE {ex.get('reconstruction_mse', float('nan')):.3g}")
        console.print(f"features: {ex.get('kind')} ({ex.get('feature_dim')}-d, {quality}), "
                      f"reference split {ex.get('reference')} ({ex.get('n_ref')} images)",
                      highlight=False)
        if ex.get("kind") != "classifier" and ex.get("trust"):
            console.print(f"[yellow]note:[/] {ex['trust']}", highlight=False)
    loss = best.get("final_loss")
    if loss:
        console.print(f"final training loss: G {_fmt(loss.get('g'))}, D {_fmt(loss.get('d'))}"
                      f"  (not a quality measure)", highlight=False)
    counts = best.get("trials") or {}
    if counts:
        reasons = ", ".join(f"{k} {v}" for k, v in counts.get("pruned_by_reason", {}).items())
        console.print(f"trials: {counts.get('complete')} complete, {counts.get('pruned')} pruned"
                      + (f" ({reasons})" if reasons else "") + f", {counts.get('failed')} failed",
                      highlight=False)
