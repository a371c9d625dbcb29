"""Does early stopping pay? Plain TPE against gentune's defaults at an equal wall-clock budget.

    python bench/early_stopping.py --quick                 # digits, 3000 steps, 150 s per run
    python bench/early_stopping.py [--budget 1800] [--seeds 0 1 2] [--data-dir DIR]   # MNIST

Setups (each run is a fresh study with the same sampler seed, so TPE's first random draws agree):
- plain:   TPE, no pruner, no detector, no evaluation during training (nothing is spent on them);
- gentune: TPE with the defaults of `gentune tune`: evaluations during training, the strategy's
           default pruner and every failure detector.
Each setup runs once per seed for `--budget` seconds of trial time (a trial still running at the
deadline finishes, but only trials completed within the budget count). The runs alternate
(plain, gentune, plain, ...), so load from other processes falls on both alike; with
`--concurrent` the setups of a seed run at the same time, one process and one thread each (on a
machine with a core per setup this halves the wall time, and both see the same load).

For each seed the target is the best FID plain TPE reached by the end of its budget; the script
prints the time each setup took to reach that target (time-to-target), their ratio, and each
setup's best FID. It also counts training in G steps, which other load on the machine does not
distort. Results go to a JSON file (--out) as well.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gentune.api import Budget, EarlyStop, RunOptions, SearchOptions, tune  # noqa: E402

MNIST = ROOT / ".." / "shared" / "data" / "mnist"
SETUPS = {
    "plain": {"pruner": "none", "detectors": "off", "evals": 0},
    "gentune": {},  # the defaults
    # Variants for choosing the defaults (--setups plain median hyperband ...):
    "median": {"pruner": "median"},
    "hyperband": {"pruner": "hyperband"},
    "detectors-only": {"pruner": "none"},
    "pruner-only": {"detectors": "off"},
}


def run(setup: str, seed: int, args, root: Path) -> dict:
    """One study of `setup` for args.budget seconds; its trials' completion times and values."""
    t0 = time.monotonic()
    result = tune(
        dataset=args.dataset,
        data_dir=args.data_dir,
        budget=Budget(steps=args.steps),
        # The budget is time: as many trials as fit in it.
        search=SearchOptions(strategy="tpe", trials=10**6, timeout=args.budget, seed=seed),
        early_stop=EarlyStop(**SETUPS[setup]),
        run=RunOptions(study=f"{setup}-{seed}", runs_dir=root, progress=False, report=False, threads=1),
    )
    trials = result.study.get_trials(deepcopy=False)
    start = min(t.datetime_start for t in trials if t.datetime_start)
    rows = []
    for t in trials:
        if t.datetime_complete is None:
            continue
        done = (t.datetime_complete - start).total_seconds()
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "seconds": done,
                "value": t.value if t.state == TrialState.COMPLETE else None,
                "steps": t.user_attrs.get("steps", 0),
                "reason": t.user_attrs.get("prune_reason"),
            }
        )
    rows.sort(key=lambda r: r["seconds"])
    return {"setup": setup, "seed": seed, "wall": time.monotonic() - t0, "trials": rows}


def within(run_: dict, budget: float) -> list[dict]:
    return [r for r in run_["trials"] if r["seconds"] <= budget]


def best(run_: dict, budget: float) -> float:
    values = [r["value"] for r in within(run_, budget) if r["value"] is not None]
    return min(values) if values else math.inf


def time_to(run_: dict, target: float, budget: float) -> tuple[float, int]:
    """(seconds, cumulative G steps) when the run's best first reached `target`; inf if never."""
    steps = 0
    for r in within(run_, budget):
        steps += r["steps"]
        if r["value"] is not None and r["value"] <= target:
            return r["seconds"], steps
    return math.inf, -1


def report(runs: list[dict], args) -> dict:
    seeds = sorted({r["seed"] for r in runs})
    setups = [s for s in args.setups]
    by = {(r["setup"], r["seed"]): r for r in runs}
    rows, ratios, step_ratios = [], {s: [] for s in setups}, {s: [] for s in setups}
    for seed in seeds:
        target = best(by[("plain", seed)], args.budget)
        for s in setups:
            r = by[(s, seed)]
            secs, steps = time_to(r, target, args.budget)
            base_secs, base_steps = time_to(by[("plain", seed)], target, args.budget)
            counts = {}
            for t in within(r, args.budget):
                key = t["reason"] or t["state"].lower()
                counts[key] = counts.get(key, 0) + 1
            rows.append(
                {
                    "seed": seed,
                    "setup": s,
                    "target": target,
                    "time_to_target": secs,
                    "steps_to_target": steps,
                    "best": best(r, args.budget),
                    "trials": counts,
                }
            )
            ratios[s].append(secs / base_secs if base_secs else math.nan)
            step_ratios[s].append(steps / base_steps if steps > 0 and base_steps > 0 else math.inf)
    print(
        f"\n{args.dataset}, {args.steps or 'default'} steps per trial, budget {args.budget:g} s "
        f"of trial time per run, seeds {seeds}"
    )
    print(
        f"{'seed':>4} {'setup':>15} {'target':>8} {'time-to-target':>15} {'G steps':>9} "
        f"{'best fid':>9}  trials"
    )
    for row in rows:
        t = row["time_to_target"]
        print(
            f"{row['seed']:>4} {row['setup']:>15} {row['target']:8.3f} "
            f"{(f'{t:.0f} s' if math.isfinite(t) else 'not reached'):>15} "
            f"{row['steps_to_target'] if row['steps_to_target'] >= 0 else '-':>9} "
            f"{row['best']:9.3f}  {row['trials']}"
        )
    summary = {}
    for s in setups:
        finite = [x for x in ratios[s] if math.isfinite(x)]
        summary[s] = {
            "time_ratio_median": statistics.median(ratios[s]),
            "time_ratios": ratios[s],
            "reached": f"{len(finite)}/{len(ratios[s])}",
            "step_ratio_median": statistics.median(step_ratios[s]),
            "best_mean": statistics.fmean(best(by[(s, seed)], args.budget) for seed in seeds),
        }
        print(
            f"{s:>15}: time-to-target / plain's = median {summary[s]['time_ratio_median']:.2f} "
            f"(per seed {', '.join(f'{x:.2f}' for x in ratios[s])}; target reached in "
            f"{summary[s]['reached']} runs); in G steps: median {summary[s]['step_ratio_median']:.2f}; "
            f"mean best fid {summary[s]['best_mean']:.3f}"
        )
    return {"rows": rows, "summary": summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="digits, 150 s per run")
    p.add_argument("--dataset", default=None, help="mnist (default) or digits")
    p.add_argument("--data-dir", default=None, help="MNIST folder (default: ../shared/data/mnist)")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of trial time per run (default: 1800 on mnist, 150 with --quick)",
    )
    p.add_argument("--steps", type=int, default=None, help="G steps per trial (default: gentune's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--setups", nargs="+", default=["plain", "gentune"], choices=list(SETUPS))
    p.add_argument(
        "--concurrent",
        action="store_true",
        help="run the setups of each seed at the same time, a process each",
    )
    p.add_argument("--out", default="early_stopping.json")
    args = p.parse_args()
    args.dataset = args.dataset or ("digits" if args.quick else "mnist")
    args.budget = args.budget or (150.0 if args.quick else 1800.0)
    if args.dataset == "mnist" and args.data_dir is None and MNIST.is_dir():
        args.data_dir = str(MNIST)
    if "plain" not in args.setups:
        args.setups = ["plain", *args.setups]
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = []
    with tempfile.TemporaryDirectory(prefix="gentune-bench-") as tmp:
        pool = (
            concurrent.futures.ProcessPoolExecutor(
                len(args.setups), mp_context=multiprocessing.get_context("spawn")
            )
            if args.concurrent
            else None
        )
        for seed in args.seeds:
            if pool is not None:
                done_runs = list(
                    pool.map(
                        run,
                        args.setups,
                        [seed] * len(args.setups),
                        [args] * len(args.setups),
                        [Path(tmp)] * len(args.setups),
                    )
                )
            else:
                done_runs = (run(setup, seed, args, Path(tmp)) for setup in args.setups)
            for r in done_runs:
                runs.append(r)
                print(
                    f"seed {seed} {r['setup']:>15}: {len(within(r, args.budget))} trials in the "
                    f"budget, best {best(r, args.budget):.3f}",
                    flush=True,
                )
        if pool is not None:
            pool.shutdown()
    out = {"args": vars(args), "runs": runs, **report(runs, args)}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
