"""A small decoder-only Transformer (GPT-style, pre-norm) over tokens: characters or pixels.

On text the tokens are characters and the context is `context` characters. On images each
pixel is quantised to `levels` grey levels and read in raster order after a start token, so
an 8x8 digit is 64 tokens; larger images are first reduced to `max_side` (e.g. MNIST at
14x14 = 196 tokens instead of 784), and samples are scaled back up for the sample metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gentune.errors import GentuneError
from gentune.models.config import OPTIMIZERS, ConfigBase

SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TransformerConfig(ConfigBase):
    """Everything that defines one Transformer trial apart from data, budget and seed."""

    n_layer: int = 4  # Transformer blocks
    n_head: int = 4  # attention heads; must divide d_model
    d_model: int = 128  # width of the residual stream
    # Text: characters of context per training window. Images: unused (a whole image is one window).
    context: int = 64
    dropout: float = 0.0
    # Images: grey levels each pixel is quantised to (the vocabulary is levels + a start token).
    levels: int = 16
    # Images: a side longer than this is reduced to it before tokenising (MNIST: 28 -> 14, i.e.
    # 196 tokens instead of 784); 0 keeps every image at its own size.
    max_side: int = 14
    # Softmax temperature when sampling (1.0 samples the model's own distribution).
    temperature: float = 1.0
    optimizer: str = "adamw"
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.99
    momentum: float = 0.9  # sgd / rmsprop only
    # Decoupled weight decay (adamw) or L2 (others), on weight matrices only.
    weight_decay: float = 0.1
    batch_size: int = 32
    warmup: int = 100  # steps of linear learning-rate warm-up
    schedule: str = "cosine"  # "cosine" decays the learning rate to lr / 10; or "constant"
    grad_clip: float = 1.0  # largest gradient norm; 0 turns clipping off

    _POSITIVE_INTS = ("n_layer", "n_head", "d_model", "context", "batch_size")
    _NONNEG_INTS = ("max_side", "warmup")
    _POSITIVE = ("lr", "temperature")
    _NONNEG = ("weight_decay", "grad_clip")
    _UNIT = ("beta1", "beta2", "momentum", "dropout")
    _CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}

    def check(self) -> None:
        if self.d_model % self.n_head:
            raise GentuneError(
                "TransformerConfig.d_model must be a multiple of n_head",
                value={"d_model": self.d_model, "n_head": self.n_head},
                fix="e.g. d_model 128 with n_head 4",
            )
        if not isinstance(self.levels, int) or isinstance(self.levels, bool) or not 2 <= self.levels <= 256:
            raise GentuneError(
                "TransformerConfig.levels must be an integer in [2, 256]",
                value=self.levels,
                fix="use 16 (or 256 for exact 8-bit pixels)",
            )


class Attention(nn.Module):
    """Causal multi-head self-attention with an optional key/value cache for sampling."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, cache: tuple | None = None):
        b, t, d = x.shape
        q, k, v = (
            y.view(b, t, self.heads, d // self.heads).transpose(1, 2) for y in self.qkv(x).split(d, dim=2)
        )
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        # With a cache, new queries come one at a time and may see every cached key.
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=cache is None and t > 1, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, d)), (k, v)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: tuple | None = None):
        a, cache = self.attn(self.ln1(x), cache)
        x = x + self.drop(a)
        return x + self.mlp(self.ln2(x)), cache


class TokenTransformer(nn.Module):
    """idx (B, T) -> next-token logits (B, T, vocab); `meta` says what the tokens are."""

    def __init__(self, config: TransformerConfig, meta: dict):
        super().__init__()
        self.meta = dict(meta)
        self.vocab_size, self.max_len = int(meta["vocab_size"]), int(meta["max_len"])
        self.temperature = config.temperature
        d = config.d_model
        self.tok = nn.Embedding(self.vocab_size, d)
        self.pos = nn.Embedding(self.max_len, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(d, config.n_head, config.dropout) for _ in range(config.n_layer))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, self.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied input and output embeddings (as in GPT-2)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, caches: list | None = None, start: int = 0):
        """Logits for `idx` at positions start.. ; with `caches` also returns the new caches."""
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))
        new = []
        for i, block in enumerate(self.blocks):
            x, c = block(x, None if caches is None else caches[i])
            new.append(c)
        logits = self.head(self.ln(x))
        return logits if caches is None else (logits, new)


def image_meta(config: TransformerConfig, image_shape: tuple[int, int, int]) -> dict:
    """What the model needs to know about the images it models: shapes, levels, vocabulary."""
    c, h, w = (int(s) for s in image_shape)
    side = config.max_side or max(h, w)
    size = (min(h, side), min(w, side))
    return {
        "kind": "image",
        "image_shape": [c, h, w],
        "token_shape": [c, *size],
        "levels": config.levels,
        "vocab_size": config.levels + 1,  # + the start token
        "max_len": c * size[0] * size[1],
    }


def text_meta(config: TransformerConfig, vocab: str) -> dict:
    return {"kind": "text", "vocab": vocab, "vocab_size": len(vocab), "max_len": config.context}


def images_to_tokens(x: torch.Tensor, meta: dict) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] -> tokens (N, C*h*w) in raster order, 0..levels-1."""
    size = tuple(meta["token_shape"][1:])
    if tuple(x.shape[2:]) != size:
        x = F.interpolate(x, size=size, mode="area")
    levels = meta["levels"]
    return ((x + 1) / 2 * (levels - 1)).round().clamp(0, levels - 1).long().flatten(1)


def tokens_to_images(tokens: torch.Tensor, meta: dict) -> torch.Tensor:
    """Tokens (N, C*h*w) -> images (N, C, H, W) in [-1, 1], scaled back up to the data's size."""
    x = tokens.float() / (meta["levels"] - 1) * 2 - 1
    x = x.view(len(tokens), *meta["token_shape"])
    size = tuple(meta["image_shape"][1:])
    if tuple(x.shape[2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(-1, 1)
    return x


def build(config: TransformerConfig, meta: dict) -> TokenTransformer:
    """A freshly initialised Transformer for the tokens `meta` describes (image_meta / text_meta)."""
    return TokenTransformer(config, meta)
