"""A compact in-house spatial VLM: a few million parameters, trained on the data engine's VQA, run on a CPU.

Registered as the VLM backend ``"compact"``. It answers the data engine's questions in the data engine's
words, so :func:`~spatialvlm_ros.vlm.parsing.parse_answer` reads its quantitative answers like the
engine's own.

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

Tokenizer (:class:`WordTokenizer`): deterministic and word-level. A text is split into pieces of the
form ``" ?word"``, ``" ?number"``, ``" ?<special>"`` or ``" ?symbol"`` (the leading space belongs to the
piece, as in GPT-2), so ``decode(encode(text)) == text`` for any text made of known pieces separated by
single spaces. The vocabulary is every piece of the training questions and answers (numbers in answers
become ``<num>``) plus the distance questions of :mod:`~spatialvlm_ros.vlm.prompts`; unknown pieces become
``<unk>``.

A weights folder holds ``model.safetensors`` (float32 tensors), ``model_config.json``
(:class:`CompactModelConfig`), ``tokenizer.json`` (the vocabulary, in id order) and, when written by
training, ``training_config.json``. Without a folder named, the packaged one
(:data:`PACKAGED_WEIGHTS`) is used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.vlm.base import VLMAnswer, VLMConfig, VLMError, ask_in_batches, register_vlm
from spatialvlm_ros.vlm.parsing import METRES_PER_UNIT, UNIT_ALIASES, parse_answer

logger = logging.getLogger(__name__)

#: The weights shipped with the package (present only when a trained model was good enough to ship).
PACKAGED_WEIGHTS = Path(__file__).resolve().parent / "weights"
#: File names inside a weights folder.
WEIGHTS_FILE, MODEL_CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "model_config.json", "tokenizer.json"
#: Special tokens, always the first ids in this order: padding, unknown, the prompt's frame, the number
#: placeholder, the two referent slots and the relation slot.
SPECIALS = PAD, UNK, BOS, SEP, EOS, NUM, REF_A, REF_B, REL = (
    "<pad>", "<unk>", "<bos>", "<sep>", "<eos>", "<num>", "<a>", "<b>", "<r>")
PAD_ID, UNK_ID, BOS_ID, SEP_ID, EOS_ID, NUM_ID, REF_A_ID, REF_B_ID, REL_ID = range(len(SPECIALS))
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

_PIECE = re.compile(r" ?(?:<[a-z]+>|[A-Za-z]+|\d+(?:\.\d+)?|[^\sA-Za-z\d])")
_SPACES = re.compile(r"\s+")
_ANSWER_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)")
_UNIT_OF_WORD = {alias: unit for unit, aliases in UNIT_ALIASES.items() for alias in aliases}


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WordTokenizer:
    """Word-level tokenizer with a fixed vocabulary (see the module docstring for the rules).

    Attributes:
        tokens: the vocabulary in id order; the first five are :data:`SPECIALS`.

    Example:
        >>> tok = WordTokenizer.build(["How far is the red can?", "About 20 centimeters."])
        >>> ids = tok.encode("About 20 centimeters.")
        >>> tok.decode(ids)
        'About 20 centimeters.'
        >>> tok.decode(tok.encode("How far is the blue can?"))
        'How far is the<unk> can?'
        >>> tok.decode(tok.encode(mask_numbers("About 20 centimeters.")))
        'About <num> centimeters.'
    """

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokens[:len(SPECIALS)] != SPECIALS or len(set(self.tokens)) != len(self.tokens):
            raise ConfigError(f"tokenizer: the vocabulary must start with {list(SPECIALS)} and have no duplicates")
        # A frozen dataclass: the lookup table is derived, not a field.
        object.__setattr__(self, "_ids", {t: i for i, t in enumerate(self.tokens)})

    @staticmethod
    def pieces(text: str) -> list[str]:
        """Split ``text`` (whitespace runs collapsed to one space, ends stripped) into pieces."""
        return _PIECE.findall(_SPACES.sub(" ", text.strip()))

    @classmethod
    def build(cls, texts: Iterable[str]) -> "WordTokenizer":
        """The vocabulary of every piece in ``texts``, sorted, after the special tokens."""
        found = {p for text in texts for p in cls.pieces(text) if p.strip() not in SPECIALS}
        return cls(SPECIALS + tuple(sorted(found)))

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        """Id of ``token`` (``<unk>``'s when unknown)."""
        return self._ids.get(token, UNK_ID)  # type: ignore[attr-defined]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens."""
        # A special token is one id with or without the space before it.
        return [self.id(p.strip() if p.strip() in SPECIALS else p) for p in self.pieces(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special tokens are dropped except ``<unk>`` and the placeholders ``<num> <a> <b>``."""
        skip = set(range(len(SPECIALS))) - {UNK_ID, NUM_ID, REF_A_ID, REF_B_ID}
        text = "".join(self.tokens[i] for i in ids if i not in skip)
        # A placeholder is written as a word of its own (a number or a reference replaces it).
        return re.sub(r"(?<=\S)(<num>|<a>|<b>)", r" \1", text).strip()

    def save(self, path: Path) -> None:
        """Write the vocabulary as JSON (``{"tokens": [...]}``, id order)."""
        Path(path).write_text(json.dumps({"tokens": list(self.tokens)}, ensure_ascii=False, indent=0) + "\n")

    @classmethod
    def load(cls, path: Path) -> "WordTokenizer":
        """Read a vocabulary written by :meth:`save`.

        Raises:
            ConfigError: unreadable or malformed file.
        """
        try:
            return cls(tuple(json.loads(Path(path).read_text())["tokens"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"compact VLM tokenizer {str(path)!r}: {err}") from err


def mask_numbers(answer: str) -> str:
    """The answer with each number replaced by ``<num>`` (how the decoder writes numbers).

    Example:
        >>> mask_numbers("The red can is 1.5 meters tall.")
        'The red can is <num> meters tall.'
    """
    return _ANSWER_NUMBER.sub(NUM, answer)


def spell_number(value_m: float, unit_word: str | None) -> str:
    """``value_m`` written as a number in the unit ``unit_word`` names (metres when it names none).

    Two significant figures from 1 up to 10 units, whole units above, two decimals below 1 unit.

    Example:
        >>> spell_number(0.234, "centimeters"), spell_number(0.234, "meters"), spell_number(0.9144, "feet")
        ('23', '0.23', '3.0')
    """
    unit = _UNIT_OF_WORD.get((unit_word or "").lower(), "m")
    x = value_m / METRES_PER_UNIT[unit]
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def fill_numbers(text: str, values_m: Sequence[float]) -> str:
    """Replace the ``<num>`` placeholders of a decoded answer by ``values_m``, each in the unit after it.

    A placeholder without a value (none predicted) stays, so the answer parses as "no estimate".

    Example:
        >>> fill_numbers("About <num> centimeters.", [0.2])
        'About 20 centimeters.'
    """
    values = iter(values_m)

    def spell(match: re.Match[str]) -> str:
        value, word = next(values, None), match.group(1)
        if value is None:
            return match.group(0)
        if word and word.lower() in _UNIT_OF_WORD:
            return f"{spell_number(value, word)} {word}"
        return f"{spell_number(value, None)} meters" + (f" {word}" if word else "")

    return re.sub(r"<num>(?: ([A-Za-z]+))?", spell, text)


def mask_references(answer: str, references: Sequence[str], copyable: Sequence[bool] = (True, True)) -> str:
    """The answer with the question's first and second object reference replaced by ``<a>`` and ``<b>``.

    The decoder writes a reference as one placeholder token and decoding copies the words from the
    question (:func:`fill_references`): "which of the two" then costs one token choice instead of copying a
    reference of up to a dozen words token by token. The longer reference is replaced first, so one that
    contains the other is not cut; the first letter matches in either case (a sentence may start with it).
    A reference that is not ``copyable`` (the question lacks it) stays spelled out, whole.

    Example:
        >>> mask_references("The red can is closer than the can on the left.", ["the can on the left", "the red can"])
        '<b> is closer than <a>.'
        >>> mask_references("The can on the left is closer than the can.", ["the can", "the can on the left"],
        ...                 copyable=(True, False))
        'The can on the left is closer than <a>.'
    """
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:   # protected from the shorter reference, restored at the end
        kept.append(match.group(0))
        return f"\0{len(kept) - 1}\0"

    for i in sorted(range(min(2, len(references))), key=lambda j: -len(references[j])):
        ref = references[i].strip()
        if ref:
            pattern = rf"(?<![\w<])[{re.escape(ref[0].upper())}{re.escape(ref[0].lower())}]{re.escape(ref[1:])}(?!\w)"
            answer = re.sub(pattern, (REF_A, REF_B)[i] if copyable[i] else keep, answer)
    return re.sub(r"\0(\d+)\0", lambda m: kept[int(m.group(1))], answer)


def reference_spans(pieces: Sequence[str], references: Sequence[str]) -> list[tuple[int, int] | None]:
    """Where each reference occurs in a question's :meth:`WordTokenizer.pieces`: (first, last) piece index.

    Pieces compare without their space and case. Each reference takes its first occurrence that does not
    overlap one the other reference took (the longer reference picks first); None where it does not occur.

    Example:
        >>> q = WordTokenizer.pieces("Which is closer, the can or the red can?")
        >>> reference_spans(q, ["the red can", "the can"])
        [(7, 9), (4, 5)]
    """
    words = [p.strip().lower() for p in pieces]
    spans: list[tuple[int, int] | None] = [None] * len(references)
    taken: set[int] = set()
    for i in sorted(range(len(references)), key=lambda j: -len(references[j])):
        ref = [p.strip().lower() for p in WordTokenizer.pieces(references[i])]
        for start in range(len(words) - len(ref) + 1) if ref else ():
            span = range(start, start + len(ref))
            if words[start:start + len(ref)] == ref and not taken.intersection(span):
                spans[i] = (start, start + len(ref) - 1)
                taken.update(span)
                break
    return spans


def fill_references(text: str, pieces: Sequence[str], spans: Sequence[tuple[int, int] | None]) -> str:
    """Replace the ``<a>``/``<b>`` placeholders of a decoded answer by the question's words at ``spans``.

    ``pieces`` are the question's :meth:`WordTokenizer.pieces` (so words the vocabulary lacks are copied
    too); the answer's first letter is capitalised. A placeholder without a span stays as it is.

    Example:
        >>> q = WordTokenizer.pieces("Which is closer, the can or the red can?")
        >>> fill_references("<b> is closer than <a>.", q, [(4, 5), (7, 9)])
        'The red can is closer than the can.'
    """
    def copy(match: re.Match[str]) -> str:
        span = spans[0 if match.group(0) == REF_A else 1] if len(spans) >= 2 else None
        return "".join(pieces[span[0]:span[1] + 1]).strip() if span else match.group(0)

    text = re.sub(r"<a>|<b>", copy, text)
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------

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
    """

    ids: list[int]
    values: list[float]
    spans: list[tuple[int, int]]


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
        answers = [Generation([], [], _spans(out, row, int(shift[row]), n)) for row in range(len(prompts))]
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


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (height, width, 3) uint8, area-averaged (the training images' resampling)."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BOX))


def prompt_ids(tokenizer: WordTokenizer, question: str) -> list[int]:
    """``[BOS] question [SEP] <a> <b> <r>``: what the decoder reads before the answer.

    A special token typed into the question ("<r>") is read as ``<unk>``: only the frame places specials.

    Example:
        >>> tok = WordTokenizer.build(["How far?"])
        >>> prompt_ids(tok, "How far <r>?") == [BOS_ID, tok.id("How"), tok.id(" far"), UNK_ID, tok.id("?"),
        ...                                     SEP_ID, REF_A_ID, REF_B_ID, REL_ID]
        True
    """
    question_ids = [i if i >= len(SPECIALS) else UNK_ID for i in tokenizer.encode(question)]
    return [BOS_ID, *question_ids, SEP_ID, REF_A_ID, REF_B_ID, REL_ID]


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


# ---------------------------------------------------------------------------------------------
# Backend
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompactVLMOptions:
    """How the compact backend loads and decodes.

    Attributes:
        weights: weights folder ("" = :data:`PACKAGED_WEIGHTS`).
        batch_size: questions decoded together (``VLMConfig.max_concurrency``).
        max_new_tokens: answer length limit, tokens (``VLMConfig.max_tokens``; the model's ``max_len`` caps it).
        temperature: 0 = greedy, else the sampling temperature (``VLMConfig.temperature``).
        seed: seeds sampling.
        threads: torch CPU threads (0 = leave torch's setting alone).
        default_unit: unit of a bare number in an answer ("" = such answers are unparseable).
    """

    weights: str = ""
    batch_size: int = 4
    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    threads: int = 0
    default_unit: str = ""

    def __post_init__(self) -> None:
        checks = (("batch_size", self.batch_size >= 1), ("max_new_tokens", self.max_new_tokens >= 1),
                  ("temperature", self.temperature >= 0), ("threads", self.threads >= 0),
                  ("default_unit", self.default_unit in ("", *METRES_PER_UNIT)))
        for key, ok in checks:
            if not ok:
                raise ConfigError(f"compact VLM {key}: bad value {getattr(self, key)!r}")

    @classmethod
    def from_config(cls, config: VLMConfig) -> "CompactVLMOptions":
        """The options ``config`` sets (``weights`` from ``estimator.vlm.weights``, "" when the field is absent).

        Example:
            >>> CompactVLMOptions.from_config(VLMConfig(backend="compact", temperature=0.0)).temperature
            0.0
        """
        return cls(weights=config.weights, batch_size=config.max_concurrency,
                   max_new_tokens=config.max_tokens, temperature=config.temperature,
                   default_unit=config.default_unit)


@dataclass(frozen=True, eq=False)
class _Batch:
    """Model inputs of one batch: the distinct resized images, which one each prompt asks about, prompt ids."""

    images: torch.Tensor
    image_index: torch.Tensor
    prompts: list[list[int]]


class CompactVLM:
    """The compact model as a :class:`~spatialvlm_ros.vlm.base.SpatialVLM` (backend ``"compact"``).

    Args:
        model: a trained :class:`CompactSpatialModel`.
        tokenizer: its tokenizer.
        options: decoding settings.

    Example:
        >>> CompactVLM.from_options(CompactVLMOptions(weights="/no/such/folder"))
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: compact VLM weights folder '/no/such/folder' does not exist ...
    """

    name = "compact"

    def __init__(self, model: CompactSpatialModel, tokenizer: WordTokenizer,
                 options: CompactVLMOptions | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.options = options or CompactVLMOptions()
        self._generator = torch.Generator().manual_seed(self.options.seed)
        if self.options.threads:
            torch.set_num_threads(self.options.threads)

    @classmethod
    def from_options(cls, options: CompactVLMOptions) -> "CompactVLM":
        """Load ``options.weights`` (the packaged weights when empty).

        Raises:
            ConfigError: the folder is missing or unusable (the message names it).
        """
        model, tokenizer = load_weights(Path(options.weights) if options.weights else PACKAGED_WEIGHTS)
        logger.info("compact VLM: %d parameters, %d tokens, from %s", count_parameters(model), len(tokenizer),
                    options.weights or PACKAGED_WEIGHTS)
        return cls(model, tokenizer, options)

    @classmethod
    def from_config(cls, config: VLMConfig) -> "CompactVLM":
        """The backend ``estimator.vlm.backend: compact`` builds (see :meth:`CompactVLMOptions.from_config`)."""
        return cls.from_options(CompactVLMOptions.from_config(config))

    def preprocess(self, images: Sequence[np.ndarray], questions: Sequence[str]) -> _Batch:
        """Resize the images to the model's input size and tokenize ``[BOS] question [SEP]``.

        The same array object passed for several questions (the estimator asks every pair and sample about
        one frame) is resized and encoded once.

        Raises:
            InputError: an image that is not (H, W, 3) uint8, or a question longer than the model reads.
        """
        cfg = self.model.config
        arrays: list[np.ndarray] = []
        slots: dict[int, int] = {}
        index = []
        for image in images:
            if id(image) in slots:
                index.append(slots[id(image)])
                continue
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise InputError(f"image must be (H, W, 3) uint8 RGB, got {getattr(image, 'shape', None)} "
                                 f"{getattr(image, 'dtype', type(image).__name__)}")
            slots[id(image)] = len(arrays)
            index.append(len(arrays))
            arrays.append(resize_image(image, cfg.image_width, cfg.image_height))
        prompts = [prompt_ids(self.tokenizer, q) for q in questions]
        longest = max(map(len, prompts), default=0)
        if longest >= cfg.max_len:
            raise InputError(f"compact VLM: a question of {longest} tokens; this model reads at most "
                             f"{cfg.max_len - 1}")
        return _Batch(images=torch.from_numpy(np.stack(arrays)), image_index=torch.as_tensor(index), prompts=prompts)

    def _forward(self, batch: _Batch) -> list[Generation]:
        """Decode the answers' token ids, number values and reference spans (greedy or sampled)."""
        try:
            return self.model.generate(batch.images, batch.prompts, self.options.max_new_tokens,
                                       self.options.temperature, self._generator, batch.image_index)
        except RuntimeError as err:  # out of memory, a shape mismatch in a damaged checkpoint
            raise VLMError(f"compact VLM: generation failed: {err}") from err

    def postprocess(self, answers: Sequence[Generation], questions: Sequence[str],
                    latency_ms: float) -> list[VLMAnswer]:
        """Detokenize the answers, write their numbers and references in and parse the distance each states."""
        unit = self.options.default_unit or None
        texts = [fill_references(fill_numbers(self.tokenizer.decode(g.ids), g.values), WordTokenizer.pieces(q),
                                 g.spans) for g, q in zip(answers, questions)]
        return [VLMAnswer(text=t, parsed=parse_answer(t, unit), latency_ms=latency_ms) for t in texts]

    def ask(self, image: np.ndarray, question: str, depth: np.ndarray | None = None) -> VLMAnswer:
        """Answer ``question`` about ``image`` ((H, W, 3) uint8 RGB); ``depth`` is not used (RGB-only model).

        Raises:
            VLMError: generation failed.
            InputError: a bad image.
        """
        return self.ask_batch([image], [question])[0]

    def ask_batch(self, images: Sequence[np.ndarray], questions: Sequence[str],
                  depths: Sequence[np.ndarray | None] | None = None) -> list[VLMAnswer]:
        """Answer ``questions[i]`` about ``images[i]``, ``options.batch_size`` at a time; depths are not used.

        Each answer's ``latency_ms`` is the wall time of its batch.

        Raises:
            VLMError: generation failed.
            InputError: a bad image, or not as many images as questions.
        """
        return ask_in_batches(images, questions, self.options.batch_size, self._answer_batch)

    def _answer_batch(self, images: Sequence[np.ndarray], questions: Sequence[str], start: float) -> list[VLMAnswer]:
        generated = self._forward(self.preprocess(images, questions))
        return self.postprocess(generated, questions, 1e3 * (time.perf_counter() - start))


@register_vlm("compact")
def _compact_vlm(config: VLMConfig) -> CompactVLM:
    return CompactVLM.from_config(config)


def parameter_summary(model: CompactSpatialModel) -> dict[str, Any]:
    """Parameter counts of the image encoder, the text decoder and the whole model."""
    image = sum(p.numel() for name, p in model.named_parameters() if name.startswith(("stem", "image_")))
    total = count_parameters(model)
    return {"image_encoder": image, "text_decoder": total - image, "total": total}
