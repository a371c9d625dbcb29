"""Measurements behind docs/families.md: one training run per question, printed as JSON lines.

    python bench/families.py gans  --seconds 60            # DCGAN vs MLP GAN, FID at equal time (digits)
    python bench/families.py vae   --data-dir ../shared/data/mnist --steps 6000   # MNIST ELBO + IS-NLL
    python bench/families.py text  --data-file ../shared/data/text/input.txt --seconds 300

Run with OMP_NUM_THREADS=1 (or more threads on a free machine) and say which machine gave the
numbers: they are wall-clock measurements.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _emit(**record) -> None:
    print(json.dumps(record), flush=True)


def gans(args) -> None:
    """The same wall-clock budget for the MLP GAN and the DCGAN; FID of 1000 samples on digits."""
    from gentune.data import load_dataset
    from gentune.families import get_family
    from gentune.metrics import Evaluator

    data = load_dataset("digits")
    ev = Evaluator(data, device=args.device).prepare()
    runs = [("gan-mlp", {}), ("gan-mlp", {"beta1": 0.5}), ("dcgan", {}), ("dcgan", {"spectral_norm": True})]
    for name, overrides in runs:
        family = get_family(name)
        config = family.config_cls.from_dict(overrides)
        result = family.train(
            config, data, steps=10**6, seed=args.seed, device=args.device, max_seconds=args.seconds
        )
        metrics = ev.evaluate(family.sample(result.model, ev.info["n"], seed=12345, device=args.device))
        _emit(
            family=name,
            config=overrides,
            seconds=round(result.seconds, 1),
            steps=result.steps,
            fid=metrics["fid"],
            kid=metrics["kid"],
            recall=metrics["recall"],
            classes=metrics["classes_covered"],
            floor_fid=ev.floor["fid"],
        )


def vae(args) -> None:
    """An MLP VAE (Bernoulli decoder) on MNIST: validation ELBO and importance-sampled NLL."""
    from gentune.data import load_dataset
    from gentune.families import get_family

    data = load_dataset("mnist", data_dir=args.data_dir)
    family = get_family("vae")
    config = family.config_cls.from_dict(
        {"width": 512, "depth": 2, "latent_dim": 32, "batch_size": 128, "nll_samples": args.k}
    )
    result = family.train(config, data, steps=args.steps, seed=args.seed, device=args.device)
    t0 = time.perf_counter()
    metrics = family.evaluate(result.model, data, device=args.device)
    _emit(
        family="vae",
        steps=result.steps,
        train_seconds=round(result.seconds, 1),
        eval_seconds=round(time.perf_counter() - t0, 1),
        **metrics,
    )


def text(args) -> None:
    """nanoGPT's CPU character-level baseline (4 layers, 4 heads, 128-d, context 64, batch 12,
    lr 1e-3 with warm-up and cosine decay over 2000 steps) for at most `--seconds`."""
    from gentune.data import load_dataset
    from gentune.families import get_family

    data = load_dataset("text", data_dir=args.data_file)
    family = get_family("transformer", "text")
    config = family.config_cls.from_dict({"batch_size": 12, "context": 64, "dropout": 0.0})

    def log(step, total, signals):
        if step % 100 == 0:
            _emit(step=step, train_loss=signals.get("train_loss"), val_loss=signals.get("val_loss"))

    result = family.train(
        config,
        data,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        callback=log,
        max_seconds=args.seconds,
        log_every=100,
    )
    metrics = family.evaluate(result.model, data, device=args.device)
    _emit(
        family="transformer",
        steps=result.steps,
        seconds=round(result.seconds, 1),
        stop=result.stop_reason,
        **metrics,
        sample=family.sample(result.model, 1, seed=0, device=args.device)[0][:200],
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["gans", "vae", "text"])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--k", type=int, default=100, help="importance samples for the VAE's NLL")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--data-file", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    {"gans": gans, "vae": vae, "text": text}[args.what](args)


if __name__ == "__main__":
    main()
