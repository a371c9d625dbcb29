"""Measure the training signals the failure detectors read, to set and justify their defaults.

    python bench/detector_calibration.py record [--dataset digits] [--configs 16] [--steps 3000]
    python bench/detector_calibration.py analyze [--traces FILE]

`record` trains random configurations of the default GAN space (plus a few chosen on purpose:
lr 1e-1, the tutorial's defaults, one known-good configuration over three seeds) with no
detector and no pruner, and writes every log window's signals (g_loss, d_loss, d_acc,
grad_norm) and, every `--eval-every` steps, the sample metrics at N = `--eval-n` to a JSON file.
`analyze` reads it and prints, for each detector and a range of thresholds, how many trials it
would stop, how early, and how many of those ended well (false stops). docs/detectors.md quotes
its output.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gentune.data import load_dataset  # noqa: E402
from gentune.metrics import Evaluator  # noqa: E402
from gentune.models.gan_mlp import GANConfig  # noqa: E402
from gentune.search.defaults import gan_mlp_space  # noqa: E402
from gentune.train.gan import sample, train_gan  # noqa: E402
from gentune.trial.objective import EVAL_SEED  # noqa: E402

DEFAULT_TRACES = Path("/tmp/gentune-detector-traces.json")
KNOWN_GOOD = {
    "lr": 1.2e-4,
    "batch_size": 87,
    "optimizer": "adamw",
    "beta1": 0.145,
    "width": 64,
    "depth": 1,
    "weight_decay": 4.3e-7,
    "d_steps": 1,
}
CHOSEN = [
    ("lr=1e-1 adam", {"lr": 0.1}),
    ("lr=1e-1 adam beta1=0.5", {"lr": 0.1, "beta1": 0.5}),
    ("tutorial defaults", {}),
    ("sgd lr=1e-5", {"optimizer": "sgd", "lr": 1e-5}),
]


def configs(n: int, seed: int, known_seeds: int = 3) -> list[tuple[str, dict, int]]:
    """(label, params, training seed): random draws of the default space, then the chosen ones."""
    space = gan_mlp_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for i in range(n):
        trial = study.ask()
        out.append((f"random {i}", space.suggest(trial), 0))
        study.tell(trial, 0.0)
    out += [(label, params, 0) for label, params in CHOSEN]
    out += [(f"known good, seed {s}", KNOWN_GOOD, s) for s in range(known_seeds)]
    return out


def record(args) -> None:
    torch.set_num_threads(1)
    data = load_dataset(args.dataset, data_dir=args.data_dir, seed=0)
    ev = Evaluator(data, n=args.eval_n, seed=0).prepare()
    traces = []
    for label, params, seed in configs(args.configs, args.seed, args.known_seeds):
        config = GANConfig.from_dict(params)
        evals: list[dict] = []

        def callback(step, total, signals, generator, evals=evals):
            if step % args.eval_every == 0:
                evals.append(_evaluate(ev, generator, step, args.eval_n))

        t0 = time.perf_counter()
        result = train_gan(config, data, steps=args.steps, seed=seed, callback=callback)
        final = _evaluate(ev, result.generator, result.steps, ev.info["n"]) if not result.diverged else None
        traces.append(
            {
                "label": label,
                "params": params,
                "seed": seed,
                "steps": result.steps,
                "diverged": result.diverged,
                "seconds": time.perf_counter() - t0,
                "history": result.history,
                "evals": evals,
                "final": final,
            }
        )
        fid = final["fid"] if final else float("nan")
        print(
            f"{label:28s} steps {result.steps:5d}  final fid {fid:8.3f}  {time.perf_counter() - t0:5.1f}s",
            flush=True,
        )
    Path(args.traces).write_text(
        json.dumps(
            {"dataset": args.dataset, "floor": ev.floor, "eval_n": args.eval_n, "traces": traces}, indent=1
        )
    )
    print(f"wrote {args.traces}")


def _evaluate(ev: Evaluator, generator, step: int, n: int) -> dict:
    images = sample(generator, n, seed=EVAL_SEED)
    if not torch.isfinite(images).all():
        return {"step": step, "fid": float("inf")}
    return {"step": step, **ev.evaluate(images)}


# -- analysis -------------------------------------------------------------------------------------


def analyze(args) -> None:
    doc = json.loads(Path(args.traces).read_text())
    traces, floor = doc["traces"], doc["floor"]
    best = min(t["final"]["fid"] for t in traces if t["final"])
    print(
        f"{len(traces)} trials on {doc['dataset']}; floor fid {floor['fid']:.3f}, label entropy "
        f"{floor['label_entropy']:.3f}, recall {floor['recall']:.3f}; best final fid {best:.2f}; "
        f"'good' = final fid <= {GOOD_FACTOR} x best = {GOOD_FACTOR * best:.2f}\n"
    )
    for t in traces:
        t["good"] = bool(t["final"]) and t["final"]["fid"] <= GOOD_FACTOR * best
    _table_signals(traces)
    _grad_norms(traces)
    _overpowering(traces)
    _collapse(traces, floor)
    _stagnation(traces)
    _rank_correlation(traces)


GOOD_FACTOR = 3  # a trial ending within 3x the best final fid must never be stopped


def _verdict(traces, hits) -> str:
    """'stops k (good g), saves x% of their steps; label @step, ...'."""
    good = sum(t["good"] for t, _ in hits)
    saved = sum(t["steps"] - s for t, s in hits) / max(1, sum(t["steps"] for t in traces))
    return f"stops {len(hits):2d}, good {good}, saves {100 * saved:4.1f}% of all steps" + "".join(
        f"; {t['label']} @{s}" for t, s in hits
    )


def _table_signals(traces) -> None:
    print("per trial: final fid, final label entropy / classes, max grad norm, last-window d_loss/d_acc")
    for t in traces:
        f = t["final"] or {}
        h = t["history"]
        print(
            f"  {t['label']:28s} fid {f.get('fid', float('nan')):8.2f}  H {f.get('label_entropy') or 0:5.2f}"
            f"  cls {f.get('classes_covered') or 0:2d}  gmax {max(x['grad_norm'] for x in h):9.3g}"
            f"  d_loss {h[-1]['d_loss']:6.3f}  d_acc {h[-1]['d_acc']:5.3f}"
            f"  {'good' if t['good'] else ''}"
        )
    print()


def _grad_norms(traces) -> None:
    ok = [x["grad_norm"] for t in traces if t["good"] for x in t["history"]]
    print(
        f"divergence: grad norm over every log window of good trials: median {statistics.median(ok):.3g}, "
        f"max {max(ok):.3g}"
    )
    for limit in (30, 1e2, 1e3, 1e4):
        hits = [(t, _first(t, lambda x: x["grad_norm"] > limit)) for t in traces]  # noqa: B023
        print(f"  grad_norm > {limit:g}: " + _verdict(traces, [(t, s) for t, s in hits if s]))
    print()


def _first(t, pred) -> int | None:
    return next((x["step"] for x in t["history"] if pred(x)), None)


def _overpowering(traces) -> None:
    print("D overpowering: d_loss < L and d_acc > A in W consecutive log windows (50 steps each)")
    for max_loss, min_acc, window in [
        (0.05, 0.99, 10),
        (0.05, 0.99, 5),
        (0.1, 0.98, 10),
        (0.2, 0.95, 10),
        (0.3, 0.95, 10),
    ]:
        hits = []
        for t in traces:
            run = 0
            for x in t["history"]:
                run = run + 1 if x["d_loss"] < max_loss and x["d_acc"] > min_acc else 0
                if run >= window:
                    hits.append((t, x["step"]))
                    break
        print(f"  L={max_loss} A={min_acc} W={window:2d}: " + _verdict(traces, hits))
    print()


def _evals(t, every: int) -> list[dict]:
    """The evaluations a schedule of one every `every` steps would have made (not the last step)."""
    return [e for e in t["evals"] if e["step"] % every == 0 and e["step"] < t["steps"]]


def _default_schedule(t, budget: int) -> list[dict]:
    """The recorded evaluations nearest to gentune's default schedule: k x budget / 6, k = 1..5."""
    out = []
    for k in range(1, 6):
        want = k * budget / 6
        near = min(t["evals"], key=lambda e: abs(e["step"] - want), default=None)
        if near is not None and abs(near["step"] - want) <= 250 and near["step"] <= t["steps"]:
            out.append(near)
    return out


def _collapse(traces, floor) -> None:
    budget = max(t["steps"] for t in traces)
    print(
        "mode collapse: label entropy < r x floor's in E consecutive evaluations, none before "
        f"F x budget; evaluations at the default schedule (k x {budget}/6); 'behind': only while "
        "the trial's best fid is worse than the best other trial's final fid"
    )
    for ratio, evals, after, behind in [
        (0.2, 2, 0.0, False),
        (0.2, 2, 0.25, False),
        (0.2, 2, 0.34, False),
        (0.1, 2, 0.25, False),
        (0.3, 2, 0.25, False),
        (0.2, 2, 0.0, True),
        (0.2, 2, 0.25, True),
    ]:
        hits = []
        for t in traces:
            others = [o["final"]["fid"] for o in traces if o is not t and o["final"]]
            run, best = 0, math.inf
            for e in _default_schedule(t, budget):
                best = min(best, e["fid"])
                if e["step"] < after * budget or e.get("label_entropy") is None:
                    continue
                run = run + 1 if e["label_entropy"] < ratio * floor["label_entropy"] else 0
                if run >= evals and (not behind or (others and best > min(others))):
                    hits.append((t, e["step"]))
                    break
        print(f"  r={ratio:<4} E={evals} F={after:<4} behind={behind!s:5}: " + _verdict(traces, hits))
    print()


def _stagnation(traces) -> None:
    budget = max(t["steps"] for t in traces)
    print(
        "stagnation: no new best fid (by a relative margin m) in P evaluations in a row, at the "
        f"default schedule (k x {budget}/6); 'behind': only while the trial's best is worse than "
        "the best other trial's final fid"
    )
    for patience, margin, behind in [
        (2, 0.0, False),
        (3, 0.0, False),
        (2, 0.01, True),
        (3, 0.01, True),
        (4, 0.01, True),
    ]:
        hits = []
        for t in traces:
            others = [o["final"]["fid"] for o in traces if o is not t and o["final"]]
            best, since = math.inf, 0
            for e in _default_schedule(t, budget):
                if e["fid"] < best * (1 - margin):
                    best, since = e["fid"], 0
                else:
                    since += 1
                if since >= patience and (not behind or (others and best > min(others))):
                    hits.append((t, e["step"]))
                    break
        print(f"  P={patience} m={margin:<4} behind={behind!s:5}: " + _verdict(traces, hits))
    print()


def _rank_correlation(traces) -> None:
    """How well the fid at an early step predicts the final fid: the case for pruning."""
    from scipy.stats import spearmanr

    done = [t for t in traces if t["final"] and len(t["evals"]) == len(traces[0]["evals"])]
    print(
        f"Spearman correlation of fid at step s with the final fid ({len(done)} trials that ran to the end)"
    )
    for i, e in enumerate(done[0]["evals"]):
        early = [min(t["evals"][i]["fid"], 1e6) for t in done]
        rho = spearmanr(early, [t["final"]["fid"] for t in done]).statistic
        print(f"  step {e['step']:5d}: rho {rho:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--dataset", default="digits")
    r.add_argument("--data-dir", default=None, help="MNIST folder (default: the download cache)")
    r.add_argument("--configs", type=int, default=16)
    r.add_argument("--steps", type=int, default=3000)
    r.add_argument("--eval-every", type=int, default=250)
    r.add_argument("--eval-n", type=int, default=1000)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--known-seeds", type=int, default=3)
    r.add_argument("--traces", default=str(DEFAULT_TRACES))
    a = sub.add_parser("analyze")
    a.add_argument("--traces", default=str(DEFAULT_TRACES))
    args = p.parse_args()
    record(args) if args.cmd == "record" else analyze(args)


if __name__ == "__main__":
    main()
