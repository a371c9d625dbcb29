"""`gentune list`'s lines: one per study, in aligned columns, never wrapped or cut."""

from __future__ import annotations

from gentune.study.listing import StudyLine

HEADER = ("STUDY", "MODEL/DATA", "TRIALS", "COMPLETE", "PRUNED", "FAILED", "RUNNING", "BEST", "STATE")
RIGHT = {"COMPLETE", "PRUNED", "FAILED", "RUNNING"}


def study_rows(lines: list[StudyLine]) -> list[str]:
    """The header and one row per study: its name (and its folder when that differs, as for a
    study moved aside by --force-new), model/data, finished trials of the target, each state's
    count, the best value with its objective, and the study's state.

    >>> counts = {"complete": 3, "pruned": 1, "failed": 0, "running": 0, "waiting": 0}
    >>> row = StudyLine("s", "runs/s", "gan-mlp", "digits", "fid", counts, 4, 2.5, "finished")
    >>> print("\\n".join(r.rstrip() for r in study_rows([row])))
    STUDY  MODEL/DATA      TRIALS  COMPLETE  PRUNED  FAILED  RUNNING  BEST     STATE
    s      gan-mlp/digits  4/4            3       1       0        0  fid 2.5  finished
    """
    table = [HEADER] + [_cells(line) for line in lines]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    return [
        "  ".join(
            cell.rjust(width) if HEADER[i] in RIGHT else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        )
        for row in table
    ]


def _cells(line: StudyLine) -> tuple[str, ...]:
    name = line.name
    if _folder_name(line.where) not in (line.name, None):
        name += f" (in {line.where})"
    model = line.model or "?"
    target = f"/{line.target}" if line.target is not None else ""
    objective = "value" if line.objective in (None, "user") else line.objective
    return (
        name,
        f"{model}/{line.dataset}" if line.dataset else model,
        f"{line.finished}{target}",
        *(str(line.counts[k]) for k in ("complete", "pruned", "failed", "running")),
        "-" if line.best is None else f"{objective} {line.best:.4g}",
        line.state,
    )


def _folder_name(where: str) -> str | None:
    """The folder a study's default storage lives in (runs/NAME), or None for a database URL."""
    return None if "://" in where else where.rstrip("/").rpartition("/")[2]
