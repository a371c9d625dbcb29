"""Parallel workers: trials per minute with 1 and 2 workers, and storage overhead per trial.

    python bench/parallel.py [--cheap-trials 24] [--gan-trials 6] [--gan-steps 200]
                             [--overhead-trials 100] [--skip-gan] [--skip-overhead]

(a) Scaling. `gentune tune --workers N` (N = 1, 2) on the same study settings, in a fresh
    folder each time, on SQLite (the default storage):
    - cheap: a user objective doing a fixed amount of single-threaded CPU work (small torch
      matmuls, about 0.5 s on one core): it measures how well worker processes share the
      cores, since one process cannot use the second core for this work;
    - gan: the digits GAN with a small budget (`--steps`, `--n-eval 200`, no pruning, so each
      trial trains its full budget), where each worker
      gets cores / N torch threads; its scaling also depends on how well torch uses 2 threads
      in one process, so it is the honest number for real studies.
    Trials per minute count the run's trials between the first trial's start and the last
    trial's end (process start-up excluded); the wall time with start-up is printed too.
(b) Storage overhead: gentune's runner (one process) on an objective that returns at once,
    per trial, for SQLite, PostgreSQL (a throw-away local server, as in the tests) and the
    journal file. This is what a trial costs in bookkeeping: sampling, the scheduling checks,
    heartbeats and attribute writes.
Other work on the machine skews the numbers, so each run prints how many cores other
processes used meanwhile (from /proc/stat, less this benchmark's own CPU time).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK_ITERS = int(os.environ.get("BENCH_WORK_ITERS", "50000"))


def cheap_objective(trial) -> float:
    """Single-threaded CPU work of fixed size (the same in every trial): ~0.5 s on one core."""
    import torch

    torch.set_num_threads(1)  # the work is single-threaded by design, whatever the worker has
    x = trial.suggest_float("x", -5, 5)
    g = torch.Generator().manual_seed(trial.number)
    a = torch.randn(48, 48, generator=g)
    b = torch.randn(48, 48, generator=g)
    for _ in range(WORK_ITERS):
        b = torch.tanh(a @ b)
    return (x - 1) ** 2 + float(b.abs().mean()) * 1e-6


def _throughput(storage: str, study: str) -> tuple[int, float]:
    import optuna
    from optuna.trial import TrialState

    done = [
        t
        for t in optuna.load_study(study_name=study, storage=storage).trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    return len(done), len(done) / span.total_seconds() * 60


def scaling(kind: str, trials: int, steps: int) -> dict[str, float]:
    """Trials per minute with 1 and 2 workers; prints one line each and the ratios.

    One worker runs twice for the GAN: with the default threads (all cores, 2 here) and with
    one thread, so that the ratio is not flattered by a poor 2-thread baseline.
    """
    runs = {"1 worker": (1, None), "2 workers": (2, None)}
    if kind == "gan":
        runs = {"1 worker": (1, None), "1 worker, 1 thread": (1, 1), "2 workers": (2, None)}
    per_min = {}
    for label, (workers, threads) in runs.items():
        rate, n, wall, others = _one_run(kind, trials, steps, workers, threads)
        per_min[label] = rate
        shown = threads or max(1, (os.cpu_count() or 1) // workers)
        print(
            f"  {kind:5s} {label:20s} ({shown} thread(s) each): {n} trials, {rate:6.1f} trials/min "
            f"({60 / rate:5.2f} s/trial), wall {wall:5.1f} s with start-up; other processes "
            f"used {others:.2f} of the {os.cpu_count()} cores meanwhile",
            flush=True,
        )
    for label in runs:
        if label != "2 workers":
            print(
                f"  {kind:5s} scaling 2 workers vs {label}: {per_min['2 workers'] / per_min[label]:.2f}x",
                flush=True,
            )
    return per_min


def _busy_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _one_run(kind: str, trials: int, steps: int, workers: int, threads: int | None):
    with tempfile.TemporaryDirectory(prefix="gentune-bench-") as tmp:
        study = f"bench-{kind}"
        if kind == "cheap":
            args = ["--objective-fn", f"{Path(__file__).resolve()}:cheap_objective", "--strategy", "random"]
        else:
            # no evaluations during training, no detectors: every trial does the same work
            args = [
                "--dataset",
                "digits",
                "--steps",
                str(steps),
                "--n-eval",
                "200",
                "--evals",
                "0",
                "--detectors",
                "off",
            ]
        if threads is not None:
            args += ["--threads", str(threads)]
        cmd = [
            sys.executable,
            "-m",
            "gentune",
            "tune",
            *args,
            "--study",
            study,
            "--trials",
            str(trials),
            "--workers",
            str(workers),
            "--runs-dir",
            tmp,
            "--no-report",
        ]
        t0, busy0, ours0 = time.perf_counter(), _busy_seconds(), _children_seconds()
        run = subprocess.run(
            cmd,
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "BENCH_WORK_ITERS": str(WORK_ITERS)},
        )
        if run.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
        wall = time.perf_counter() - t0
        others = (_busy_seconds() - busy0 - (_children_seconds() - ours0)) / wall
        n, rate = _throughput(f"sqlite:///{tmp}/{study}/study.db", study)
        return rate, n, wall, others


def overhead(url: str, trials: int) -> float:
    """Milliseconds of bookkeeping per trial with an objective that returns at once."""
    import optuna

    from gentune.study.runner import Runner
    from gentune.study.store import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=make_storage(url), study_name="overhead", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    t0 = time.perf_counter()
    Runner(study, lambda t: t.suggest_float("x", 0, 1), n_trials=trials, timeout=None).run()
    return (time.perf_counter() - t0) / trials * 1000


def storage_overheads(trials: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_fixture import PostgresServer, find_bin_dir

    with tempfile.TemporaryDirectory(prefix="gentune-bench-") as tmp:
        urls = {"sqlite": f"sqlite:///{tmp}/s.db", "journal": f"journal://{tmp}/s.log"}
        server = None
        bin_dir = find_bin_dir()
        if bin_dir is not None:
            server = PostgresServer(bin_dir).init()
            server.start()
            urls["postgresql"] = server.create_database()
        try:
            for name, url in urls.items():
                print(
                    f"  {name:10s} {overhead(url, trials):6.1f} ms/trial ({trials} trials, one process)",
                    flush=True,
                )
        finally:
            if server is not None:
                server.cleanup()
        if bin_dir is None:
            print("  postgresql  skipped: PostgreSQL binaries not installed")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cheap-trials", type=int, default=24)
    p.add_argument("--gan-trials", type=int, default=6)
    p.add_argument("--gan-steps", type=int, default=200)
    p.add_argument("--overhead-trials", type=int, default=100)
    p.add_argument("--skip-gan", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} at start")
    print("scaling (SQLite, gentune tune --workers N):")
    scaling("cheap", args.cheap_trials, 0)
    if not args.skip_gan:
        scaling("gan", args.gan_trials, args.gan_steps)
    if not args.skip_overhead:
        print("storage overhead per trial:")
        storage_overheads(args.overhead_trials)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
