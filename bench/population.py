"""Population training throughput: K stacked members against one model at a time.

    python bench/population.py [--family gan-mlp|dcgan] [--k 1 2 4 8 16 32] [--steps N]
        [--data-dir ../shared/data/mnist] [--device cpu|cuda|auto] [--report-k 8]
        [--repeats R] [--threads T] [--bf16] [--set width=256 optimizer=rmsprop ...]
        [--state runs/<study>/trials/<n>/state.pt] [--subnormals]

Three trainers on the same device, family, default config, data and batch size:
(a) the tutorial's DataLoader loop (bench/throughput.py's `tutorial_loop`, gan-mlp only);
(b) gentune's single-model trainer: the family's loop run by `fit` (what a trial runs);
(c) gentune.train.population.Population with K members (different lr each), model-steps/s =
    K x G steps / s.
A warm-up of each is not timed; then the runs are interleaved (a, b, c at each K, repeated) and
the median of the repeats counts, so a machine shared with other work slows all of them alike.
The last line is one JSON object: device, family, k, single_steps_per_s,
population_model_steps_per_s, speedup (population / single, at --report-k; on cuda the best K).

`--set` changes the family's default config (the structures a study tries differ in cost:
width 256, depth 3 and RMSprop train 10x slower than the defaults). `--state` starts every
member from a trained member state (a promotion study keeps one per complete trial), as a
promoted trial continues; `--subnormals` keeps subnormal floats, which gentune's trainers flush
to zero (gentune.device.flush_denormals): with a trained state, that is what the flush saves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from throughput import TutorialDataset, tutorial_loop  # noqa: E402

import gentune.device  # noqa: E402
import gentune.train.population  # noqa: E402
from gentune.data import load_dataset  # noqa: E402
from gentune.device import resolve_device  # noqa: E402
from gentune.families import get_family  # noqa: E402
from gentune.train.loop import fit  # noqa: E402
from gentune.train.population import Population  # noqa: E402

MNIST = ROOT / ".." / "shared" / "data" / "mnist"


def dataset(data_dir: str | None):
    """MNIST from `data_dir` (default ../shared/data/mnist), else the embedded digits."""
    folder = Path(data_dir) if data_dir else MNIST
    if (folder / "train-images-idx3-ubyte.gz").is_file():
        return load_dataset("mnist", data_dir=folder, seed=0)
    print(f"MNIST not found under {folder}; using digits")
    return load_dataset("digits", seed=0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def single(family, config, data, steps: int, device: torch.device) -> float:
    """G steps/s of one model through the family's loop and fit (one log at the end)."""
    loop = family.loop(config, data, steps=steps, seed=0, device=str(device))
    sync(device)
    t0 = time.perf_counter()
    fit(loop, log_every=steps)
    sync(device)
    return steps / (time.perf_counter() - t0)


def population(
    family, config, data, k: int, steps: int, device: torch.device, bf16: bool, state=None
) -> float:
    """Model-steps/s of a population of k members (lr spread over a decade), each fresh or
    continued from `state`."""
    pop = Population(family, data, capacity=k, device=str(device), log_every=steps)
    for i in range(k):
        pop.add(
            type(config).from_dict({**config.to_dict(), "lr": config.lr * 10 ** (i / max(1, k) - 0.5)}),
            seed=i,
            state=state,
        )
    pop.step(2)  # allocation and first kernels
    sync(device)
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        pop.step(steps)
    sync(device)
    return k * steps / (time.perf_counter() - t0)


def tutorial(config, data, steps: int) -> float:
    images = ((data.train.x[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    labels = torch.zeros(len(images), dtype=torch.long).numpy()
    loader = DataLoader(TutorialDataset(images, labels), batch_size=config.batch_size, shuffle=True)
    return steps / tutorial_loop(loader, config, data.shape, steps, fused=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="gan-mlp", choices=["gan-mlp", "dcgan"])
    p.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--steps", type=int, default=200, help="G steps per timed run")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--report-k", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--bf16", action="store_true", help="population steps under bf16 autocast")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", help="config changes")
    p.add_argument("--state", default=None, help="a member state.pt the members continue from")
    p.add_argument("--subnormals", action="store_true", help="keep subnormal floats (no flush)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.subnormals:  # the trainers' flush made a no-op, and undone
        gentune.device.flush_denormals = gentune.train.population.flush_denormals = lambda: None
        torch.set_flush_denormal(False)
    device = resolve_device(args.device)
    data = dataset(args.data_dir)
    family = get_family(args.family)
    state = torch.load(args.state, map_location="cpu", weights_only=True) if args.state else None
    fields = state["config"] if state else family.config_cls().to_dict()
    config = family.config_cls.from_dict({**fields, **dict(_field(f) for f in args.set)})
    print(
        f"{args.family} on {device} ({torch.get_num_threads()} threads), {data.name} {tuple(data.shape)}, "
        f"batch {config.batch_size}, {args.steps} G steps per run, median of {args.repeats}"
    )
    changed = {k: v for k, v in config.to_dict().items() if v != family.config_cls().to_dict().get(k)}
    if changed or state:
        print(f"config changes {changed}" + (f"; members continue {args.state}" if state else ""))

    runs = {"single (fit)": lambda: single(family, config, data, args.steps, device)}
    if args.family == "gan-mlp" and device.type == "cpu":
        runs["tutorial DataLoader loop"] = lambda: tutorial(config, data, args.steps)
    for k in args.k:
        runs[f"population K={k}"] = lambda k=k: population(
            family, config, data, k, args.steps, device, args.bf16, state
        )
    for run in runs.values():  # warm-up, not timed
        run()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            rates[name].append(run())
    rate = {name: statistics.median(v) for name, v in rates.items()}
    base = rate["single (fit)"]
    print(f"{'trainer':>26} {'model-steps/s':>14} {'x single':>9}")
    for name, r in rate.items():
        print(f"{name:>26} {r:14.1f} {r / base:9.2f}")
    pops = {k: rate[f"population K={k}"] for k in args.k}
    k = (
        max(pops, key=pops.__getitem__)
        if device.type == "cuda" or args.report_k not in pops
        else args.report_k
    )
    print(
        json.dumps(
            {
                "device": str(device),
                "family": args.family,
                "k": k,
                "single_steps_per_s": round(base, 1),
                "population_model_steps_per_s": round(pops[k], 1),
                "speedup": round(pops[k] / base, 3),
                "bf16": args.bf16,
                "threads": torch.get_num_threads(),
                "subnormals_flushed": not args.subnormals,
                "continued": bool(state),
            }
        )
    )


def _field(text: str) -> tuple[str, object]:
    """FIELD=VALUE with VALUE read as JSON where it parses (256, 1e-3, true), else a string."""
    name, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--set takes FIELD=VALUE, got {text!r}: e.g. --set width=256 optimizer=rmsprop")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


if __name__ == "__main__":
    main()
