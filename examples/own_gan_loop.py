"""Your own GAN training loop, tuned by gentune and scored as its built-in trials are.

    python examples/own_gan_loop.py            # 20 trials; then: gentune report own-gan

The loop is plain PyTorch: no gentune family. `gentune.Recorder` adds what a built-in trial
records (FID with its floor, pruning, failure detectors, the fixed-seed sample grids), and
`gentune.run_objective` adds the storage, resume, progress and the report.
"""

import torch
from torch import nn

import gentune
from gentune import RunOptions, SearchOptions
from gentune.data import load_dataset

STEPS = 2000  # generator steps per trial
EVAL_EVERY = 500  # steps between the scores reported to the pruner
LATENT = 32
RUNS = "runs"  # study outputs: runs/own-gan/study.db, its report, and the grids' artifact store
# The train split of gentune's 8x8 digits in [-1, 1]: the validation split stays unseen for FID.
REAL = load_dataset("digits").train.x.flatten(1)


def mlp(inputs: int, width: int, outputs: int, last: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, width), nn.LeakyReLU(0.2), nn.Linear(width, outputs), last)


def objective(trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 3e-3, log=True)
    width = trial.suggest_categorical("width", [64, 128, 256])
    batch = trial.suggest_int("batch_size", 32, 128, step=32)
    G, D = mlp(LATENT, width, 64, nn.Tanh()), mlp(64, width, 1, nn.Identity())
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)

    def sample(n: int, seed: int) -> torch.Tensor:
        """n images (n, 1, 8, 8) in [0, 1] from latent noise seeded by `seed`."""
        z = torch.randn(n, LATENT, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return (G(z).view(n, 1, 8, 8) + 1) / 2

    # The grids also go to runs/own-gan/artifacts/, where optuna-dashboard finds them.
    rec = gentune.Recorder(trial, dataset="digits", steps=STEPS, artifacts=f"{RUNS}/{trial.study.study_name}")
    for step in range(1, STEPS + 1):
        real = REAL[torch.randint(len(REAL), (batch,))]
        fake = G(torch.randn(batch, LATENT))
        d_loss = bce(D(real), ones) + bce(D(fake.detach()), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce(D(fake), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        if step % EVAL_EVERY == 0 and step < STEPS:
            rec.report(step, sample, losses={"g_loss": g_loss.item(), "d_loss": d_loss.item()})
    return rec.finish(sample)  # FID of 1000 samples; the floor and the grid go into the study


if __name__ == "__main__":
    result = gentune.run_objective(
        objective, study="own-gan", search=SearchOptions(trials=20), run=RunOptions(runs_dir=RUNS)
    )
    print(result.best["params"], result.best["metrics"]["fid"], "floor", result.best["floor"]["fid"])
