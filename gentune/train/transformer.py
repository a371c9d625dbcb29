"""Training, sampling and likelihood evaluation for the token Transformer, on images or text.

The loss is the next-token cross-entropy in nats per token: per character on text, per
(quantised, possibly reduced) pixel on images. Note that an image NLL over `levels` grey
levels is a discrete likelihood: it is not comparable with a continuous model's bits/dim.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from gentune.data.base import ImageDataset
from gentune.device import resolve_device
from gentune.errors import DataError, GentuneError
from gentune.models.transformer import (
    TokenTransformer,
    TransformerConfig,
    build,
    image_meta,
    images_to_tokens,
    text_meta,
    tokens_to_images,
)
from gentune.train.callback import Callback
from gentune.train.loop import Batches, Loop, TrainResult, check_budget, fit, fixed_subset, seeded_build
from gentune.train.optim import lr_lambda, make_optimizer

SIGNALS = ("loss", "grad_norm")  # loss: cross-entropy, nats per token
CURVE_N = 256  # images, or text windows, in each fixed slice the curves are measured on
TEXT_SAMPLE_CHARS = 300


def _is_text(data) -> bool:
    return getattr(data, "kind", "image") == "text"


class _Windows:
    """Endless batches of random text windows: inputs ids[s:s+T], targets ids[s+1:s+T+1]."""

    def __init__(self, ids: torch.Tensor, batch: int, context: int, gen: torch.Generator):
        self.ids, self.batch, self.context, self.gen = ids, batch, context, gen
        self.consumed = 0
        self.offsets = torch.arange(context + 1, device=ids.device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(
            len(self.ids) - self.context - 1, (self.batch,), generator=self.gen, device=self.ids.device
        )
        self.consumed += 1
        chunk = self.ids[starts[:, None] + self.offsets]
        return chunk[:, :-1], chunk[:, 1:]


class _ImageSequences(Batches):
    """Endless batches of tokenised images as (inputs, targets), a fresh permutation per epoch."""

    def __init__(self, tokens: torch.Tensor, batch: int, gen: torch.Generator, start: int):
        super().__init__(tokens, batch, gen)
        self.start = start

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return _with_start(super().next(), self.start)


def _with_start(tokens: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image tokens -> (inputs: the start token then all but the last pixel, targets: all pixels)."""
    first = torch.full((len(tokens), 1), start, dtype=tokens.dtype, device=tokens.device)
    return torch.cat([first, tokens[:, :-1]], 1), tokens


def _text_windows(ids: torch.Tensor, context: int, starts: torch.Tensor):
    chunk = ids[starts[:, None] + torch.arange(context + 1, device=ids.device)]
    return chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def token_nll(
    model: TokenTransformer, inputs: torch.Tensor, targets: torch.Tensor, batch: int = 256
) -> float:
    """Mean cross-entropy in nats per token, in eval mode."""
    was = model.training
    model.eval()
    total = 0.0
    for x, y in zip(inputs.split(batch), targets.split(batch)):
        total += float(F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum"))
    model.train(was)
    return total / max(1, targets.numel())


def _prepare(config: TransformerConfig, data, dev: torch.device, gen: torch.Generator):
    """(meta, batch source, per-epoch batches, fixed train slice, fixed validation slice)."""
    if _is_text(data):
        meta = text_meta(config, data.vocab)
        train, val = data.train.to(dev), data.val.to(dev)
        if len(val) <= config.context + 1 or len(train) <= config.context + 1:
            raise DataError(
                "the text is too short for this context length",
                value={"context": config.context, "val_chars": len(val)},
                fix="use a longer text or a smaller context",
            )
        source = _Windows(train, config.batch_size, config.context, gen)
        per_epoch = max(1, len(train) // (config.batch_size * config.context))
        pick = lambda ids, s: torch.randint(  # noqa: E731
            len(ids) - config.context - 1,
            (CURVE_N,),
            generator=torch.Generator().manual_seed(s),
        ).to(dev)
        slices = [_text_windows(ids, config.context, pick(ids, s)) for ids, s in ((train, 1), (val, 2))]
        return meta, source, per_epoch, slices
    meta = image_meta(config, data.shape)
    start = meta["levels"]
    tokens = images_to_tokens(data.train.x.to(dev, torch.float32), meta)
    batches = _ImageSequences(tokens, config.batch_size, gen, start)
    val_tokens = images_to_tokens(data.val.x.to(dev, torch.float32), meta)
    slices = [_with_start(fixed_subset(t, CURVE_N, s), start) for t, s in ((tokens, 1), (val_tokens, 2))]
    return meta, batches, batches.per_epoch, slices


def _optimizer(config: TransformerConfig, model: TokenTransformer):
    """Weight decay on weight matrices (the tied embedding included), not on norms or biases."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return make_optimizer(config, [{"params": decay}, {"params": rest, "weight_decay": 0.0}])


def transformer_loop(
    config: TransformerConfig,
    data,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> Loop:
    """The Transformer's training run on `data` (an ImageDataset or a TextDataset) for the one
    loop: `steps` updates or `epochs` passes.

    `losses` = {"loss": nats per token, "grad_norm"}; `curves` the cross-entropy of fixed train
    and validation slices. The same seed gives the same weights.
    """
    dev = resolve_device(device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    meta, source, per_epoch, slices = _prepare(config, data, dev, gen)
    total = check_budget(steps, epochs, per_epoch)
    model = seeded_build(seed, lambda: build(config, meta), dev).train()
    opt = _optimizer(config, model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(config.warmup, total, config.schedule))

    def step(i: int) -> torch.Tensor:
        x, y = source.next()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf)
        opt.step()
        sched.step()
        return torch.stack([loss.detach(), norm])

    return Loop(
        step,
        lambda: (token_nll(model, *slices[0]), token_nll(model, *slices[1])),
        SIGNALS,
        model,
        total,
        epochs=lambda: source.consumed / per_epoch,
        config=config,
        seed=seed,
        device=str(dev),
    )


def train_transformer(
    config: TransformerConfig,
    data,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    log_every: int | None = None,
    callback: Callback | None = None,
    max_seconds: float | None = None,
) -> TrainResult:
    """Train on `data` (see `transformer_loop`) and return what it produced."""
    t0 = time.perf_counter()
    loop = transformer_loop(config, data, steps=steps, epochs=epochs, seed=seed, device=device)
    return fit(loop, callback=callback, max_seconds=max_seconds, log_every=log_every, t0=t0)


def _draw(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """One token per row, by inverse CDF from CPU uniforms: the same on every device."""
    probs = torch.softmax(logits.float() / temperature, -1)
    u = torch.rand(len(probs), 1, generator=gen).to(probs.device)
    return (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)


@torch.no_grad()
def generate(
    model: TokenTransformer,
    prefix: torch.Tensor,
    n_new: int,
    *,
    temperature: float,
    gen: torch.Generator,
    allowed: int | None = None,
) -> torch.Tensor:
    """`prefix` (B, t) extended by `n_new` sampled tokens; only ids < `allowed` are drawn.

    Keys and values are cached while the sequence fits the context; beyond it, each step
    recomputes the last `max_len` tokens.
    """
    layers, idx = len(model.blocks), prefix
    logits, caches = model(idx[:, -model.max_len :], [None] * layers, 0)
    pos = min(idx.shape[1], model.max_len)
    for i in range(n_new):
        last = logits[:, -1]
        if allowed is not None:
            last = last[:, :allowed]
        nxt = _draw(last, temperature, gen)[:, None]
        idx = torch.cat([idx, nxt], 1)
        if i == n_new - 1:
            break
        if pos < model.max_len:
            logits, caches = model(nxt, caches, pos)
            pos += 1
        else:
            logits, caches = model(idx[:, -model.max_len :], [None] * layers, 0)
    return idx


def sample(
    model: TokenTransformer,
    n: int,
    *,
    seed: int = 0,
    device: str = "cpu",
    temperature: float | None = None,
    length: int = TEXT_SAMPLE_CHARS,
    batch_size: int = 1000,
):
    """Images: (n, C, H, W) in [-1, 1] on the CPU. Text: n strings of `length` characters.

    `temperature` defaults to the config's. The same seed gives the same samples on any device.
    """
    if not isinstance(n, int) or n < 0:
        raise GentuneError("the number of samples must be an integer >= 0", value=n, fix="pass 1000")
    dev, meta = resolve_device(device), model.meta
    temperature = temperature or model.temperature
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.to(dev).eval()
    try:
        if meta["kind"] == "text":
            vocab = meta["vocab"]
            first = vocab.index("\n") if "\n" in vocab else 0
            ids = generate(
                model, torch.full((n, 1), first, device=dev), length, temperature=temperature, gen=gen
            )
            return ["".join(vocab[int(i)] for i in row[1:]) for row in ids.cpu()]
        out = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            first = torch.full((b, 1), meta["levels"], device=dev)
            tokens = generate(
                model, first, meta["max_len"], temperature=temperature, gen=gen, allowed=meta["levels"]
            )[:, 1:]
            out.append(tokens_to_images(tokens, meta).cpu())
        return torch.cat(out) if out else torch.empty(0, *meta["image_shape"])
    finally:
        model.train(was)


def evaluate(model: TokenTransformer, data, *, device: str = "cpu", final: bool = True) -> dict:
    """Validation NLL in nats per token and in bits (per character, or per dimension of the
    tokenised image); perplexity for text. `final` is accepted for the common signature."""
    del final
    dev, meta = resolve_device(device), model.meta
    model.to(dev)
    if meta["kind"] == "text":
        if not _is_text(data):
            raise GentuneError("this Transformer was trained on text, not images", fix="pass a text dataset")
        val = data.val.to(dev)
        ctx = meta["max_len"]
        starts = torch.arange(0, len(val) - ctx - 1, ctx, device=dev)
        nll = token_nll(model, *_text_windows(val, ctx, starts))
        return {"nll": nll, "bits_per_char": nll / math.log(2), "perplexity": math.exp(nll)}
    if _is_text(data) or not isinstance(data, ImageDataset):
        raise GentuneError("this Transformer was trained on images, not text", fix="pass an image dataset")
    tokens = images_to_tokens(data.val.x.to(dev, torch.float32), meta)
    nll = token_nll(model, *_with_start(tokens, meta["levels"]))
    return {"nll": nll, "bits_per_dim": nll / math.log(2), "nll_image": nll * meta["max_len"]}
