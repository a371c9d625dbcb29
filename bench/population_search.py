"""Does the population engine pay? Plain Optuna TPE against --population with promotion, at an
equal wall-clock budget, side by side.

    python bench/population_search.py --quick               # digits, 3000 steps, 150 s per run
    python bench/population_search.py [--budget 1800] [--seeds 0 1 2] [--data-dir DIR]   # MNIST

Setups (each a fresh study with the same sampler seed):
- plain:      TPE one trial at a time: no pruner, no detector, no evaluation during training
              (bench/early_stopping.py's baseline);
- population: `gentune tune --population K` (default 4; 8 with CUDA): K trials train at once, their slots
              refilled as they leave, the top third of each rung promoted to train 3x as long
              from where it stopped, with gentune's default evaluations, pruner and detectors.
Both run at the same time by default (one process and one thread each: --workers 1), so both
see the same load; `--sequential` alternates them instead. For each seed the target is the best FID plain TPE
reached by the end of its budget; the script prints each setup's time to reach it, their ratio
(target: population / plain <= 1/3) and each setup's best FID. The last line is one JSON object.
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
SETUPS = ("plain", "population")


def run(setup: str, seed: int, args, root: Path) -> dict:
    """One study of `setup` for args.budget seconds: its finished trials, in completion order."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.monotonic()
    early = EarlyStop(pruner="none", detectors="off", evals=0) if setup == "plain" else EarlyStop()
    population = {"population": args.population, "promotion": True} if setup == "population" else {}
    result = tune(
        dataset=args.dataset,
        data_dir=args.data_dir,
        budget=Budget(steps=args.steps),
        search=SearchOptions(strategy="tpe", trials=10**6, timeout=args.budget, seed=seed, **population),
        early_stop=early,
        run=RunOptions(
            study=f"{setup}-{seed}",
            runs_dir=root,
            progress=False,
            report=False,
            workers=1,
            threads=1,
            noise_seeds=0,
        ),
    )
    trials = result.study.get_trials(deepcopy=False)
    start = min(t.datetime_start for t in trials if t.datetime_start)
    rows = [
        {
            "number": t.number,
            "seconds": (t.datetime_complete - start).total_seconds(),
            "value": t.value if t.state == TrialState.COMPLETE else None,
            "steps": t.user_attrs.get("steps", 0),
            "rung": t.user_attrs.get("rung", 0),
            "state": t.state.name.lower(),
        }
        for t in trials
        if t.datetime_complete is not None
    ]
    rows.sort(key=lambda r: r["seconds"])
    return {"setup": setup, "seed": seed, "wall": time.monotonic() - t0, "trials": rows}


def best(run_: dict, budget: float) -> float:
    values = [r["value"] for r in run_["trials"] if r["seconds"] <= budget and r["value"] is not None]
    return min(values) if values else math.inf


def time_to(run_: dict, target: float, budget: float) -> float:
    """Seconds until the run's best first reached `target`; inf if it never did in the budget."""
    for r in run_["trials"]:
        if r["seconds"] <= budget and r["value"] is not None and r["value"] <= target:
            return r["seconds"]
    return math.inf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="digits, 150 s per run")
    p.add_argument("--dataset", default=None, help="mnist (default) or digits")
    p.add_argument("--data-dir", default=None, help="MNIST folder (default: ../shared/data/mnist)")
    p.add_argument("--budget", type=float, default=None, help="seconds per run (1800; --quick: 150)")
    p.add_argument("--steps", type=int, default=None, help="G steps per trial (default: gentune's)")
    p.add_argument(
        "--population",
        type=int,
        default=None,
        help="K of the population setup (default: 4 on a CPU, measured best of 1 and 4 on "
        "digits; 8 with CUDA)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sequential", action="store_true", help="alternate the setups instead")
    p.add_argument("--out", default="population_search.json")
    args = p.parse_args()
    args.dataset = args.dataset or ("digits" if args.quick else "mnist")
    args.budget = args.budget or (150.0 if args.quick else 1800.0)
    args.population = args.population or (8 if torch.cuda.is_available() else 4)
    if args.quick and args.seeds == [0, 1, 2]:
        args.seeds = [0]
    if args.dataset == "mnist" and args.data_dir is None and MNIST.is_dir():
        args.data_dir = str(MNIST)
    runs: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="gentune-bench-") as tmp:
        root = Path(tmp)
        for seed in args.seeds:
            if args.sequential:
                done = [run(s, seed, args, root) for s in SETUPS]
            else:
                ctx = multiprocessing.get_context("spawn")
                with concurrent.futures.ProcessPoolExecutor(len(SETUPS), mp_context=ctx) as pool:
                    done = list(pool.map(run, SETUPS, [seed] * 2, [args] * 2, [root] * 2))
            for r in done:
                runs[(r["setup"], seed)] = r
                states: dict[str, int] = {}
                for t in r["trials"]:
                    states[t["state"]] = states.get(t["state"], 0) + 1
                b = best(r, args.budget)
                print(f"seed {seed} {r['setup']:>10}: trials {states}, best {b:.3f}", flush=True)
    ratios, rows = [], []
    print(f"\n{args.dataset}, budget {args.budget:g} s per run, K = {args.population}, seeds {args.seeds}")
    head = ("seed", "target", "plain", "population", "ratio", "best plain", "best pop")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (4, 8, 10, 11, 6, 11, 9))))
    for seed in args.seeds:
        plain, pop = runs[("plain", seed)], runs[("population", seed)]
        target = best(plain, args.budget)
        t_plain, t_pop = time_to(plain, target, args.budget), time_to(pop, target, args.budget)
        ratio = t_pop / t_plain if t_plain else math.nan
        ratios.append(ratio)
        rows.append(
            {
                "seed": seed,
                "target": target,
                "time_plain": t_plain,
                "time_population": t_pop,
                "ratio": ratio,
                "best_plain": best(plain, args.budget),
                "best_population": best(pop, args.budget),
                "trials_plain": len(plain["trials"]),
                "trials_population": len(pop["trials"]),
                "promoted": sum(1 for r in pop["trials"] if r["rung"]),
            }
        )
        print(
            f"{seed:>4} {target:8.3f} {t_plain:9.0f}s {t_pop:10.0f}s {ratio:6.2f} "
            f"{rows[-1]['best_plain']:11.3f} {rows[-1]['best_population']:9.3f}"
        )
    summary = {
        "dataset": args.dataset,
        "budget_s": args.budget,
        "k": args.population,
        "seeds": args.seeds,
        "time_to_target_ratio": statistics.median(ratios),
        "ratios": ratios,
        "best_plain": statistics.fmean(r["best_plain"] for r in rows),
        "best_population": statistics.fmean(r["best_population"] for r in rows),
        "concurrent": not args.sequential,
    }
    Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=2, default=str))
    print(
        f"time-to-target population / plain: median {summary['time_to_target_ratio']:.2f} (target <= 0.33); "
        f"best fid plain {summary['best_plain']:.3f}, population {summary['best_population']:.3f}"
    )
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
