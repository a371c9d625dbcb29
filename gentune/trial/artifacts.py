"""Sample grids as Optuna artifacts, so that optuna-dashboard shows them beside each trial.

A built-in trial uploads its final grid (`samples.png`) and the grid of each evaluation during
training (`samples_step_000100.png`, the step in G updates) to a FileSystemArtifactStore. The
store's folder is runs/<study>/artifacts/, or $GENTUNE_ARTIFACTS when it is set (`gentune tune
--artifacts DIR`, `gentune worker --artifacts DIR`): workers on other machines must all point it
at one shared folder for `gentune dashboard` to find every trial's grids (docs/distributed.md).
The study's storage keeps only each artifact's id, file name and type (Optuna's `artifacts:<id>`
trial system attribute); the base64 grids in `samples_png` and `samples_progress` are kept as
before, for the report and for older readers.

>>> import optuna, tempfile
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> trial = optuna.create_study().ask()
>>> grids = GridUploader(Path(tempfile.mkdtemp()))
>>> artifact_id = grids.upload(trial, b"not really a png", FINAL_NAME)
>>> [(m.filename, m.mimetype) for m in optuna.artifacts.get_all_artifact_meta(trial)]
[('samples.png', 'image/png')]
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

ARTIFACTS_ENV = "GENTUNE_ARTIFACTS"  # the store's folder, for every study this process runs
FOLDER = "artifacts"  # the default store: runs/<study>/artifacts/
FINAL_NAME = "samples.png"
PNG = "image/png"


def artifact_dir(study_dir: str | Path) -> Path:
    """The artifact store's folder of the study whose outputs are in `study_dir`
    (runs/<study>): $GENTUNE_ARTIFACTS when set, else `study_dir`/artifacts."""
    given = os.environ.get(ARTIFACTS_ENV, "").strip()
    return Path(given) if given else Path(study_dir) / FOLDER


@contextlib.contextmanager
def using_artifacts(folder: str | Path | None) -> Iterator[None]:
    """Set $GENTUNE_ARTIFACTS to `folder` (None: leave it) while the block runs, and in the
    worker processes it starts, then restore it."""
    before = os.environ.get(ARTIFACTS_ENV)
    if folder is not None:
        os.environ[ARTIFACTS_ENV] = str(Path(folder).resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ARTIFACTS_ENV, None)
        else:
            os.environ[ARTIFACTS_ENV] = before


def step_name(step: int) -> str:
    """The file name of the grid drawn at `step`; zero-padded, so names sort by step.

    >>> step_name(250)
    'samples_step_000250.png'
    """
    return f"samples_step_{int(step):06d}.png"


class GridUploader:
    """Uploads a trial's PNG grids to the artifact store in `folder` (made on first use).

    A grid that cannot be written (a full disk, a read-only folder) is a warning, once per
    uploader: the grids are for viewing, and the trial's value and its base64 grids do not
    depend on them.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._store: FileSystemArtifactStore | None = None
        self._warned = False

    @property
    def store(self) -> FileSystemArtifactStore:
        if self._store is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._store = FileSystemArtifactStore(self.folder)
        return self._store

    def upload(self, trial: optuna.Trial, png: bytes, name: str) -> str | None:
        """Store `png` as the trial's artifact `name`; its artifact id, or None if it failed."""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / name  # the dashboard shows the uploaded file's name
                path.write_bytes(png)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return upload_artifact(
                        artifact_store=self.store, file_path=str(path), study_or_trial=trial, mimetype=PNG
                    )
        except OSError as e:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"sample grids are not stored as artifacts in {self.folder}: {e}; "
                    f"set {ARTIFACTS_ENV} (or --artifacts) to a writable folder",
                    stacklevel=2,
                )
            return None
