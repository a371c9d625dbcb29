"""Optimizers and learning-rate schedules, shared by every family's trainer."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from gentune.errors import GentuneError


def optimizer(name: str, params, lr: float, config) -> torch.optim.Optimizer:
    """The optimizer `name` with the config's betas / momentum and weight decay."""
    # fused=True runs the update as one kernel: 2-4x faster on CPU for these small networks.
    if name == "adam":
        return torch.optim.Adam(
            params, lr=lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay, fused=True
        )
    if name == "adamw":
        return torch.optim.AdamW(
            params, lr=lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay, fused=True
        )
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=True
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise GentuneError(f"unknown optimizer {name!r}", fix="use adam, adamw, sgd or rmsprop")


def make_optimizer(config, params) -> torch.optim.Optimizer:
    """The config's optimizer with its lr, betas / momentum and weight decay."""
    return optimizer(config.optimizer, params, config.lr, config)


def lr_lambda(warmup: int, total: int, schedule: str, min_ratio: float = 0.1) -> Callable[[int], float]:
    """Linear warm-up over `warmup` steps, then constant or cosine decay to `min_ratio` x lr."""

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (i - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


# Hyperparameters a population's members may hold apart, as per-member tensors (Stacked).
MEMBER_HYPERPARAMETERS = ("lr", "beta1", "beta2", "momentum", "weight_decay")
EPS = 1e-8  # the eps of torch's Adam, AdamW and RMSprop, whose defaults `optimizer` keeps
RMS_ALPHA = 0.99  # RMSprop's default alpha, which `optimizer` keeps
FUSED = ("adam", "adamw", "sgd")  # torch has a fused CPU kernel for these (torch._fused_*_)
SLOTS = {
    "adam": ("exp_avg", "exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq"),
    "sgd": ("momentum_buffer",),
    "rmsprop": ("square_avg", "momentum_buffer"),
}


def _per_member(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class Stacked:
    """The optimizer `name` over parameters stacked along a leading member axis.

    Each member has its own lr, betas, momentum and weight decay (`hyper[h]`, shape (K,), for h
    in MEMBER_HYPERPARAMETERS) and its own step count `t`, so a member's update is the one
    torch's optimizer makes for that member alone; no member's values enter another's. The
    formulas are torch's (Adam, AdamW, SGD without dampening, RMSprop with its default eps and
    alpha), so one member follows `optimizer(name, ...)` to float rounding. `state[slot][param]`
    and `t` are plain stacked tensors that the owner may slice and concatenate.

    >>> p = {"w": torch.zeros(2, 3)}
    >>> hyper = {h: torch.zeros(2) for h in MEMBER_HYPERPARAMETERS}
    >>> hyper["lr"] = torch.tensor([0.5, 1.0])
    >>> opt = Stacked("sgd", hyper, p)
    >>> opt.step(p, {"w": torch.ones(2, 3)}); p["w"][:, 0].tolist()
    [-0.5, -1.0]
    """

    def __init__(
        self,
        name: str,
        hyper: dict[str, torch.Tensor],
        params: dict[str, torch.Tensor],
        state: dict[str, dict[str, torch.Tensor]] | None = None,
        t: torch.Tensor | None = None,
        fused: bool | None = None,
    ):
        if name not in SLOTS:
            raise GentuneError(f"unknown optimizer {name!r}", fix="use adam, adamw, sgd or rmsprop")
        self.name, self.hyper = name, hyper
        first = next(iter(params.values()))
        # None: torch's fused kernel per member on the CPU (Adam, AdamW, SGD), the stacked
        # formula on a GPU, where K launches per tensor would cost more than its few passes.
        self.fused = name in FUSED and (first.device.type == "cpu" if fused is None else fused)
        # Step counts in float64: beta ** t must round as torch's Python-float bias correction.
        self.t = torch.zeros(first.shape[0], dtype=torch.float64, device=first.device) if t is None else t
        self.state = state or {s: {n: torch.zeros_like(p) for n, p in params.items()} for s in SLOTS[name]}

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
        """One update of every member's `params` (in place) from its `grads`."""
        self.t += 1
        if self.fused:
            self._fused(params, grads)
            return
        update = getattr(self, f"_{self.name}")
        for n, p in params.items():
            update(n, p, grads[n])

    def _fused(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
        """Adam / AdamW / SGD through torch's fused kernel, one call per member on its rows: on
        the CPU the update is memory-bound, and the stacked formula's passes over K members'
        tensors cost more than the matmuls (Adam's: 60% of a step at K = 8); the kernel makes
        one pass and gives exactly the numbers of `optimizer(...)`, which uses it too."""
        if self.name == "sgd":
            self._fused_sgd(params, grads)
            return
        kernel = torch._fused_adam_ if self.name == "adam" else torch._fused_adamw_
        hyper = {h: self.hyper[h].tolist() for h in ("lr", "beta1", "beta2", "weight_decay")}
        steps = self.t.float()  # torch's Adam keeps its step count as a float32 tensor
        names = list(params)
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        for i in range(len(steps)):
            kernel(
                [params[n][i] for n in names],
                [grads[n][i].contiguous() for n in names],  # the kernel reads memory in order
                [m[n][i] for n in names],
                [v[n][i] for n in names],
                [],
                [steps[i]] * len(names),
                lr=hyper["lr"][i],
                beta1=hyper["beta1"][i],
                beta2=hyper["beta2"][i],
                weight_decay=hyper["weight_decay"][i],
                eps=EPS,
                amsgrad=False,
                maximize=False,
            )

    def _fused_sgd(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
        hyper = {h: self.hyper[h].tolist() for h in ("lr", "momentum", "weight_decay")}
        names = list(params)
        buf = self.state["momentum_buffer"]
        for i, first in enumerate((self.t == 1).tolist()):
            momentum = hyper["momentum"][i]
            torch._fused_sgd_(
                [params[n][i] for n in names],
                [grads[n][i].contiguous() for n in names],
                [buf[n][i] for n in names] if momentum else [],
                weight_decay=hyper["weight_decay"][i],
                momentum=momentum,
                lr=hyper["lr"][i],
                dampening=0.0,
                nesterov=False,
                maximize=False,
                is_first_step=first,
            )

    def _h(self, p: torch.Tensor, *names: str) -> list[torch.Tensor]:
        return [_per_member(self.hyper[h], p) for h in names]

    # The stacked formulas update `p` in place in torch's order of operations, with each
    # member's hyperparameters broadcast over its rows. In place, not as new tensors: RMSprop's
    # update as a dozen fresh tensors took 55% of a width-256 MLP GAN's step on the CPU.

    def _adam(self, n: str, p: torch.Tensor, g: torch.Tensor, decoupled: bool = False) -> None:
        lr, b1, b2, wd = self._h(p, "lr", "beta1", "beta2", "weight_decay")
        if decoupled:
            p.mul_(1 - lr * wd)
        else:
            g = g.addcmul(p, wd)
        m, v = self.state["exp_avg"][n], self.state["exp_avg_sq"][n]
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g * (1 - b2))
        t = _per_member(self.t, self.t)
        bc1 = (1 - self.hyper["beta1"].double().view_as(t) ** t).to(p.dtype)
        bc2_sqrt = (1 - self.hyper["beta2"].double().view_as(t) ** t).sqrt().to(p.dtype)
        shape = (-1,) + (1,) * (p.ndim - 1)
        denom = (v.sqrt() / bc2_sqrt.view(shape)).add_(EPS)
        p.addcdiv_(m * (-lr / bc1.view(shape)), denom)

    def _adamw(self, n: str, p: torch.Tensor, g: torch.Tensor) -> None:
        self._adam(n, p, g, decoupled=True)

    def _sgd(self, n: str, p: torch.Tensor, g: torch.Tensor) -> None:
        lr, mom, wd = self._h(p, "lr", "momentum", "weight_decay")
        buf = self.state["momentum_buffer"][n]
        # At the first step torch sets buf = g, which mom * 0 + g gives exactly.
        buf.mul_(mom).add_(g.addcmul(p, wd))
        p.addcmul_(buf, -lr)

    def _rmsprop(self, n: str, p: torch.Tensor, g: torch.Tensor) -> None:
        lr, mom, wd = self._h(p, "lr", "momentum", "weight_decay")
        g = g.addcmul(p, wd)
        sq, buf = self.state["square_avg"][n], self.state["momentum_buffer"][n]
        sq.mul_(RMS_ALPHA).addcmul_(g, g, value=1 - RMS_ALPHA)
        buf.mul_(mom).addcdiv_(g, sq.sqrt().add_(EPS))
        p.addcmul_(buf, -lr)
