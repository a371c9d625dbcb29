"""K members of one GAN family trained in lockstep: a population.

A tutorial-size GAN step is a few small matrix products, too little work to fill a device. A
population stacks K members' weights along a leading axis and runs the family's own losses
(`gentune.train.gan.GANLosses`, pure functions of parameters, buffers and batch) over all of
them at once with `torch.func.vmap`; the optimizer update runs on the stacked tensors too, with
each member's lr, betas, momentum and weight decay as per-member tensors (`optim.Stacked`).

Members are independent: each has its own torch.Generator for its data order and latents,
drawn in the order the one-at-a-time step draws them (`gan_loop`), its own optimizer state and
step count; the losses are summed over members only to get every member's gradient from one
backward pass (d(sum)/d(member i) is member i's own gradient). So a member trains to the same
numbers, up to float rounding, whatever its neighbours do, and alone (K = 1) or in `gan_loop`.

Every stacked tensor (weights, buffers, optimizer state, step counts, hyperparameters) sits in
one flat dict keyed by a prefix, so adding a member is one concatenation per tensor and removing
one is one index per tensor; membership changes are rare next to steps.
"""

from __future__ import annotations

import copy
import dataclasses
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from torch.func import vmap
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.utils._pytree import tree_map

from gentune.device import flush_denormals, resolve_device
from gentune.errors import GentuneError
from gentune.train.gan import GANLosses
from gentune.train.loop import Batches, Loop
from gentune.train.optim import SLOTS, Stacked

STATE_FORMAT = "gentune-population-member/1"
SAMPLE_BATCH = 4096  # latents per member in one batched pass of samples()
# Per-member hyperparameter tensors and the config fields that set them.
HYPER = ("lr_g", "lr_d", "beta1", "beta2", "momentum", "weight_decay")
SETTABLE = ("lr", "lr_d", "beta1", "beta2", "momentum", "weight_decay")


class MemberState(TypedDict):
    """One member, enough to continue it exactly: plain values and tensors (torch.save-able and
    loadable with weights_only=True)."""

    format: str
    family: str
    config: dict[str, Any]
    seed: int
    steps: int
    # Weights, buffers, optimizer state, step counts, in the population's layout (Linear
    # weights transposed, see _linear_weights); Population.model gives the module's.
    tensors: dict[str, torch.Tensor]
    rng: torch.Tensor  # the member's generator state (data order and latents)
    perm: torch.Tensor  # this epoch's permutation of the training images
    consumed: int  # batches drawn so far


@dataclass
class _Member:
    config: Any
    seed: int
    batches: Batches
    steps: int = 0
    diverged: bool = False
    frozen: MemberState | None = None  # a diverged member's last state, kept until removed


class Population:
    """K members of one family trained in lockstep in one process; slots are reused.

    Members share `family.population_key(config)` (the structure, batch size, d_steps and
    optimizer type); lr (G's and D's), betas, momentum and weight decay may differ per member.
    `step(n)` does n G steps of every live member and returns, per slot, the family's signals
    over those steps (means; grad_norm: the maximum) with "steps" (the member's total) and
    "diverged". A member whose g_loss or d_loss turns non-finite or exceeds the family's limit
    (checked every `log_every` steps, as the one loop does) is frozen: it leaves the stacked
    tensors, so it costs nothing and cannot touch its neighbours, and is reported diverged
    once; `state`, `model` and `steps` still read it until `remove`.
    """

    def __init__(self, family, data, *, capacity: int, device: str = "cpu", log_every: int = 50):
        if not getattr(family, "population", False):
            raise GentuneError(
                f"the {family.name} family cannot train as a population",
                value=family.name,
                fix="train it one trial at a time (leave --population unset)",
            )
        if capacity < 1 or log_every < 1:
            raise GentuneError(
                "a population needs capacity >= 1 and log_every >= 1",
                value={"capacity": capacity, "log_every": log_every},
                fix="pass capacity=8, log_every=50",
            )
        self.family, self.data, self.capacity = family, data, capacity
        self.device, self.log_every = resolve_device(device), log_every
        self._members: dict[int, _Member] = {}
        self._order: list[int] = []  # live slots, in the order of the stacked tensors' rows
        self._t: dict[str, torch.Tensor] = {}
        self._key: tuple | None = None
        self._loop: Loop | None = None  # the first member's loop: structure, signals, limits
        self._x: torch.Tensor | None = None
        self._transposed: set[str] = set()  # stacked keys held as (K, in, out); see _linear_weights

    # -- membership ---------------------------------------------------------------------------

    def accepts(self, config) -> bool:
        """True when `config` can join: the members' population_key, and room left."""
        if len(self._members) >= self.capacity:
            return False
        return self._key is None or self.family.population_key(config) == self._key

    def add(self, config, *, seed: int, state: MemberState | None = None) -> int:
        """A slot for `config`: fresh weights under `seed` (as the family's one-at-a-time loop
        initialises them), or `state` continued where it was, with `config`'s hyperparameters."""
        if not self.accepts(config):
            raise GentuneError(
                "this configuration cannot join the population: it is full or differs in a "
                "field that members must share",
                value=self.family.population_key(config),
                fix=f"start another population for it (members share {self._key})",
            )
        loop = self.family.loop(config, self.data, steps=1, seed=seed, device=str(self.device))
        G, D = loop.model, loop.extras["discriminator"]
        if self._loop is None:
            self._loop, self._key = loop, self.family.population_key(config)
            self._losses = GANLosses(G, _vmappable(D))
            self._transposed = _linear_weights(G, "pg.") | _linear_weights(D, "pd.")
            self._x = self.data.train.x.to(self.device, torch.float32)
        assert self._x is not None
        gen = torch.Generator(device=self.device).manual_seed(seed)
        batches = Batches(self._x, config.batch_size, gen)
        if state is None:
            rows = self._fresh_rows(G, D, config)
        else:
            rows = self._state_rows(state, config)
            gen.set_state(state["rng"])
            batches.perm, batches.consumed = state["perm"].to(self.device), int(state["consumed"])
        slot = min(set(range(self.capacity)) - set(self._members))
        self._members[slot] = _Member(
            config, seed, batches, steps=0 if state is None else int(state["steps"])
        )
        self._append(rows, config)
        self._order.append(slot)
        return slot

    def remove(self, slot: int) -> None:
        """Free `slot` (a live member or a diverged one)."""
        self._member(slot)
        if slot in self._order:
            self._keep([s for s in self._order if s != slot])
        del self._members[slot]

    @property
    def alive(self) -> list[int]:
        """The slots that train: added, not removed, not diverged."""
        return list(self._order)

    def steps(self, slot: int) -> int:
        """The member's G steps so far."""
        return self._member(slot).steps

    # -- training -----------------------------------------------------------------------------

    def step(self, n: int) -> dict[int, dict[str, float]]:
        """n G steps of every live member; per slot its signals over them (see the class)."""
        if not self._order:
            return {}
        flush_denormals()
        loop = self._loop
        assert loop is not None
        names = loop.signals
        watched = [names.index(k) for k in (loop.diverge_on or names)]
        windows: dict[int, list[torch.Tensor]] = {}
        diverged: list[int] = []
        done = 0
        while done < n and self._order:
            chunk = min(self.log_every, n - done)
            window = torch.stack([self._one_step() for _ in range(chunk)]).cpu()  # (chunk, K, S)
            done += chunk
            bad = []
            for row, slot in enumerate(self._order):
                self._members[slot].steps += chunk
                windows.setdefault(slot, []).append(window[:, row])
                if not bool((window[:, row, watched].abs() <= loop.diverge_limit).all()):  # NaN fails too
                    bad.append(slot)
            for slot in bad:
                self._members[slot].frozen = self.state(slot)
                self._members[slot].diverged = True
                diverged.append(slot)
            if bad:
                self._keep([s for s in self._order if s not in bad])
        out = {}
        for slot, parts in windows.items():
            w = torch.cat(parts)
            signals = {
                k: float(w[:, i].max() if loop.reduce.get(k) == "max" else w[:, i].mean())
                for i, k in enumerate(names)
            }
            out[slot] = {**signals, "steps": self._members[slot].steps, "diverged": slot in diverged}
        return out

    def _one_step(self) -> torch.Tensor:
        """One G step of every live member: (K, signals), as `gentune.train.gan._Step` does it."""
        f, config = self._losses, self._members[self._order[0]].config
        pg, bg, pd, bd = (self._group(p) for p in ("pg.", "bg.", "pd.", "bd."))
        pg_, pd_ = self._natural("pg.", pg), self._natural("pd.", pd)
        opt_g, opt_d = self._optimizers()
        k = len(self._order)
        d_sum = d_acc = grad_max = torch.zeros(k, device=self.device)
        for _ in range(config.d_steps):
            real = torch.stack([self._members[s].batches.next() for s in self._order])
            z = torch.stack(
                [
                    torch.randn(
                        config.batch_size,
                        config.latent_dim,
                        generator=self._members[s].batches.gen,
                        device=self.device,
                    )
                    for s in self._order
                ]
            )
            fake = self._map(f.generate)(pg_, bg, z)
            d_loss, acc = self._map(f.d_loss)(pd_, bd, real, fake.detach())
            grads = dict(zip(pd, torch.autograd.grad(d_loss.sum(), list(pd.values()))))
            grad_max = torch.maximum(grad_max, _norms(grads))
            opt_d.step(pd, grads)
            d_sum = d_sum + d_loss.detach()
            d_acc = d_acc + acc
        frozen_d = {n: p.detach() for n, p in pd_.items()}
        g_loss = self._map(f.g_loss)(frozen_d, bd, fake)
        grads = dict(zip(pg, torch.autograd.grad(g_loss.sum(), list(pg.values()))))
        grad_max = torch.maximum(grad_max, _norms(grads))
        opt_g.step(pg, grads)
        return torch.stack([g_loss.detach(), d_sum / config.d_steps, d_acc / config.d_steps, grad_max], 1)

    def _map(self, fn: Callable) -> Callable:
        """`fn` over the member axis: vmap, or with one member alive `fn` on its row (vmap's
        batching of a batch of one costs a quarter of the step on a CPU: the drain phase of a
        promotion study trains its last member alone)."""
        if len(self._order) > 1:
            return vmap(fn)

        def one(*args):
            return tree_map(lambda t: t.unsqueeze(0), fn(*tree_map(lambda t: t.squeeze(0), args)))

        return one

    def _optimizers(self) -> tuple[Stacked, Stacked]:
        name = self._members[self._order[0]].config.optimizer
        t = self._t
        out = []
        for net in ("g", "d"):
            hyper = {h: t[f"h.{h}"] for h in ("beta1", "beta2", "momentum", "weight_decay")}
            hyper["lr"] = t[f"h.lr_{net}"]
            state = {s: self._group(f"o{net}.{s}.") for s in SLOTS[name]}
            out.append(Stacked(name, hyper, self._group(f"p{net}."), state, t[f"t.{net}"]))
        return out[0], out[1]

    # -- reading members ----------------------------------------------------------------------

    def model(self, slot: int) -> torch.nn.Module:
        """The member's generator as a plain module in eval mode, like a trial's result.model."""
        assert self._loop is not None
        tensors = self._tensors(slot)
        G = copy.deepcopy(self._loop.model)
        state = {
            k[3:]: v.mT if k in self._transposed else v for k, v in tensors.items() if k[:3] in ("pg.", "bg.")
        }
        G.load_state_dict(state, strict=True)
        return G.eval()

    @torch.no_grad()
    def samples(self, n: int, *, seed: int) -> dict[int, torch.Tensor]:
        """Every live member's n images, as family.sample gives them (the same latents for the
        same seed), on the CPU, from one batched pass per SAMPLE_BATCH latents."""
        if not self._order:
            return {}
        G = self._losses.G
        z = torch.randn(
            n,
            int(self._members[self._order[0]].config.latent_dim),
            generator=torch.Generator().manual_seed(seed),
        )
        pg, bg = self._natural("pg.", self._group("pg.")), self._group("bg.")
        was_training = G.training
        G.eval()
        try:
            parts = [
                vmap(self._losses.generate, in_dims=(0, 0, None))(pg, bg, zb.to(self.device)).cpu()
                for zb in z.split(SAMPLE_BATCH)
            ]
        finally:
            G.train(was_training)
        images = torch.cat(parts, 1)
        return {slot: images[row] for row, slot in enumerate(self._order)}

    def state(self, slot: int) -> MemberState:
        """Weights, buffers, optimizer state, step counts and RNG state of the member: what
        `add(config, seed=..., state=...)` continues from exactly."""
        m = self._member(slot)
        if m.frozen is not None:
            return m.frozen
        return MemberState(
            format=STATE_FORMAT,
            family=self.family.name,
            config=m.config.to_dict(),
            seed=m.seed,
            steps=m.steps,
            tensors={k: v.cpu() for k, v in self._tensors(slot).items() if not k.startswith("h.")},
            rng=m.batches.gen.get_state(),
            perm=m.batches.perm.cpu(),
            consumed=m.batches.consumed,
        )

    def set_hyperparameters(self, slot: int, **values) -> None:
        """Change the member's lr, lr_d, beta1, beta2, momentum or weight_decay (PBT's
        perturbation); its config follows, and the next step uses them."""
        unknown = sorted(set(values) - set(SETTABLE))
        if unknown:
            raise GentuneError(
                "only these hyperparameters may change within a population: " + ", ".join(SETTABLE),
                value=unknown,
                fix="start a new member for a change of structure, batch size or optimizer",
            )
        m = self._member(slot)
        m.config = dataclasses.replace(m.config, **values)  # validates
        if slot in self._order:
            row = self._order.index(slot)
            for h, v in _hyper(m.config).items():
                self._t[f"h.{h}"][row] = v

    # -- the stacked tensors ------------------------------------------------------------------

    def _member(self, slot: int) -> _Member:
        if slot not in self._members:
            raise GentuneError(
                "no member in this slot", value=slot, fix=f"use one of {sorted(self._members)}"
            )
        return self._members[slot]

    def _natural(self, prefix: str, group: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`group` in the modules' own layout: Linear weights as (out, in) views."""
        return {n: v.mT if prefix + n in self._transposed else v for n, v in group.items()}

    def _group(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in self._t.items() if k.startswith(prefix)}

    def _tensors(self, slot: int) -> dict[str, torch.Tensor]:
        m = self._member(slot)
        if m.frozen is not None:
            return dict(m.frozen["tensors"])
        row = self._order.index(slot)
        return {k: v[row].detach().clone() for k, v in self._t.items()}

    def _fresh_rows(self, G, D, config) -> dict[str, torch.Tensor]:
        rows = {}
        for net, module in (("g", G), ("d", D)):
            params = {
                n: p.detach().mT.contiguous() if f"p{net}.{n}" in self._transposed else p.detach()
                for n, p in module.named_parameters()
            }
            rows.update({f"p{net}.{n}": p for n, p in params.items()})
            rows.update({f"b{net}.{n}": b.detach() for n, b in module.named_buffers()})
            for s in SLOTS[config.optimizer]:
                rows.update({f"o{net}.{s}.{n}": torch.zeros_like(p) for n, p in params.items()})
            rows[f"t.{net}"] = torch.zeros((), dtype=torch.float64, device=self.device)
        return rows

    def _state_rows(self, state: MemberState, config) -> dict[str, torch.Tensor]:
        if state.get("format") != STATE_FORMAT or state.get("family") != self.family.name:
            raise GentuneError(
                "this member state was not written by a population of this family",
                value=(state.get("format"), state.get("family")),
                fix=f"pass a state from Population.state() of a {self.family.name} population",
            )
        return {k: v.to(self.device) for k, v in state["tensors"].items()}

    def _append(self, rows: dict[str, torch.Tensor], config) -> None:
        rows = dict(rows)
        rows.update(
            {
                f"h.{h}": torch.tensor(v, dtype=torch.float64, device=self.device)
                for h, v in _hyper(config).items()
            }
        )
        if self._t and set(rows) != set(self._t):
            raise GentuneError(
                "this member's tensors do not match the population's",
                value=sorted(set(rows) ^ set(self._t))[:5],
                fix="continue a state only in a population of the same structure and optimizer",
            )
        self._t = {
            k: _leaf(k, torch.cat([self._t[k].detach(), v[None]]) if self._t else v[None].clone())
            for k, v in rows.items()
        }

    def _keep(self, slots: list[int]) -> None:
        rows = torch.tensor([self._order.index(s) for s in slots], dtype=torch.long, device=self.device)
        self._t = {k: _leaf(k, v.detach().index_select(0, rows)) for k, v in self._t.items()}
        self._order = slots


def _linear_weights(module: torch.nn.Module, prefix: str) -> set[str]:
    """The keys of `module`'s Linear weights, stacked as (K, in, out): F.linear multiplies by
    the weight's transpose, which is then contiguous for the batched matmul, and its gradient
    comes out contiguous in the same layout, ready for the fused optimizer. In the modules'
    (out, in) layout both were copied at every step (a quarter of a step at K = 8 on CPU)."""
    return {
        f"{prefix}{name}.weight"
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.Linear) and "weight" in m._parameters
    }


def _vmappable(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with its spectral norms' power iteration written with copy_ instead of out=,
    which vmap cannot batch; the same values, updated in place in the stacked buffers."""
    for sub in module.modules():
        if isinstance(sub, _SpectralNorm):
            sub._power_method = types.MethodType(_power_method, sub)  # type: ignore[method-assign]
    return module


@torch.no_grad()
def _power_method(self, weight_mat: torch.Tensor, n_power_iterations: int) -> None:
    for _ in range(n_power_iterations):
        self._u.copy_(F.normalize(torch.mv(weight_mat, self._v), dim=0, eps=self.eps))
        self._v.copy_(F.normalize(torch.mv(weight_mat.H, self._u), dim=0, eps=self.eps))


def _leaf(key: str, v: torch.Tensor) -> torch.Tensor:
    return v.requires_grad_(True) if key.startswith(("pg.", "pd.")) else v


def _hyper(config) -> dict[str, float]:
    return {
        "lr_g": config.lr,
        "lr_d": config.d_lr,
        "beta1": config.beta1,
        "beta2": config.beta2,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
    }


def _norms(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each member's total gradient norm over all its parameters: (K,)."""
    # vector_norm over the trailing dims reads a transposed gradient in place (flatten copied it).
    norms = [torch.linalg.vector_norm(g, dim=tuple(range(1, g.ndim))) for g in grads.values()]
    return torch.linalg.vector_norm(torch.stack(norms, 1), dim=1)
