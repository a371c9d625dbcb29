"""Training throughput: the tutorial's DataLoader loop against gentune's `train_gan`.

    python bench/throughput.py [--dataset mnist|digits] [--steps N] [--threads T] [--repeats R]

(a) The tutorial's loop: a Dataset whose __getitem__ turns one uint8 image into a float tensor in
    [-1, 1] the way torchvision's MNIST + ToTensor + Normalize([0.5], [0.5]) do (PIL image, then
    tensor, then /255, then (x - 0.5) / 0.5), batched by DataLoader(batch_size=64, shuffle=True).
(b) gentune's train_gan, which indexes one tensor already in [-1, 1].
Both train the same default GANConfig for the same number of G steps with the same thread count;
a warm-up run of each is excluded, then the runs alternate and the median of the repeats counts.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gentune.data.base import ImageDataset, Split, to_unit_range  # noqa: E402
from gentune.models.gan_mlp import GANConfig, build  # noqa: E402
from gentune.train.gan import train_gan  # noqa: E402
from gentune.train.optim import optimizer as make_optimizer  # noqa: E402

MNIST = ROOT / ".." / "shared" / "data" / "mnist"


def load_uint8(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W), labels) of MNIST's training set, or of sklearn's digits."""
    if name == "mnist":
        images, labels = MNIST / "train-images-idx3-ubyte.gz", MNIST / "train-labels-idx1-ubyte.gz"
        if images.is_file() and labels.is_file():
            with gzip.open(images) as f:
                x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28).copy()
            with gzip.open(labels) as f:
                y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
            return x, y
        print(f"MNIST not found under {MNIST.resolve()}; falling back to digits")
    from sklearn.datasets import load_digits

    d = load_digits()
    # Scale 0..16 to 0..255 so both datasets go through the same uint8 pipeline.
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)


class TutorialDataset(Dataset):
    """What torchvision.datasets.MNIST + ToTensor + Normalize([0.5], [0.5]) do per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(labels)
        self.mean, self.std = torch.tensor([0.5]), torch.tensor([0.5])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        pic = Image.fromarray(self.images[i].numpy(), mode="L")
        x = torch.from_numpy(np.array(pic, np.uint8, copy=True)).view(1, *pic.size[::-1])
        x = x.to(torch.float32).div(255)
        x = x.sub_(self.mean[:, None, None]).div_(self.std[:, None, None])
        return x, int(self.labels[i])


def tutorial_loop(
    loader: DataLoader, config: GANConfig, image_shape, steps: int, fused: bool = False
) -> float:
    """The usual loop around the tutorial's model; returns seconds for `steps` G steps.

    The tutorial would write plain torch.optim.Adam; `fused` swaps in gentune's optimizers so
    the data pipeline's share of the gap can be told apart from the optimizer's.
    """
    t0 = time.perf_counter()
    torch.manual_seed(0)
    G, D = build(config, image_shape)
    if fused:
        opt_g = make_optimizer(config.optimizer, G.parameters(), config.lr, config)
        opt_d = make_optimizer(config.optimizer, D.parameters(), config.d_lr, config)
    else:
        betas = (config.beta1, config.beta2)
        opt_g = torch.optim.Adam(G.parameters(), lr=config.lr, betas=betas)
        opt_d = torch.optim.Adam(D.parameters(), lr=config.d_lr, betas=betas)
    bce = F.binary_cross_entropy_with_logits if D.outputs_logits else F.binary_cross_entropy
    done = 0
    while done < steps:
        for real, _ in loader:
            n = real.size(0)
            real = real.view(n, -1)
            ones, zeros = torch.ones(n, 1), torch.zeros(n, 1)
            fake = G(torch.randn(n, config.latent_dim))
            d_loss = bce(D(real), ones) + bce(D(fake.detach()), zeros)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = bce(D(fake), ones)
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    images, labels = load_uint8(args.dataset)
    x = to_unit_range(images, 255)
    empty = Split(x[:0])
    data = ImageDataset(args.dataset, Split(x, torch.from_numpy(labels)), empty, empty, 10, "bench")
    config = GANConfig()
    loader = DataLoader(TutorialDataset(images, labels), batch_size=config.batch_size, shuffle=True)
    print(
        f"{args.dataset}: {len(x)} images of {tuple(data.shape)}, batch {config.batch_size}, "
        f"{args.steps} G steps, {torch.get_num_threads()} thread(s), median of {args.repeats}"
    )

    def run_tutorial():
        return tutorial_loop(loader, config, data.shape, args.steps)

    def run_tutorial_fused():
        return tutorial_loop(loader, config, data.shape, args.steps, fused=True)

    def run_gentune():
        t0 = time.perf_counter()
        train_gan(config, data, steps=args.steps, log_every=args.steps)
        return time.perf_counter() - t0

    tutorial_loop(loader, config, data.shape, min(args.steps, 50))  # warm-up, not timed
    train_gan(config, data, steps=min(args.steps, 50))
    runs = {
        "tutorial": run_tutorial,
        "tutorial loop, fused optimizer": run_tutorial_fused,
        "gentune": run_gentune,
    }
    times = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, run in runs.items():
            times[k].append(run())
    rate = {k: args.steps / statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:>30}: {rate[k]:8.1f} steps/s  (runs: {', '.join(f'{t:.2f}s' for t in v)})")
    print(f"{'ratio':>30}: {rate['gentune'] / rate['tutorial']:8.2f}x  (gentune / tutorial)")


if __name__ == "__main__":
    main()
