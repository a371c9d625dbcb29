"""The `gentune` command. Thin: parse, call the API, print.

Every user mistake is a GentuneError: printed as one clear message, exit code 2.
"""

from __future__ import annotations

import shlex
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import GentuneError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Tune generative models by what they generate.")
err = Console(stderr=True)
out = Console()


def _command_line() -> str:
    return "gentune " + shlex.join(sys.argv[1:])


def _storage_option():
    return typer.Option(None, help="Optuna storage URL (default: sqlite:///RUNS/STUDY/study.db).")


@app.command()
def tune(
    model: str = typer.Option("gan-mlp", help="Model family to tune."),
    dataset: str = typer.Option("digits", help="digits (embedded), mnist, or files (with --data-dir)."),
    data_dir: Optional[Path] = typer.Option(None, help="Local MNIST folder, or your .npy/.npz/PNG folder."),
    strategy: str = typer.Option("tpe", help="grid, random, qmc, tpe (Bayesian) or gp (Gaussian process)."),
    trials: Optional[int] = typer.Option(None, help="Finished trials the study should hold "
                                         "[default: 20; grid: the grid size]."),
    timeout: Optional[float] = typer.Option(None, help="Wall-clock limit for this run, in seconds."),
    space: Optional[Path] = typer.Option(None, help="YAML/TOML file narrowing or replacing the search space."),
    objective: str = typer.Option("fid", help="fid, kid, or loss (the tutorial's final loss; "
                                  "does not measure sample quality)."),
    objective_fn: Optional[str] = typer.Option(None, "--objective-fn",
                                               help="Your own Optuna objective: FILE.py:FUNC or module:func."),
    direction: str = typer.Option("minimize", help="With --objective-fn: minimize or maximize."),
    steps: Optional[int] = typer.Option(None, help="Training budget per trial in generator steps."),
    epochs: Optional[float] = typer.Option(None, help="Training budget per trial in epochs (instead of steps)."),
    n_eval: Optional[int] = typer.Option(None, "--n-eval", help="N generated samples per metric value "
                                         "[default: 1000 on digits, 10000 on mnist]."),
    storage: Optional[str] = _storage_option(),
    study: Optional[str] = typer.Option(None, help="Study name [default: MODEL-DATASET-STRATEGY-OBJECTIVE]."),
    seed: int = typer.Option(0, help="Seed for the sampler and for training."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder for study outputs."),
    report: bool = typer.Option(True, help="Write runs/STUDY/report.html at the end."),
):
    """Run (or resume) a tuning study and print the best configuration."""
    from ..tuner import run_objective
    from ..tuner import tune as tune_api

    if objective_fn:
        from .loading import load_objective

        fn = load_objective(objective_fn)
        name = study or f"user-{Path(objective_fn.split(':')[0]).stem}"
        result = run_objective(fn, study=name, trials=20 if trials is None and strategy != "grid" else trials,
                               timeout=timeout, direction=direction, strategy=strategy, seed=seed,
                               space=space, storage=storage, runs_dir=runs_dir,
                               command=_command_line())
    else:
        if objective == "loss":
            warnings.simplefilter("ignore", UserWarning)
            err.print("[yellow]warning:[/] --objective loss ranks trials by the final generator loss, "
                      "which does not measure sample quality (lowest-loss GANs are often "
                      "mode-collapsed). The sample metrics are still recorded for every trial.")
        result = tune_api(model=model, dataset=dataset, data_dir=data_dir, strategy=strategy,
                          objective=objective, trials=20 if trials is None and strategy != "grid" else trials,
                          timeout=timeout, space=space, steps=steps, epochs=epochs, n_eval=n_eval,
                          seed=seed, device=device, storage=storage, study=study, runs_dir=runs_dir,
                          command=_command_line(), report=report)
    from .show import print_best

    print_best(out, result.best)
    if result.best is not None:
        out.print(f"outputs: {result.out_dir}/ (best.json"
                  + (", report.html" if (result.out_dir / 'report.html').exists() else "") + ")")


@app.command()
def worker(
    study: str = typer.Option(..., help="Name of an existing study (created by gentune tune)."),
    storage: str = typer.Option(..., help="The study's storage URL, e.g. postgresql://user:pw@host/db."),
    trials: Optional[int] = typer.Option(None, help="Stop when the study holds this many finished "
                                         "trials [default: the target stored by gentune tune]."),
    timeout: Optional[float] = typer.Option(None, help="Wall-clock limit for this worker, in seconds."),
    data_dir: Optional[Path] = typer.Option(None, help="Local data folder on this machine."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder for this worker's checkpoints and grids."),
    worker_index: int = typer.Option(0, help="Offsets the sampler seed so workers explore differently."),
):
    """Join an existing study and run its trials; it needs no file but the storage URL."""
    from ..tuner import work

    work(study, storage=storage, data_dir=data_dir, device=device, trials=trials, timeout=timeout,
         runs_dir=runs_dir, worker_index=worker_index)


@app.command()
def best(
    study: str = typer.Option(..., help="Study name."),
    storage: Optional[str] = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder for study outputs."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to write best.json "
                                          "[default: RUNS/STUDY/best.json]."),
):
    """Print the best trial's parameters and metrics, and write best.json."""
    import json

    from ..study import open_study
    from ..tuner import best_summary
    from .show import print_best

    opened = open_study(None, storage=storage or _existing_storage(study, runs_dir), study_name=study)
    summary = best_summary(opened)
    if summary is None:
        raise GentuneError(f"study {study!r} has no completed trial yet",
                           fix="run gentune tune until at least one trial completes")
    print_best(out, summary)
    path = output or runs_dir / study / "best.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    out.print(f"wrote {path}")


@app.command()
def sample(
    study: str = typer.Option(..., help="Study name."),
    trial: Optional[int] = typer.Option(None, help="Trial number [default: the best trial]."),
    n: int = typer.Option(10000, help="Number of samples."),
    output: Path = typer.Option(Path("samples.npy"), "-o", "--output", help="Output .npy file."),
    seed: int = typer.Option(0, help="Latent seed for sampling."),
    storage: Optional[str] = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder for study outputs."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
):
    """Write N samples of a trial's generator as an (N, H, W) float array in [0, 1]."""
    from ..sampling import sample_trial

    path, source = sample_trial(study, trial=trial, n=n, output=output, seed=seed,
                                storage=storage or _existing_storage(study, runs_dir),
                                runs_dir=runs_dir, device=device)
    out.print(f"wrote {n} samples to {path} ({source})")


@app.command()
def report(
    study: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder for study outputs."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Report file (html) or folder (png)."),
    format: str = typer.Option("html", "--format", help="html (one self-contained file) or png."),
):
    """Write the study's report: one offline HTML file, or the key plots as PNG files."""
    from ..report import write_report

    if format not in ("html", "png"):
        raise GentuneError("--format must be html or png", value=format, fix="pass --format html")
    url = storage or _existing_storage(study, runs_dir)
    target = output or (runs_dir / study / ("report.html" if format == "html" else "plots"))
    paths = write_report(url, study, target, fmt=format)
    for p in paths:
        out.print(f"wrote {p}")


def _existing_storage(study: str, runs_dir: Path) -> str:
    path = runs_dir / study / "study.db"
    if not path.exists():
        raise GentuneError(f"no study {study!r} under {runs_dir}/", value=str(path),
                           fix="check the name (ls runs/), or pass --storage URL for a database "
                               "elsewhere")
    return f"sqlite:///{path}"


def main() -> None:
    """Entry point: run the app, turning GentuneError into a clear message and exit code 2."""
    from ..study import Interrupted

    import optuna

    # gentune prints its own progress; Optuna's per-trial INFO lines would repeat it.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        app(standalone_mode=False)
    except GentuneError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        raise SystemExit(e.exit_code)
    except Interrupted as e:
        which = f"trial {e.trial_number} was stopped and queued again; " if e.trial_number is not None else ""
        err.print(f"interrupted: {which}rerun the same command to continue where it stopped.")
        raise SystemExit(130)
    except KeyboardInterrupt:
        err.print("interrupted before any trial started; nothing was lost.")
        raise SystemExit(130)
    except typer.Abort:
        raise SystemExit(130)
    except typer.exceptions.TyperException as e:  # usage errors: unknown option, bad value
        if not hasattr(e, "show"):
            raise
        e.show()
        raise SystemExit(getattr(e, "exit_code", 2))
