"""The compact VLM's network: a few million parameters, trained on the data engine's VQA, run on a CPU.

Architecture (:class:`CompactSpatialModel`, sizes in :class:`CompactModelConfig`):

* **image encoder**: RGB only (no depth), resized to ``image_width`` x ``image_height`` (128 x 96), scaled
  to [-1, 1]; four 3x3 conv layers (GELU) with strides 2, 2, 2, 1 -> a grid of ``(H/8) x (W/8)`` patch
  features (12 x 16 = 192 tokens), plus learned 2D position embeddings, then ``image_layers`` transformer
  encoder layers so every patch sees the whole scene (depth cues are global).
* **text decoder**: a causal transformer over ``[BOS] question [SEP] <a> <b> <r> answer [EOS]``; every layer has
  self-attention, cross-attention to the image tokens, and an MLP (pre-norm). The output projection is
  tied to the token embedding.
* **referent slots** ``<a>`` and ``<b>``: two fixed tokens after the question where the decoder states what
  it found about the first and second object the question names. Training supervises them (only there)
  with the data engine's scene records, which is what makes a model this small learn grounding in an hour
  of CPU: a **pointer** (one attention from the text to the image, inserted after the middle decoder
  layer) must point at the object's patch, and an **attribute head** right after it must read the
  object's 3D box (centre in the scene frame, width, height, depth) and pixel centre.
* **relation slot** ``<r>``: the token after the two slots receives an MLP embedding of both slots'
  attributes, their differences and their distances, plus **comparison scores**: the slots' signed
  differences (:func:`comparables`: offsets along x, y, z, image u, v; log-ratios of width, height, depth,
  volume) weighted by weights read off the ``<r>`` state, which has read the question. Every qualitative
  question of the data engine is the sign of one such difference, picked and signed by its wording, so
  "is A left of B?" becomes reading one score's sign instead of learning an XOR of wording and offset
  from the answers alone. The answer tokens read the slots through self-attention.
* **references are copied**: an answer names the question's objects with the placeholders ``<a>`` and
  ``<b>`` (:func:`mask_references`), and **span heads** at the slots point at the first and last word of
  each object's reference in the question (:func:`reference_spans` gives the training targets);
  decoding copies those words (:func:`fill_references`). "Which of A and B?" then costs one token choice,
  not a dozen words spelled one by one, and answers get shorter (faster to decode).
* **numbers**: an answer's number is the token ``<num>``; a **value head** on the state that emits it
  predicts the quantity's log in metres, and decoding writes it in the unit word the decoder puts after it
  (:func:`spell_number`). A regression head is far more sample-efficient than choosing among the hundreds of
  rounded number words, and an estimate is not snapped to the engine's coarse rounding (which would tie
  ranks along an approach).
* **decoding**: the prompt is run once, then one token at a time with a key/value cache; greedy when
  ``temperature`` is 0, else sampled from a seeded generator; an answer ends at ``<eos>`` or after a token
  that ended every training answer (``final_tokens``: the full stop), which saves a step. The image's
  keys and values are computed once per image however many questions ask about it.

:func:`mask_references`, :func:`reference_spans`, :func:`fill_references` and :func:`spell_number` are
the tokenizer's (:mod:`~spatialvlm_ros.vlm.compact.tokenizer`).

A weights folder holds ``model.safetensors`` (float32 tensors), ``model_config.json``
(:class:`CompactModelConfig`), ``tokenizer.json`` (the vocabulary, in id order) and, when written by
training, ``training_config.json``; :func:`save_weights` writes one, :func:`load_weights` reads one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.vlm.compact import MODEL_CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from spatialvlm_ros.vlm.compact.tokenizer import EOS_ID, NUM_ID, PAD_ID, REL_ID, SPECIALS, WordTokenizer

#: Attributes the slots are trained to read per object: scene-frame box centre x, y, z, the box's width,
#: height and depth (metres), and the pixel centre u, v (fractions of the image width and height).
ATTRIBUTES = ("x_m", "y_m", "z_m", "width_m", "height_m", "depth_m", "u", "v")
#: The attribute head's unit per attribute (its outputs are the attributes divided by these).
ATTRIBUTE_SCALE = (0.1, 0.1, 0.1, 0.02, 0.02, 0.02, 0.05, 0.05)
#: The signed differences of A and B the relation slot compares (:func:`comparables`): every relation of the
#: data engine is the sign of one of them (position offsets along x, y, z; size log-ratios); image u, v too.
COMPARABLES = ("dx", "dy", "dz", "log_width", "log_height", "log_depth", "log_volume", "du", "dv")
#: Question-weighted comparison scores the relation slot receives.
COMPARISONS = 8


@dataclass(frozen=True)
class CompactModelConfig:
    """Sizes of :class:`CompactSpatialModel`.

    Attributes:
        vocab_size: tokenizer vocabulary size.
        image_width: input width after resizing, pixels (a multiple of 8).
        image_height: input height after resizing, pixels (a multiple of 8).
        d_model: token width.
        n_heads: attention heads.
        image_layers: transformer layers over the image tokens.
        text_layers: decoder layers (self-attention, cross-attention, MLP).
        mlp_ratio: MLP hidden width / ``d_model``.
        max_len: longest token sequence (prompt + answer).
        final_tokens: tokens that ended every training answer they occurred in (the full stop, in the data
            engine's answers): decoding stops after one instead of spending a step on ``<eos>``.
    """

    vocab_size: int
    image_width: int = 128
    image_height: int = 96
    d_model: int = 128
    n_heads: int = 4
    image_layers: int = 1
    text_layers: int = 3
    mlp_ratio: int = 4
    max_len: int = 160
    final_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "final_tokens", tuple(int(t) for t in self.final_tokens))  # JSON gives a list
        checks = (("vocab_size", self.vocab_size > len(SPECIALS)),
                  ("image_width", self.image_width >= 8 and self.image_width % 8 == 0),
                  ("image_height", self.image_height >= 8 and self.image_height % 8 == 0),
                  ("d_model", self.d_model >= 8 and self.d_model % self.n_heads == 0),
                  ("n_heads", self.n_heads >= 1), ("image_layers", self.image_layers >= 0),
                  ("text_layers", self.text_layers >= 1), ("mlp_ratio", self.mlp_ratio >= 1),
                  ("max_len", self.max_len >= 8),
                  ("final_tokens", all(len(SPECIALS) <= t < self.vocab_size for t in self.final_tokens)))
        for key, ok in checks:
            if not ok:
                raise ConfigError(f"compact VLM {key}: bad value {getattr(self, key)!r}")

    @property
    def pointer_after(self) -> int:
        """The decoder layer (0-based) after which the pointer attends.

        The middle one, so the layers before it can read the question and those after it use what it found.
        """
        return (self.text_layers - 1) // 2

    @property
    def image_tokens(self) -> int:
        """Patch tokens per image."""
        return (self.image_width // 8) * (self.image_height // 8)


def comparables(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(M, len(COMPARABLES)) signed differences A - B of two (M, len(ATTRIBUTES)) attribute rows (head units).

    Offsets stay in :data:`ATTRIBUTE_SCALE` units; sizes become log-ratios (floored at 5 mm, so a wild
    prediction cannot take the log of a negative size), scaled so that 1 is a ratio of e^0.3 (about 1.35).

    Example:
        >>> a = torch.tensor([[1.0, 2.0, 0.0, 3.0, 3.0, 3.0, 0.0, 0.0]])
        >>> b = torch.tensor([[0.0, 2.0, 0.0, 3.0, 6.0, 3.0, 0.0, 0.0]])
        >>> [round(v, 2) for v in comparables(a, b)[0].tolist()]
        [1.0, 0.0, 0.0, 0.0, -2.31, 0.0, -2.31, 0.0, 0.0]
    """
    scale = a.new_tensor(ATTRIBUTE_SCALE[3:6])
    log_a = torch.log((a[:, 3:6] * scale).clamp(min=0.005))
    log_b = torch.log((b[:, 3:6] * scale).clamp(min=0.005))
    sizes = torch.cat([log_a - log_b, (log_a - log_b).sum(dim=-1, keepdim=True)], dim=-1) / 0.3
    return torch.cat([a[:, :3] - b[:, :3], sizes, a[:, 6:8] - b[:, 6:8]], dim=-1)


class _Attention(nn.Module):
    """Multi-head attention with an optional key/value cache for incremental decoding."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, heads, N, d/heads) keys and values of ``x``."""
        k, v = self.kv(x).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], causal: bool = False,
                key_padding: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from ``x`` (B, N, d) to ``kv``; ``key_padding`` (B, M) is True where a key is padding."""
        q = self._split(self.q(x))
        mask = None
        if key_padding is not None:
            mask = ~key_padding[:, None, None, :]
        if causal and x.shape[1] > 1:
            # Queries are the last N positions of the keys (a cache may hold earlier ones).
            n, m = x.shape[1], kv[0].shape[2]
            tri = torch.ones(n, m, dtype=torch.bool, device=x.device).tril(m - n)
            mask = tri if mask is None else mask & tri
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
        b, _, n, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class _Mlp(nn.Sequential):
    def __init__(self, d_model: int, ratio: int) -> None:
        super().__init__(nn.Linear(d_model, ratio * d_model), nn.GELU(), nn.Linear(ratio * d_model, d_model))


class _EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ratio: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = _Attention(d_model, n_heads)
        self.mlp = _Mlp(d_model, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, self.attn.keys_values(h))
        return x + self.mlp(self.norm2(x))


class _DecoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ratio: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.self_attn = _Attention(d_model, n_heads)
        self.cross_attn = _Attention(d_model, n_heads)
        self.mlp = _Mlp(d_model, ratio)

    def forward(self, x: torch.Tensor, image_kv: tuple[torch.Tensor, torch.Tensor],
                cache: list[torch.Tensor] | None = None, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        x = x + self.self_attn(h, (k, v), causal=True, key_padding=key_padding)
        x = x + self.cross_attn(self.norm2(x), image_kv)
        return x + self.mlp(self.norm3(x))


class _Pointer(nn.Module):
    """One-head attention from the text to the image whose weights are exposed (and supervised at the slots)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def keys_values(self, image_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P, d) keys and values of the image tokens."""
        k, v = self.kv(image_tokens).chunk(2, dim=-1)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + what it points at, pointer logits (B, N, P))."""
        logits = self.q(self.norm(x)) @ kv[0].transpose(1, 2) / math.sqrt(x.shape[-1])
        return x + self.out(logits.softmax(dim=-1) @ kv[1]), logits


@dataclass(frozen=True, eq=False)
class ImageContext:
    """What the decoder reads of a batch of images: each layer's cross-attention keys and values, the pointer's."""

    cross: list[tuple[torch.Tensor, torch.Tensor]]
    pointer: tuple[torch.Tensor, torch.Tensor]

    def select(self, index: torch.Tensor | None) -> "ImageContext":
        """The context of ``images[index]`` (one row per sequence); ``None`` keeps it as it is."""
        if index is None:
            return self
        return ImageContext([(k[index], v[index]) for k, v in self.cross],
                            (self.pointer[0][index], self.pointer[1][index]))


@dataclass(frozen=True, eq=False)
class ModelOutput:
    """The model's outputs per token position.

    Attributes:
        logits: (B, N, V) next-token logits.
        log_value: (B, N) the value head's log-metres.
        attributes: (B, N, len(ATTRIBUTES)) the attribute head, in :data:`ATTRIBUTE_SCALE` units.
        pointer: (B, N, P) the pointer's logits over the image patches.
        span_start: (B, N, N) per position, logits over the positions of where the reference it stands for
            starts (read at the slots; see :func:`reference_spans`).
        span_end: (B, N, N) likewise, where it ends. (With a key/value cache, the keys are only the new
            positions: the slots' spans are read in the prompt's pass.)
        holds: (B, N) at each ``<r>``, the logit that the relation the question asks about holds for A and B
            ("A is left of B", "A is bigger than B"; the first comparison score); 0 elsewhere.
    """

    logits: torch.Tensor
    log_value: torch.Tensor
    attributes: torch.Tensor
    pointer: torch.Tensor
    span_start: torch.Tensor
    span_end: torch.Tensor
    holds: torch.Tensor


class Generation(NamedTuple):
    """One decoded answer.

    Attributes:
        ids: the answer's token ids, without ``<eos>``.
        values: the value in metres of each ``<num>`` in it, in order.
        spans: the question pieces (first, last) each of ``<a>`` and ``<b>`` stands for.
        centres: the pixel centre (u, v) the attribute head reads for ``<a>`` and ``<b>``, fractions of the
            model's input image (where the second look crops).
    """

    ids: list[int]
    values: list[float]
    spans: list[tuple[int, int]]
    centres: Sequence[tuple[float, float]] = ()


class CompactSpatialModel(nn.Module):
    """Image encoder + causal text decoder with cross-attention, pointer and heads (see the module docstring).

    Args:
        config: the sizes.

    Example:
        >>> model = CompactSpatialModel(CompactModelConfig(vocab_size=20, d_model=16, n_heads=2, text_layers=1))
        >>> images = torch.zeros(2, 96, 128, 3, dtype=torch.uint8)
        >>> out = model(images, torch.ones(2, 7, dtype=torch.long))
        >>> [tuple(t.shape) for t in (out.logits, out.log_value, out.attributes, out.pointer, out.span_start)]
        [(2, 7, 20), (2, 7), (2, 7, 8), (2, 7, 192), (2, 7, 7)]
    """

    def __init__(self, config: CompactModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        widths = (3, d // 4, d // 2, d)
        convs: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            convs += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GELU()]
        convs += [nn.Conv2d(d, d, 3, padding=1)]
        self.stem = nn.Sequential(*convs)
        self.image_pos = nn.Parameter(torch.zeros(1, config.image_tokens, d))
        self.image_layers = nn.ModuleList(_EncoderLayer(d, config.n_heads, config.mlp_ratio)
                                          for _ in range(config.image_layers))
        self.image_norm = nn.LayerNorm(d)
        self.embed = nn.Embedding(config.vocab_size, d)
        self.text_pos = nn.Parameter(torch.zeros(1, config.max_len, d))
        self.layers = nn.ModuleList(_DecoderLayer(d, config.n_heads, config.mlp_ratio)
                                    for _ in range(config.text_layers))
        self.pointer = _Pointer(d)
        self.attribute_head = nn.Linear(d, len(ATTRIBUTES))
        # Slot a's and b's attributes, their differences and their distances (image and scene) -> <r>.
        self.relation = nn.Sequential(nn.Linear(3 * len(ATTRIBUTES) + 2, d), nn.GELU(), nn.Linear(d, d))
        # The question (read off the <r> state) weighs the slots' signed differences into COMPARISONS scores.
        self.comparison_weights = nn.Linear(d, COMPARISONS * len(COMPARABLES))
        self.comparison_out = nn.Linear(2 * COMPARISONS, d)
        self.span_query = nn.Linear(d, 2 * d)
        self.span_key = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.value_head = nn.Linear(d, 1)
        nn.init.normal_(self.image_pos, std=0.02)
        nn.init.normal_(self.text_pos, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB at the configured size -> (B, image_tokens, d_model) image tokens."""
        x = images.permute(0, 3, 1, 2).float().contiguous() / 127.5 - 1.0   # contiguous: ~20% faster convs
        x = self.stem(x).flatten(2).transpose(1, 2) + self.image_pos
        for layer in self.image_layers:
            x = layer(x)
        return self.image_norm(x)

    def image_context(self, image_tokens: torch.Tensor) -> ImageContext:
        """The keys and values every decoder layer and the pointer read of ``image_tokens``."""
        return ImageContext([layer.cross_attn.keys_values(image_tokens) for layer in self.layers],
                            self.pointer.keys_values(image_tokens))

    def decode(self, ids: torch.Tensor, context: ImageContext, positions: torch.Tensor | None = None,
               caches: list[list[torch.Tensor]] | None = None,
               key_padding: torch.Tensor | None = None) -> ModelOutput:
        """The outputs for ``ids`` (B, N) at ``positions`` (B, N; default ``0 ... N - 1`` in every row)."""
        if positions is None:
            positions = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)
        if int(positions.max()) >= self.config.max_len:
            raise InputError(f"compact VLM: {int(positions.max()) + 1} tokens exceed max_len {self.config.max_len}")
        x = self.embed(ids) + self.text_pos[0, positions]
        pointer = attributes = holds = torch.empty(0)
        for i, layer in enumerate(self.layers):
            x = layer(x, context.cross[i], None if caches is None else caches[i], key_padding)
            if i == self.config.pointer_after:
                x, pointer = self.pointer(x, context.pointer)
                attributes = self.attribute_head(x)
                x, holds = self._relate(ids, x, attributes)
        h = self.norm(x)
        start, end = self.span_query(h).chunk(2, dim=-1)
        keys = self.span_key(h).transpose(1, 2) / math.sqrt(h.shape[-1])
        return ModelOutput(h @ self.embed.weight.T, self.value_head(h)[..., 0], attributes, pointer,
                           start @ keys, end @ keys, holds)

    def _relate(self, ids: torch.Tensor, x: torch.Tensor,
                attributes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add to each ``<r>`` state what the two slots before it read; also return :attr:`ModelOutput.holds`."""
        holds = x.new_zeros(ids.shape)
        rows, cols = (ids == REL_ID).nonzero(as_tuple=True)
        if len(rows) == 0 or int(cols.min()) < 2:
            return x, holds
        a, b = attributes[rows, cols - 2], attributes[rows, cols - 1]
        scene = (b[:, :3] - a[:, :3]).norm(dim=-1, keepdim=True)   # attributes are in ATTRIBUTE_SCALE units
        image = (b[:, 6:8] - a[:, 6:8]).norm(dim=-1, keepdim=True)
        features = torch.cat([a, b, b - a, scene, image], dim=-1)
        # Every qualitative question is the sign of one signed difference of A and B ("is A left of B": A's y
        # minus B's; "which is bigger": the log volume ratio), picked and signed by the question. A product of
        # the question and the offset, which an additive embedding leaves the later layers to learn as an XOR
        # (slowly); here the question's weights multiply the differences directly. Training supervises the
        # first score with whether the asked relation holds, so the answer reads one clean sign.
        state = x[rows, cols]
        weights = self.comparison_weights(state).view(len(rows), COMPARISONS, len(COMPARABLES))
        scores = (weights * comparables(a, b)[:, None, :]).sum(dim=-1)
        compared = self.comparison_out(torch.cat([scores, torch.tanh(scores)], dim=-1))
        return (x.index_put((rows, cols), state + self.relation(features) + compared),
                holds.index_put((rows, cols), scores[:, 0]))

    def forward(self, images: torch.Tensor, ids: torch.Tensor, image_index: torch.Tensor | None = None,
                key_padding: torch.Tensor | None = None) -> ModelOutput:
        """Teacher-forced outputs for ``ids`` about ``images[image_index]``.

        Args:
            images: (I, H, W, 3) uint8 RGB; each is encoded once however many sequences ask about it.
            ids: (B, N) token ids, ``[BOS] question [SEP] <a> <b> <r> answer [EOS]`` right-padded with 0.
            image_index: (B,) which image each sequence asks about (default: ``arange(B)``).
            key_padding: (B, N) True at padding (default: where ``ids`` is 0).
        """
        context = self.image_context(self.encode_images(images)).select(image_index)
        return self.decode(ids, context, key_padding=ids == PAD_ID if key_padding is None else key_padding)

    @torch.inference_mode()
    def generate(self, images: torch.Tensor, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 temperature: float = 0.0, generator: torch.Generator | None = None,
                 image_index: torch.Tensor | None = None) -> list[Generation]:
        """Decode the answers to ``prompts`` (each ``[BOS] question [SEP] <a> <b> <r>``) about ``images[image_index]``.

        Returns a :class:`Generation` per prompt. ``image_index`` (one entry per prompt) defaults to one image
        per prompt. Prompts of different lengths are left-padded (masked) so that the batch decodes in step;
        each row keeps the positions it was trained with (its ``<bos>`` at 0). A row ends at ``<eos>`` or
        after one of the config's ``final_tokens``.
        """
        n = max(len(p) for p in prompts)
        max_new_tokens = min(max_new_tokens, self.config.max_len - n)
        ids = torch.zeros(len(prompts), n, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, n - len(prompt):] = torch.as_tensor(prompt, dtype=torch.long)
        shift = torch.tensor([[n - len(p)] for p in prompts])
        padding = torch.arange(n) < shift     # not ids == PAD_ID: the padding is what was added, whatever was asked
        positions = (torch.arange(n) - shift).clamp(min=0)
        context = self.image_context(self.encode_images(images)).select(image_index)
        caches: list[list[torch.Tensor]] = [[] for _ in self.layers]
        out = self.decode(ids, context, positions, caches, padding)
        logits, log_value = out.logits[:, -1], out.log_value[:, -1]
        scale = torch.tensor(ATTRIBUTE_SCALE[-2:])
        centres = (out.attributes[:, n - 3:n - 1, -2:] * scale).tolist()   # slots <a> <b>, attributes u, v
        answers = [Generation([], [], _spans(out, row, int(shift[row]), n), [tuple(c) for c in centres[row]])
                   for row in range(len(prompts))]
        done = torch.zeros(len(prompts), dtype=torch.bool)
        final = torch.tensor(self.config.final_tokens, dtype=torch.long)
        for step in range(max_new_tokens):
            if temperature > 0:
                nxt = torch.multinomial(F.softmax(logits / temperature, dim=-1), 1, generator=generator)[:, 0]
            else:
                nxt = logits.argmax(dim=-1)
            for row in (~done).nonzero()[:, 0].tolist():
                token = int(nxt[row])
                if token == NUM_ID:  # the state that chose <num> also says its value
                    answers[row].values.append(math.exp(float(log_value[row])))
                if token != EOS_ID:
                    answers[row].ids.append(token)
            done |= (nxt == EOS_ID) | torch.isin(nxt, final)
            if bool(done.all()) or step + 1 == max_new_tokens:
                break
            padding = torch.cat([padding, torch.zeros(len(prompts), 1, dtype=torch.bool)], dim=1)
            positions = n + step - shift
            out = self.decode(nxt[:, None], context, positions, caches, padding)
            logits, log_value = out.logits[:, -1], out.log_value[:, -1]
        return answers


def _spans(out: ModelOutput, row: int, shift: int, n: int) -> list[tuple[int, int]]:
    """The question pieces (first, last) the slots ``<a>`` and ``<b>`` of a left-padded prompt point at.

    The prompt's question occupies positions ``shift + 1 ... n - 5`` (after ``<bos>``, before ``<sep> <a> <b>
    <r>``); the end is searched at or after the start.
    """
    first, last = shift + 1, n - 5
    if last < first:  # an empty question
        return []
    spans = []
    for slot in (n - 3, n - 2):
        start = first + int(out.span_start[row, slot, first:last + 1].argmax())
        end = start + int(out.span_end[row, slot, start:last + 1].argmax())
        spans.append((start - first, end - first))
    return spans


def same_aspect(image_size: tuple[int, int], width: int, height: int) -> bool:
    """Whether an (H, W) image has the aspect ``width`` : ``height`` to within a pixel's rounding."""
    h, w = image_size
    return abs(w * height - h * width) <= max(width, height)


def fit_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (height, width, 3) uint8, keeping the frame's vertical field of view.

    Every training image has the model's aspect (4:3) and a vertical field of view the model learned metric
    scale against, so a frame of another shape keeps its vertical extent and its pixels square: a wider one
    (16:9) loses equal strips at its left and right (centre crop), a narrower one (1:1, portrait) gets its
    edge pixels repeated at both sides. Then it is area-averaged (the training images' resampling) to the
    model's size. Stretching instead distorts every horizontal length and read 16:9 and portrait frames worse
    on held-out scenes (see the README, "Other image shapes"). A frame of the model's aspect is only resized.

    Example:
        >>> fit_image(np.zeros((240, 427, 3), np.uint8), 128, 96).shape   # 16:9: the middle 320 columns
        (96, 128, 3)
    """
    from PIL import Image

    h, w = image.shape[:2]
    if not same_aspect((h, w), width, height):
        fitted = round(h * width / height)
        if fitted < w:
            left = (w - fitted) // 2
            image = image[:, left:left + fitted]
        else:
            left = (fitted - w) // 2
            image = np.pad(image, ((0, 0), (left, fitted - w - left), (0, 0)), mode="edge")
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.BOX))


def resize_input(model: CompactSpatialModel, width: int, height: int) -> CompactSpatialModel:
    """``model`` at another input size: every weight kept, the image position embeddings resampled.

    The conv stem works at any size; only the learned position embedding of each patch is tied to the
    grid, so it is interpolated (bilinear) from the old ``(H/8) x (W/8)`` grid to the new one. Fine-tuning
    at a higher resolution from a model trained at a lower one starts from here (the reach env renders
    160x120; the first models saw 128x96).

    Example:
        >>> small = CompactSpatialModel(CompactModelConfig(vocab_size=20, d_model=16, n_heads=2, text_layers=1))
        >>> resize_input(small, 160, 120).image_pos.shape
        torch.Size([1, 300, 16])
    """
    old = model.config
    config = dataclasses.replace(old, image_width=width, image_height=height)
    resized = CompactSpatialModel(config)
    state = model.state_dict()
    grid = state["image_pos"].reshape(1, old.image_height // 8, old.image_width // 8, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(height // 8, width // 8), mode="bilinear", align_corners=True)
    state["image_pos"] = grid.permute(0, 2, 3, 1).reshape(1, config.image_tokens, -1)
    resized.load_state_dict(state)
    return resized.train(model.training)


def extend_vocabulary(model: CompactSpatialModel, vocab_size: int) -> CompactSpatialModel:
    """``model`` reading ``vocab_size`` tokens: the old ones keep their embeddings, new ones start as the mean word.

    A new word (appended by :meth:`WordTokenizer.extended`) starts as the average of the model's word embeddings
    plus a little seeded noise (so two new words differ), i.e. as a word the model has no opinion about; the
    output projection is tied to the embedding, so it grows with it. Fine-tuning on data that uses the words
    teaches them.

    Example:
        >>> small = CompactSpatialModel(CompactModelConfig(vocab_size=20, d_model=16, n_heads=2, text_layers=1))
        >>> extend_vocabulary(small, 23).embed.weight.shape
        torch.Size([23, 16])
    """
    old = model.config
    if vocab_size < old.vocab_size:
        raise ConfigError(f"compact VLM: cannot shrink a vocabulary of {old.vocab_size} to {vocab_size}")
    extended = CompactSpatialModel(dataclasses.replace(old, vocab_size=vocab_size))
    state = model.state_dict()
    state["embed.weight"] = extended_embedding(state["embed.weight"], vocab_size)
    extended.load_state_dict(state)
    return extended.train(model.training)


def extended_embedding(embedding: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(V, d) token embedding -> (vocab_size, d): new rows are the mean word plus seeded noise (see above)."""
    words = embedding[len(SPECIALS):]
    noise = torch.randn(vocab_size - len(embedding), words.shape[1], generator=torch.Generator().manual_seed(0))
    return torch.cat([embedding, words.mean(dim=0) + 0.02 * noise.to(embedding.dtype)])


def save_weights(model: CompactSpatialModel, tokenizer: WordTokenizer, folder: Path) -> None:
    """Write ``model.safetensors``, ``model_config.json`` and ``tokenizer.json`` into ``folder`` (created)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    (folder / MODEL_CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(model.config), indent=2) + "\n")
    tokenizer.save(folder / TOKENIZER_FILE)


def load_weights(folder: Path) -> tuple[CompactSpatialModel, WordTokenizer]:
    """The model (eval mode, CPU) and tokenizer in ``folder``.

    Raises:
        ConfigError: no such folder, a missing file, or weights that do not fit the stated config
            (the message names the folder).
    """
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    missing = [f for f in (WEIGHTS_FILE, MODEL_CONFIG_FILE, TOKENIZER_FILE) if not (folder / f).is_file()]
    if not folder.is_dir() or missing:
        what = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        raise ConfigError(f"compact VLM weights folder {str(folder)!r} {what} (train one with 'spatialvlm train')")
    try:
        config = CompactModelConfig(**json.loads((folder / MODEL_CONFIG_FILE).read_text()))
        tokenizer = WordTokenizer.load(folder / TOKENIZER_FILE)
        model = CompactSpatialModel(config)
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except (OSError, ValueError, TypeError, RuntimeError) as err:
        raise ConfigError(f"compact VLM weights folder {str(folder)!r}: {err}") from err
    if len(tokenizer) != config.vocab_size:
        raise ConfigError(f"compact VLM weights folder {str(folder)!r}: tokenizer has {len(tokenizer)} tokens, "
                          f"the model {config.vocab_size}")
    return model.eval(), tokenizer


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
