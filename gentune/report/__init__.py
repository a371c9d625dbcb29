"""`gentune report`: a self-contained HTML page or PNG plots, built from a study's storage alone."""

from __future__ import annotations

from pathlib import Path

from gentune.errors import unknown_choice
from gentune.extras import require

FORMATS = ("html", "png")


def write_report(storage: str, study_name: str, out: Path, *, fmt: str = "html") -> list[Path]:
    """Write the report of a study and return the files written.

    storage is an Optuna storage URL (a path to a .db file is read as sqlite). fmt "html" writes
    one page to out (out/report.html when out is a folder), which opens offline; fmt "png"
    writes the key plots into the folder out.
    Raises StudyError when the storage or the study does not exist.
    """
    if fmt not in FORMATS:
        raise unknown_choice("report format", fmt, FORMATS)
    # Imported here: plotly and matplotlib take a second to import and only reports need them.
    require("plotly", "the report")
    require("matplotlib", "the report")
    from gentune.report.extract import extract_study, open_study
    from gentune.report.html import write_html
    from gentune.report.plots import build_panels, write_pngs
    from gentune.report.trust import importance as importance_of

    study = open_study(storage, study_name)
    info = extract_study(study)
    found = importance_of(study, info)
    importance, why_not = found.values, found.why_not
    out = Path(out)
    if fmt == "png":
        return write_pngs(info, importance, why_not, out, basis=found.basis)
    if out.is_dir():
        out = out / "report.html"
    return [write_html(info, build_panels(study, info, importance, why_not, basis=found.basis), out)]
