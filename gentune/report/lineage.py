"""The lineage of a population study: which trial continued which (promotion, PBT), and how.

`lineage_of` reads a trial's lineage keys (docs/storage.md); `lineage_rows` lists every trial
that continued another, or was continued, with its parent; `lineage_html` is the report's
table of them, with each trial's ancestry written out (e.g. 2 → 7 → 12), so the best model's
history reads at a glance. Nothing here for a study without continued trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from gentune.trial import attrs
from gentune.trial.attrs import TrialKey

KEYS = (
    TrialKey.PROMOTED_FROM,
    TrialKey.RUNG,
    TrialKey.PBT_PARENT,
    TrialKey.GENERATION,
    TrialKey.PERTURBATION,
    TrialKey.START_STEP,
)


def lineage_of(trial: Any) -> dict[str, Any]:
    """The lineage keys a trial (Trial or FrozenTrial) stores; {} for a fresh trial."""
    out: dict[str, Any] = {}
    for key, value in (
        ("promoted_from", attrs.promoted_from(trial)),
        ("rung", attrs.rung(trial) or None),
        ("pbt_parent", attrs.pbt_parent(trial)),
        ("generation", attrs.generation(trial) or None),
        ("perturbation", attrs.perturbation(trial)),
        ("start_step", attrs.start_step(trial) or None),
    ):
        if value is not None:
            out[key] = value
    return out


def lineage_rows(trials: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per trial that continued another or was continued: `trial`, `parent` (None for
    a root), `how` ("promoted", "PBT copy" or "fresh"), `level` (rung or generation), `change`
    (PBT's perturbation as text), `start_step`, `value`, `state` and `ancestry` (numbers from
    the root). `trials` are report TrialInfo objects (number, state, values, lineage)."""
    by_number = {t.number: t for t in trials}
    parent = {}
    for t in trials:
        lin = t.lineage or {}
        p = lin.get("promoted_from", lin.get("pbt_parent"))
        if p is not None:
            parent[t.number] = p
    involved = set(parent) | set(parent.values())
    rows = []
    for number in sorted(involved):
        t = by_number.get(number)
        lin = (t.lineage if t is not None else None) or {}
        chain = [number]
        while chain[-1] in parent and len(chain) < 1000:
            chain.append(parent[chain[-1]])
        how = "promoted" if "promoted_from" in lin else "PBT copy" if "pbt_parent" in lin else "fresh"
        change = ", ".join(f"{k} {v}" for k, v in (lin.get("perturbation") or {}).items())
        rows.append(
            {
                "trial": number,
                "parent": parent.get(number),
                "how": how,
                "level": lin.get("rung", lin.get("generation", 0)),
                "change": change,
                "start_step": lin.get("start_step", 0),
                "value": t.values[0] if t is not None and t.values else None,
                "state": t.state if t is not None else "?",
                "ancestry": list(reversed(chain)),
            }
        )
    return rows


def lineage_html(trials: Sequence[Any]) -> str:
    """The report's Lineage section; "" when no trial continued another."""
    rows = lineage_rows(trials)
    if not rows:
        return ""

    def cell(v: Any) -> str:
        text = "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
        return f"<td>{escape(text)}</td>"

    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "trial",
            "from",
            "how",
            "rung / generation",
            "change",
            "from step",
            "value",
            "state",
            "ancestry",
        )
    )
    body = "".join(
        "<tr>"
        + "".join(
            cell(r[k]) for k in ("trial", "parent", "how", "level", "change", "start_step", "value", "state")
        )
        + cell(" → ".join(str(n) for n in r["ancestry"]))
        + "</tr>"
        for r in rows
    )
    return (
        '<section id="lineage"><h2>Lineage</h2><p class="note">Trials that continued another '
        "trial's model: promoted to the next rung, or copied by PBT with perturbed "
        "hyperparameters.</p>"
        f'<div class="table-wrap"><table class="trials"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div></section>"
    )
