"""The `gentune` command. Thin: parse, call the API, print.

Every user mistake is a GentuneError: printed as one clear message, exit code 2.
"""

from __future__ import annotations

import functools
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from gentune.errors import GentuneError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Tune generative models by what they generate.",
)


def _print_version(value: bool) -> None:
    if value:
        from gentune.version import __version__

        out.print(f"gentune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print gentune's version and exit."
    ),
) -> None:
    """Tune generative models by what they generate."""


# Plain by default: what gentune prints holds the user's names, values and messages, whose
# brackets rich would read as markup ("[adam, sgd]" vanished, "[/x]" crashed). Styled words
# are Text spans.
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)
out = Console(markup=False, highlight=False)


def _command_line() -> str:
    """This command, to store in the study, with every storage password replaced by ***: the
    command is shown in the report, which is made to be shared."""
    from gentune.study.storage import hide_command_password

    return hide_command_password("gentune " + shlex.join(sys.argv[1:]))


def _trust_option(panel: str | None = None):
    return typer.Option(
        False,
        "--trust-changed-code",
        rich_help_panel=panel,
        help="Run your FILE.py (--objective-fn, --model FILE.py:Class) even though its content "
        "changed since the study stored its hash (a study's database decides which file workers "
        "import; see docs/distributed.md).",
    )


# A plain name, as every study made under today's naming rule has, is taken as it is without
# importing gentune.settings (and with it torch), so that best and list answer at once.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def _check_name(study: str) -> str:
    """A study name that best, sample, report and worker may open: one made before today's
    naming rule still opens, but no name may point outside runs/."""
    if _PLAIN_NAME.fullmatch(study):
        return study
    from gentune.settings import check_existing_study_name

    return check_existing_study_name(study)


def _study_argument():
    return typer.Argument(
        None, metavar="STUDY", show_default=False, help="Study name (its folder: runs/STUDY)."
    )


def _study_option():
    return typer.Option(
        None, "--study", help="The study name as an option, as older gentune took it (same as STUDY)."
    )


def _the_study(positional: Optional[str], option: Optional[str]) -> str:
    """The study a command names, positionally or with --study (one of them, or both alike)."""
    if positional is not None and option is not None and positional != option:
        raise GentuneError(
            "the study is named twice, as STUDY and as --study, with different names",
            value={"STUDY": positional, "--study": option},
            fix=f"pass one of them: {positional} or --study {option}",
        )
    name = positional if positional is not None else option
    if name is None:
        raise GentuneError(
            "name the study: e.g. gentune best gan-mlp-digits-tpe-fid",
            fix="pass the study's name (gentune list shows the studies under runs/)",
        )
    return _check_name(name)


# tune --help groups its options in these panels (typer's rich_help_panel).
DATA_PANEL = "Data and model"
BUDGET_PANEL = "Budget: trials, and each trial's training and final score"
SEARCH_PANEL = "Search"
EARLY_PANEL = "Early stopping: scores during training, pruning, failure detectors"
PHASES_PANEL = "Phases after the search"
PARALLEL_PANEL = "Parallel: devices, processes, populations"
OUTPUT_PANEL = "Study and outputs"

STORAGE_ENV = "GENTUNE_STORAGE"  # a storage URL read from the environment stays off command lines


def _storage_option(panel: str | None = None):
    return typer.Option(
        None,
        rich_help_panel=panel,
        envvar=STORAGE_ENV,
        help="Optuna storage URL (default: sqlite:///RUNS/STUDY/study.db), or grpc://HOST:PORT "
        "of a gentune storage-proxy.",
    )


@app.command()
def tune(
    model: Optional[str] = typer.Option(
        None,
        help="Model family (default: gan-mlp): gan-mlp, dcgan, vae, transformer, diffusion; "
        "auto (search across them); or your own, pkg.module:Class or FILE.py:Class.",
        rich_help_panel=DATA_PANEL,
    ),
    dataset: Optional[str] = typer.Option(
        None,
        help="digits (embedded, default), mnist, files (with --data-dir), or text "
        "(tiny-shakespeare, or --data-file).",
        rich_help_panel=DATA_PANEL,
    ),
    data_dir: Optional[Path] = typer.Option(
        None, help="Local MNIST folder, or your .npy/.npz/PNG folder.", rich_help_panel=DATA_PANEL
    ),
    data_file: Optional[Path] = typer.Option(
        None,
        "--data-file",
        help="With --dataset text: your own UTF-8 text file (default: tiny-shakespeare, downloaded).",
        rich_help_panel=DATA_PANEL,
    ),
    objective: Optional[str] = typer.Option(
        None,
        help="fid (default on images), kid, nll (validation "
        "NLL: vae, transformer; default on text), or loss (the "
        "final training loss; does not measure sample quality). Two or three joined by commas "
        "(fid,seconds or precision,recall; seconds: training time) tune for a Pareto front.",
        rich_help_panel=DATA_PANEL,
    ),
    objective_fn: Optional[str] = typer.Option(
        None,
        "--objective-fn",
        help="Your own Optuna objective: FILE.py:FUNC or module:func.",
        rich_help_panel=DATA_PANEL,
    ),
    direction: Optional[str] = typer.Option(
        None,
        help="With --objective-fn: minimize (default) or maximize; several joined by commas "
        "(minimize,maximize) for an objective that returns one value each.",
        rich_help_panel=DATA_PANEL,
    ),
    trust_changed_code: bool = _trust_option(panel=DATA_PANEL),
    trials: Optional[int] = typer.Option(
        None,
        help="Finished trials the study should hold (default: 20; grid: the grid size).",
        rich_help_panel=BUDGET_PANEL,
    ),
    more: Optional[int] = typer.Option(
        None,
        "--more",
        help="Run K more trials on top of the finished trials the study holds (instead of "
        "--trials, which is a total).",
        rich_help_panel=BUDGET_PANEL,
    ),
    timeout: Optional[float] = typer.Option(
        None,
        help="Wall-clock limit for this run, in seconds: no trial starts after it, and one still "
        "running 10% of it (at least 5 s) later is stopped and queued again.",
        rich_help_panel=BUDGET_PANEL,
    ),
    steps: Optional[int] = typer.Option(
        None, help="Training budget per trial in generator steps.", rich_help_panel=BUDGET_PANEL
    ),
    epochs: Optional[float] = typer.Option(
        None,
        help="Training budget per trial in epochs (instead of steps).",
        rich_help_panel=BUDGET_PANEL,
    ),
    trial_seconds: Optional[float] = typer.Option(
        None,
        "--trial-seconds",
        help="Also stop a trial's "
        "training after this many seconds and score the "
        "model it has (equal-time comparisons).",
        rich_help_panel=BUDGET_PANEL,
    ),
    n_eval: Optional[int] = typer.Option(
        None,
        "--n-eval",
        help="Samples generated for a trial's final score, the N of its FID (default: 1000 on "
        "digits, 10000 on mnist). The scores during training use --eval-samples.",
        rich_help_panel=BUDGET_PANEL,
    ),
    strategy: Optional[str] = typer.Option(
        None,
        help="grid, random, qmc, tpe (Bayesian, default), gp (Gaussian process), nsga2 "
        "(genetic; for multi-objective studies) or pbt (Population Based Training: needs a "
        "family that trains as a population).",
        rich_help_panel=SEARCH_PANEL,
    ),
    space: Optional[Path] = typer.Option(
        None,
        help="YAML/TOML file narrowing or replacing the search space.",
        rich_help_panel=SEARCH_PANEL,
    ),
    seed: Optional[int] = typer.Option(
        None, help="Seed for the sampler and for training (default: 0).", rich_help_panel=SEARCH_PANEL
    ),
    pruner: Optional[str] = typer.Option(
        None,
        help="none, median, percentile, halving or hyperband (default: grid: none; others: median).",
        rich_help_panel=EARLY_PANEL,
    ),
    patience: Optional[int] = typer.Option(
        None,
        help="Prune only after this many evaluations in a row without improvement (wraps the pruner).",
        rich_help_panel=EARLY_PANEL,
    ),
    evals: Optional[int] = typer.Option(
        None,
        help="How many times a trial is scored during training, before its final score: the "
        "pruner and the detectors act on these (default: 5; 0: none, and no pruning). Or "
        "--eval-every.",
        rich_help_panel=EARLY_PANEL,
    ),
    eval_every: Optional[int] = typer.Option(
        None,
        "--eval-every",
        help="Score during training every this many steps, instead of --evals times (default: "
        "budget / (evals + 1)).",
        rich_help_panel=EARLY_PANEL,
    ),
    eval_samples: Optional[int] = typer.Option(
        None,
        "--eval-samples",
        help="Samples generated for each score during training (default: min(--n-eval, 1000)); "
        "--n-eval is the final score's.",
        rich_help_panel=EARLY_PANEL,
    ),
    detectors: Optional[str] = typer.Option(
        None,
        help="Failure detectors: on, off, or a list such as diverged,mode_collapse (default: on).",
        rich_help_panel=EARLY_PANEL,
    ),
    detector_config_file: Optional[Path] = typer.Option(
        None,
        "--detector-config",
        help="YAML file of detector thresholds.",
        rich_help_panel=EARLY_PANEL,
    ),
    detector: Optional[list[str]] = typer.Option(
        None,
        "--detector",
        help="Set one threshold, e.g. stagnation.patience=5 (repeatable).",
        rich_help_panel=EARLY_PANEL,
    ),
    prune_overfitting: bool = typer.Option(
        False,
        "--prune-overfitting",
        help="Prune a trial when its "
        "validation loss rises for 3 evaluations while its training "
        "loss falls (it is flagged either way).",
        rich_help_panel=EARLY_PANEL,
    ),
    promotion: Optional[bool] = typer.Option(
        None,
        "--promotion/--no-promotion",
        help="With --population: continue the top third of each rung from its state, 3x as long "
        "(asynchronous successive halving; default: on with --population).",
        rich_help_panel=EARLY_PANEL,
    ),
    stages: Optional[str] = typer.Option(
        None,
        help="Stepwise tuning: auto, a number of stages, or groups such as lr,batch_size:beta1,d_steps.",
        rich_help_panel=PHASES_PANEL,
    ),
    screen_trials: Optional[int] = typer.Option(
        None,
        "--screen-trials",
        help="Trials of the screening run that orders parameters for --stages auto (default: 10).",
        rich_help_panel=PHASES_PANEL,
    ),
    narrow: bool = typer.Option(
        False,
        "--narrow",
        help="Then search again in ranges narrowed around the top trials.",
        rich_help_panel=PHASES_PANEL,
    ),
    narrow_top: Optional[int] = typer.Option(
        None,
        "--narrow-top",
        help="Trials to narrow around (default: 5).",
        rich_help_panel=PHASES_PANEL,
    ),
    narrow_trials: Optional[int] = typer.Option(
        None,
        "--narrow-trials",
        help="Trials of the narrowed search (default: --trials).",
        rich_help_panel=PHASES_PANEL,
    ),
    confirm: Optional[int] = typer.Option(
        None,
        help="Re-run the top K configurations with extra seeds and pick the best by mean.",
        rich_help_panel=PHASES_PANEL,
    ),
    confirm_seeds: Optional[int] = typer.Option(
        None,
        "--confirm-seeds",
        help="Extra seeds per configuration for --confirm (default: 2).",
        rich_help_panel=PHASES_PANEL,
    ),
    noise_seeds: Optional[int] = typer.Option(
        None,
        "--noise-seeds",
        help="After the search, re-score the best trial under this many other latent seeds, "
        "without training, and show its value's noise band (default: 5; 0 skips it).",
        rich_help_panel=PHASES_PANEL,
    ),
    device: Optional[str] = typer.Option(
        None,
        help="auto (CUDA when present; default), cpu, cuda or cuda:N.",
        rich_help_panel=PARALLEL_PANEL,
    ),
    workers: Optional[int] = typer.Option(
        None,
        help="Worker processes sharing the study on this machine (default on the CPU: one per "
        "core, up to 4, with 5 trials or more each; else 1).",
        rich_help_panel=PARALLEL_PANEL,
    ),
    gpus: Optional[str] = typer.Option(
        None,
        help="GPU indices for the workers, one each in turn, "
        "e.g. 0,1 (default: all GPUs with --device auto).",
        rich_help_panel=PARALLEL_PANEL,
    ),
    threads: Optional[int] = typer.Option(
        None,
        help="Torch threads per worker (default: CPU cores / workers).",
        rich_help_panel=PARALLEL_PANEL,
    ),
    population: Optional[str] = typer.Option(
        None,
        help="Train K trials at once in one batched population: a number, auto (K measured on "
        "this device) or off (default: auto with CUDA for gan-mlp and dcgan, else off).",
        rich_help_panel=PARALLEL_PANEL,
    ),
    study: Optional[str] = typer.Option(
        None,
        help="Study name (default: MODEL-DATASET-STRATEGY-OBJECTIVE, with the budget when it is not "
        "the default one: ...-fid-steps500).",
        rich_help_panel=OUTPUT_PANEL,
    ),
    force_new: bool = typer.Option(
        False,
        "--force-new",
        help="Start the study afresh: its folder RUNS/STUDY (and those of its phases' studies) is "
        "moved aside to RUNS/STUDY.old-TIME, never deleted.",
        rich_help_panel=OUTPUT_PANEL,
    ),
    storage: Optional[str] = _storage_option(panel=OUTPUT_PANEL),
    runs_dir: Optional[Path] = typer.Option(
        None, help="Folder for study outputs (default: runs).", rich_help_panel=OUTPUT_PANEL
    ),
    report: Optional[bool] = typer.Option(
        None,
        "--report/--no-report",
        help="Write runs/STUDY/report.html at the end (default: yes).",
        rich_help_panel=OUTPUT_PANEL,
    ),
    mlflow: Optional[str] = typer.Option(
        None,
        "--mlflow",
        metavar="TRACKING_URI",
        help="Also log each trial (parameters, metrics, sample grid) as an MLflow run, in an "
        "experiment named after the study: e.g. sqlite:///mlflow.db or http://HOST:5000 "
        "(pip install 'gentune[mlflow]').",
        rich_help_panel=OUTPUT_PANEL,
    ),
    artifacts: Optional[Path] = typer.Option(
        None,
        "--artifacts",
        metavar="DIR",
        help="Folder for the trials' sample grids as Optuna artifacts, which gentune dashboard "
        "shows (default: $GENTUNE_ARTIFACTS, else RUNS/STUDY/artifacts); workers on several "
        "machines need one shared folder.",
        rich_help_panel=OUTPUT_PANEL,
    ),
):
    """Run (or resume) a tuning study and print the best configuration."""
    options = dict(locals())
    from gentune.trial.artifacts import using_artifacts

    with using_artifacts(artifacts):
        _tune(False, **options)


@app.command(
    "create",
    help="Create a study (the options of tune) and run no trial: start `gentune worker` processes "
    "on it, here or on other machines.",
)
@functools.wraps(tune)
def create(**options: Any) -> None:
    _tune(True, **options)


def _tune(
    create_only: bool,
    *,
    model: Any,
    dataset: Any,
    data_dir: Any,
    data_file: Any,
    strategy: Any,
    population: Any,
    promotion: Any,
    trials: Any,
    more: Any,
    force_new: Any,
    timeout: Any,
    space: Any,
    objective: Any,
    objective_fn: Any,
    direction: Any,
    steps: Any,
    epochs: Any,
    trial_seconds: Any,
    n_eval: Any,
    storage: Any,
    study: Any,
    seed: Any,
    device: Any,
    runs_dir: Any,
    report: Any,
    workers: Any,
    gpus: Any,
    threads: Any,
    pruner: Any,
    patience: Any,
    evals: Any,
    eval_every: Any,
    eval_samples: Any,
    detectors: Any,
    detector_config_file: Any,
    detector: Any,
    stages: Any,
    screen_trials: Any,
    narrow: Any,
    narrow_top: Any,
    narrow_trials: Any,
    confirm: Any,
    confirm_seeds: Any,
    noise_seeds: Any = None,
    prune_overfitting: Any,
    trust_changed_code: Any = False,
    mlflow: Any = None,
    artifacts: Any = None,
) -> None:
    from gentune.api import (
        Budget,
        DatasetRef,
        EarlyStop,
        Phases,
        RunOptions,
        SearchOptions,
        create,
        create_objective,
        run_objective,
    )
    from gentune.api import tune as tune_family
    from gentune.cli.identity import check_more
    from gentune.loading import load_objective
    from gentune.phases.search import BuiltinSearch
    from gentune.settings import TuneRequest
    from gentune.study.runner import check_writable
    from gentune.study.workers import parse_gpus
    from gentune.trial.detectors import detector_config

    phases = Phases(
        **_given(
            stages=stages,
            screen_trials=screen_trials,
            narrow=narrow,
            narrow_top=narrow_top,
            narrow_trials=narrow_trials,
            confirm=confirm,
            confirm_seeds=confirm_seeds,
        )
    )
    if create_only and phases != Phases():
        raise GentuneError(
            "gentune create runs no phase: --stages, --narrow and --confirm belong to gentune tune",
            value={k: v for k, v in vars(phases).items() if v},
            fix="drop them, or run gentune tune",
        )
    search = SearchOptions(
        **_given(
            strategy=strategy,
            trials=trials,
            timeout=timeout,
            space=space,
            seed=seed,
            population=population,
            promotion=promotion,
        )
    )
    run = RunOptions(
        **_given(
            study=study,
            storage=storage,
            runs_dir=runs_dir,
            device=device,
            workers=workers,
            gpus=parse_gpus(gpus),
            threads=threads,
            report=report,
            command=_command_line(),
            trust_changed_code=trust_changed_code,
            noise_seeds=noise_seeds,
        )
    )
    if direction is not None and not objective_fn:
        raise GentuneError(
            "--direction applies to your own --objective-fn only: gentune's objectives "
            "(fid, kid, nll, loss) are all minimised",
            value=direction,
            fix="drop --direction",
        )
    check_more(more, trials, phases != Phases())
    check_writable(run.runs_dir)
    if create_only and (mlflow or artifacts):
        raise GentuneError(
            "gentune create runs no trial, so --mlflow and --artifacts have nothing to do there",
            value={k: str(v) for k, v in (("--mlflow", mlflow), ("--artifacts", artifacts)) if v},
            fix="pass them to each gentune worker, which runs the trials",
        )
    callbacks = _trackers(mlflow, run.workers or 1)
    if objective_fn:
        if steps is not None or epochs is not None or trial_seconds is not None:
            raise GentuneError(
                "--steps, --epochs and --trial-seconds set the budget of gentune's own "
                "trainers; your objective sets its own",
                value=objective_fn,
                fix="drop them, and budget the training inside your objective",
            )
        from gentune.settings import safe_study_name

        name = study or safe_study_name(f"user-{Path(objective_fn.split(':')[0]).stem}")
        run, search, before = _settle(name, run, search, more, force_new)
        if create_only:
            created = create_objective(
                _portable_spec(objective_fn),
                study=name,
                **_given(direction=direction),
                search=search,
                run=run,
            )
            return _say_created(created, run)
        result = run_objective(
            load_objective(objective_fn),
            study=name,
            **_given(direction=direction),
            search=search,
            run=run,
            phases=phases,
            objective_spec=_portable_spec(objective_fn),
            callbacks=callbacks,
        )
    else:
        _objective_notes(objective)
        data = data_file or data_dir
        request: dict[str, Any] = dict(
            **_given(model=model, objective=objective, n_eval=n_eval),
            dataset=DatasetRef(dataset or "digits", None if data is None else str(data)),
            budget=Budget(steps=steps, epochs=epochs, trial_seconds=trial_seconds),
            search=search,
            early_stop=EarlyStop(
                pruner=pruner,
                patience=patience,
                evals=evals,
                eval_every=eval_every,
                eval_samples=eval_samples,
                detectors=detector_config(detectors, detector_config_file, detector),
                prune_overfitting=prune_overfitting,
            ),
            run=run,
        )
        name = BuiltinSearch(TuneRequest(**{k: v for k, v in request.items() if k != "run"}), run).name
        run, search, before = _settle(name, run, search, more, force_new)
        request.update(run=run, search=search)
        with warnings.catch_warnings():
            # The API warns about --objective loss too; the message above already said it.
            warnings.filterwarnings("ignore", message="--objective loss", category=UserWarning)
            warnings.filterwarnings("ignore", message="a multi-objective study", category=UserWarning)
            if create_only:
                return _say_created(create(**request), run)
            result = tune_family(**request, phases=phases, callbacks=callbacks)
    _print_outcome(result, before if phases == Phases() else None, run.command or "gentune tune")


def _objective_notes(objective: str | None) -> None:
    """Warn about --objective loss and note what a multi-objective study gives, before it runs."""
    if objective is not None and "loss" in (o.strip() for o in objective.split(",")):
        err.print(
            Text.assemble(
                ("warning:", "yellow"),
                " --objective loss ranks trials by the final generator loss, "
                "which does not measure sample quality (lowest-loss GANs are often "
                "mode-collapsed). The sample metrics are still recorded for every trial.",
            )
        )
    if objective is not None and "," in objective:
        from gentune.settings import MULTI_OBJECTIVE_NOTE

        err.print(Text.assemble(("note:", "yellow"), f" {MULTI_OBJECTIVE_NOTE}"))


def _print_outcome(result: Any, before: Any, command: str) -> None:
    """The best trial and the outputs of a tune; first, when the study held its target before
    the run (`before`, its identity; None with phases, which run studies of their own), that
    nothing ran and how to go on."""
    from gentune.cli.identity import nothing_to_run
    from gentune.cli.show import print_best
    from gentune.trial import attrs

    if before is not None:
        done = nothing_to_run(before, attrs.target_trials(result.study), command)
        if done:
            out.print(done, soft_wrap=True)
    print_best(out, result.best)
    if result.best is not None:
        out.print(
            f"outputs: {result.out_dir}/ (best.json"
            + (", report.html" if (result.out_dir / "report.html").exists() else "")
            + ")"
        )


@app.command()
def worker(
    study: Optional[str] = _study_argument(),
    study_option: Optional[str] = _study_option(),
    storage: str = typer.Option(
        ...,
        envvar=STORAGE_ENV,
        help="The study's storage URL, e.g. postgresql://user:pw@host/db or grpc://HOST:PORT.",
    ),
    trials: Optional[int] = typer.Option(
        None,
        help="Stop when the study holds this many finished "
        "trials (default: the target stored by gentune tune).",
    ),
    timeout: Optional[float] = typer.Option(
        None,
        help="Wall-clock limit for this worker, in seconds; a trial still running 10% of it (at "
        "least 5 s) later is stopped and queued again.",
    ),
    data_dir: Optional[Path] = typer.Option(None, help="Local data folder on this machine."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder for this worker's checkpoints and grids."),
    worker_index: Optional[int] = typer.Option(
        None,
        help="Offsets the sampler seed so workers explore differently (default: drawn from host and pid).",
    ),
    threads: Optional[int] = typer.Option(None, help="Torch threads for this worker (default: all cores)."),
    population: Optional[int] = typer.Option(
        None,
        help="A population study: the members this worker trains at once (default: the study's K; "
        "gentune tune --workers N gives each worker its share of K).",
    ),
    progress: bool = typer.Option(True, help="Show this worker's progress."),
    mlflow: Optional[str] = typer.Option(
        None,
        "--mlflow",
        metavar="TRACKING_URI",
        help="Also log each trial (parameters, metrics, sample grid) as an MLflow run, in an "
        "experiment named after the study: e.g. sqlite:///mlflow.db or http://HOST:5000 "
        "(pip install 'gentune[mlflow]').",
    ),
    artifacts: Optional[Path] = typer.Option(
        None,
        "--artifacts",
        metavar="DIR",
        help="Folder for the trials' sample grids as Optuna artifacts, which gentune dashboard "
        "shows (default: $GENTUNE_ARTIFACTS, else RUNS/STUDY/artifacts); workers on several "
        "machines need one shared folder.",
    ),
    trust_changed_code: bool = _trust_option(),
):
    """Join an existing study and run its trials; it needs no file but the storage URL."""
    from gentune.loading import trusting_changed_code
    from gentune.phases.population import is_population_study, work_population
    from gentune.study.runner import check_work_values, work
    from gentune.study.store import open_or_create

    name = _the_study(study, study_option)
    check_work_values(trials=trials, timeout=timeout, runs_dir=runs_dir, threads=threads)
    from gentune.trial.artifacts import using_artifacts

    with trusting_changed_code(trust_changed_code), using_artifacts(artifacts):
        # A population study: each worker trains a population of its own.
        pop_study = is_population_study(open_or_create(name, storage))
        if population is not None and not pop_study:
            raise GentuneError(
                "--population K is for a study made with --population",
                value=population,
                fix="leave out --population: this study trains one trial at a time",
            )
        run = functools.partial(work_population, k=population) if pop_study else work
        run(
            name,
            storage,
            data_dir=data_dir,
            device=device,
            trials=trials,
            timeout=timeout,
            runs_dir=runs_dir,
            worker_index=worker_index,
            threads=threads,
            progress=progress,
            callbacks=_trackers(mlflow),
        )


@app.command()
def best(
    study: Optional[str] = _study_argument(),
    study_option: Optional[str] = _study_option(),
    storage: Optional[str] = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder for study outputs."),
    output: Optional[Path] = typer.Option(
        None,
        "-o",
        "--output",
        help="Also write the best trial as JSON to this file, e.g. -o best.json (without it, "
        "nothing is written).",
    ),
):
    """Print the best trial's parameters and metrics (with -o, also as a JSON file).

    It only reads the study, without loading torch, so it answers at once."""
    from gentune.cli.show import print_best
    from gentune.study.listing import open_existing
    from gentune.study.summary import best_summary, noise_lines, write_json

    name = _the_study(study, study_option)
    opened = open_existing(name, storage or _existing_storage(name, runs_dir))
    summary = best_summary(opened)
    if summary is None:
        raise GentuneError(
            f"study {name!r} has no completed trial yet",
            fix="run gentune tune until at least one trial completes",
        )
    print_best(out, summary)
    for line in noise_lines(summary):
        out.print(line, markup=False, highlight=False)
    if output is not None:
        write_json(output, summary)
        out.print(f"wrote {output}")


@app.command()
def sample(
    study: Optional[str] = _study_argument(),
    study_option: Optional[str] = _study_option(),
    trial: Optional[int] = typer.Option(None, help="Trial number (default: the best trial)."),
    n: int = typer.Option(10000, help="Number of samples."),
    output: Path = typer.Option(
        Path("samples.npy"),
        "-o",
        "--output",
        help="Output file: .npy (an array), .npz (the array under 'x') or .png (a grid of the "
        "samples); a name without a suffix gets .npy. A text model writes a .txt file.",
    ),
    seed: int = typer.Option(0, help="Latent seed for sampling."),
    storage: Optional[str] = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder for study outputs."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
):
    """Write N samples of a trial's generator: an (N, H, W) float array in [0, 1], or a PNG grid."""
    from gentune.study.sampling import sample_trial

    name = _the_study(study, study_option)
    path, source = sample_trial(
        name,
        trial=trial,
        n=n,
        output=output,
        seed=seed,
        storage=storage or _existing_storage(name, runs_dir),
        runs_dir=runs_dir,
        device=device,
    )
    out.print(f"wrote {n} samples to {path} ({source})")


@app.command()
def report(
    study: Optional[str] = _study_argument(),
    study_option: Optional[str] = _study_option(),
    storage: Optional[str] = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder for study outputs."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Report file (html) or folder (png)."),
    format: str = typer.Option("html", "--format", help="html (one self-contained file) or png."),
):
    """Write the study's report: one offline HTML file, or the key plots as PNG files."""
    from gentune.report import write_report

    name = _the_study(study, study_option)
    if format not in ("html", "png"):
        raise GentuneError("--format must be html or png", value=format, fix="pass --format html")
    url = storage or _existing_storage(name, runs_dir)
    target = output or (runs_dir / name / ("report.html" if format == "html" else "plots"))
    paths = write_report(url, name, target, fmt=format)
    for p in paths:
        out.print(f"wrote {p}")


@app.command("list")
def list_studies(
    runs_dir: Path = typer.Option(Path("runs"), help="Folder whose studies to list."),
    storage: Optional[str] = typer.Option(
        None, envvar=STORAGE_ENV, help="A database URL: list the studies in it instead of runs/'s."
    ),
):
    """List the studies, one line each: model and data, trials, best value, and state
    (finished, running, interrupted: rerun its command to go on; new: no trial yet)."""
    from gentune.cli.studies import study_rows
    from gentune.study.listing import list_studies as studies

    found = studies(runs_dir, storage)
    if not found:
        out.print(f"no study in {'the storage' if storage else f'{runs_dir}/'}", soft_wrap=True)
        return
    for row in study_rows(found):
        out.print(row.rstrip(), soft_wrap=True)


def _settle(name: str, run: Any, search: Any, more: Optional[int], force_new: bool) -> tuple[Any, Any, Any]:
    """The run's options with the study named, its --trials with --more; the study as it was
    before this run, after --force-new moved an old one aside."""
    from dataclasses import replace

    from gentune.cli.identity import Identity, identify, more_trials, move_aside

    study = identify(name, run)
    if force_new:
        for old, new in move_aside(study, run):
            out.print(f"--force-new: moved {old}/ aside to {new}/ (nothing is deleted)", soft_wrap=True)
        study = Identity(name, study.storage, None)
    if more is not None:
        search = replace(search, trials=more_trials(study, more))
    return replace(run, study=name), search, study


def _say_created(study: Any, run: Any) -> None:
    from gentune.study.storage import hide_password
    from gentune.study.store import default_storage

    given = run.storage or default_storage(study.study_name, Path(run.runs_dir))
    url = hide_password(given)
    out.print(
        f"created study {study.study_name} ({url}); it runs no trial until workers join it:", markup=False
    )
    out.print(f"  gentune worker {shlex.quote(study.study_name)} --storage {shlex.quote(url)}", markup=False)
    if url != given:
        out.print(
            "  (the password is shown as ***: put it in, or leave it out of the URL and give it "
            "in PGPASSWORD or ~/.pgpass on each worker)",
            markup=False,
        )


def _trackers(mlflow: Optional[str], workers: int = 1) -> list[Any]:
    """The trial callbacks the options ask for; MLflow, slow to import, only with --mlflow."""
    if not mlflow:
        return []
    if workers > 1:
        raise GentuneError(
            "--mlflow logs the trials of the process that runs them, and --workers runs them in "
            "other processes",
            value=workers,
            fix="drop --workers, or start gentune worker --mlflow URI processes on the study",
        )
    from gentune.study.trackers import MLflowTracker

    return [MLflowTracker(mlflow)]


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave: None means "not given", so the default comes from gentune.settings."""
    return {k: v for k, v in options.items() if v is not None}


def _portable_spec(spec: str) -> str:
    """FILE.py:FUNC with an absolute path, so workers started elsewhere find the file."""
    target, _, name = spec.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).resolve()}:{name}"
    return spec


def _existing_storage(study: str, runs_dir: Path) -> str:
    from gentune.study.listing import runs_storage

    return runs_storage(
        study, runs_dir, fix="check the name (gentune list), or pass --storage URL for a database elsewhere"
    )


def main() -> None:
    """Entry point: run the app, turning GentuneError into a clear message and exit code 2."""
    import optuna

    # gentune prints its own progress; Optuna's per-trial INFO lines would repeat it.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        app(standalone_mode=False)
    except GentuneError as e:
        err.print(Text.assemble(("error:", "red"), f" {e}"))
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted before any trial started; nothing was lost.")
        raise SystemExit(130) from None
    except typer.Abort:
        raise SystemExit(130) from None
    except typer.exceptions.TyperException as e:  # usage errors: unknown option, bad value
        if not hasattr(e, "show"):
            raise
        e.show()
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    except Exception as e:
        # Only the runner raises Interrupted, so it is looked up where it was raised rather
        # than imported here: the runner loads torch, which best, list and --version never need.
        runner = sys.modules.get("gentune.study.runner")
        if runner is None or not isinstance(e, runner.Interrupted):
            raise
        which = f"trial {e.trial_number} was stopped and queued again; " if e.trial_number is not None else ""
        err.print(f"interrupted: {which}rerun the same command to continue where it stopped.")
        raise SystemExit(130) from None


@app.command("storage-proxy")
def storage_proxy(
    storage: str = typer.Option(
        ...,
        envvar=STORAGE_ENV,
        help="The database to serve: postgresql://user:pw@host/db or sqlite:///path/study.db.",
    ),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on. The proxy has no authentication: anyone who reaches it can "
        "change every study, so keep it on a private network.",
    ),
    port: int = typer.Option(13000, min=1, max=65535, help="Port to listen on."),
):
    """Serve a study database to many workers over gRPC (Optuna's storage proxy): they pass
    --storage grpc://HOST:PORT and share the proxy's database connections. Runs until Ctrl-C."""
    from gentune.study.proxy import proxy_url, serve, served_storage
    from gentune.study.storage import hide_password

    served = served_storage(storage)
    url = proxy_url(host, port)
    out.print(
        f"storage proxy for {hide_password(storage)} on {url}; Ctrl-C stops it", markup=False, soft_wrap=True
    )
    out.print(f"  workers: gentune worker --storage {url} --study NAME", markup=False, soft_wrap=True)
    serve(served, host, port)


@app.command()
def dashboard(
    study: Optional[str] = _study_argument(),
    study_option: Optional[str] = _study_option(),
    storage: Optional[str] = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder for study outputs."),
    artifacts: Optional[Path] = typer.Option(
        None,
        "--artifacts",
        metavar="DIR",
        help="The folder the trials stored their sample grids in (default: $GENTUNE_ARTIFACTS, "
        "else RUNS/STUDY/artifacts).",
    ),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on. The dashboard can change the study (notes, deleting "
        "trials) and has no login: keep it on this machine or a private network.",
    ),
    port: int = typer.Option(8080, min=0, max=65535, help="Port to listen on (0: any free port)."),
):
    """Start optuna-dashboard on the study, with each trial's sample grids; runs until Ctrl-C.
    Needs the dashboard extra: pip install 'gentune[dashboard]'."""
    from gentune.study.dashboard import dashboard_server
    from gentune.trial.artifacts import artifact_dir

    name = _the_study(study, study_option)
    url = storage or _existing_storage(name, runs_dir)
    folder = artifacts or artifact_dir(runs_dir / name)
    server, page = dashboard_server(name, url, folder, host, port)
    out.print(
        f"optuna-dashboard for study {name} on {page} (grids from {folder}/); Ctrl-C stops it",
        soft_wrap=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
