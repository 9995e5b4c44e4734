"""A compact in-house spatial VLM: a few million parameters, trained on the data engine's VQA, run on a CPU.

Registered as the VLM backend ``"compact"``. It answers the data engine's questions in the data engine's
words, so :func:`~spatialvlm_ros.vlm.parsing.parse_answer` reads its quantitative answers like the
engine's own.

Architecture (:class:`CompactSpatialModel`, sizes in :class:`CompactModelConfig`):

* **image encoder**: RGB only (no depth), resized to ``image_width`` x ``image_height`` (128 x 96), scaled
  to [-1, 1]; four 3x3 conv blocks (BatchNorm-free, GELU) with strides 2, 2, 2, 1 -> a grid of
  ``(H/8) x (W/8)`` patch features (12 x 16 = 192 tokens), plus learned 2D position embeddings, then
  ``image_layers`` transformer encoder layers so every patch sees the whole scene (depth cues are global).
* **text decoder**: a causal transformer over ``[BOS] question [SEP] answer [EOS]``; every layer has
  self-attention, cross-attention to the image tokens, and an MLP (pre-norm). The output projection is
  tied to the token embedding. Training is teacher-forced on the answer tokens only
  (:mod:`~spatialvlm_ros.vlm.train`).
* **decoding**: the prompt is run once, then one token at a time with a key/value cache; greedy when
  ``temperature`` is 0, else sampled from a seeded generator. The image's cross-attention keys and values
  are computed once per question.

Tokenizer (:class:`WordTokenizer`): deterministic and word-level. A text is split into pieces of the
form ``" ?word"``, ``" ?number"`` or ``" ?symbol"`` (the leading space belongs to the piece, as in
GPT-2), so ``decode(encode(text)) == text`` for any text made of known pieces separated by single
spaces. The vocabulary is every piece of the training questions and answers (sorted; numbers such as
``"1.5"`` are single pieces because the engine's rounding produces a small, closed set) plus the
distance questions of :mod:`~spatialvlm_ros.vlm.prompts`; unknown pieces become ``<unk>``.

A weights folder holds ``model.safetensors`` (float32 tensors), ``model_config.json``
(:class:`CompactModelConfig`), ``tokenizer.json`` (the vocabulary, in id order) and, when written by
training, ``training_config.json``. Without a folder named, the packaged one
(:data:`PACKAGED_WEIGHTS`) is used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.vlm.base import VLMAnswer, VLMConfig, VLMError, ask_in_batches, register_vlm
from spatialvlm_ros.vlm.parsing import METRES_PER_UNIT, parse_answer

logger = logging.getLogger(__name__)

#: The weights shipped with the package (present only when a trained model was good enough to ship).
PACKAGED_WEIGHTS = Path(__file__).resolve().parent / "weights"
#: File names inside a weights folder.
WEIGHTS_FILE, MODEL_CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "model_config.json", "tokenizer.json"
#: Special tokens, always the first ids in this order.
PAD, UNK, BOS, SEP, EOS = "<pad>", "<unk>", "<bos>", "<sep>", "<eos>"
SPECIALS = (PAD, UNK, BOS, SEP, EOS)

_PIECE = re.compile(r" ?(?:[A-Za-z]+|\d+(?:\.\d+)?|[^\sA-Za-z\d])")
_SPACES = re.compile(r"\s+")


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
        found = {p for text in texts for p in cls.pieces(text)}
        return cls(SPECIALS + tuple(sorted(found - set(SPECIALS))))

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        """Id of ``token`` (``<unk>``'s when unknown)."""
        return self._ids.get(token, 1)  # type: ignore[attr-defined]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens."""
        return [self.id(p) for p in self.pieces(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; padding and the other special tokens except ``<unk>`` are dropped."""
        skip = {0, 2, 3, 4}
        return "".join(self.tokens[i] for i in ids if i not in skip).strip()

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
    """

    vocab_size: int
    image_width: int = 128
    image_height: int = 96
    d_model: int = 128
    n_heads: int = 4
    image_layers: int = 1
    text_layers: int = 4
    mlp_ratio: int = 4
    max_len: int = 160

    def __post_init__(self) -> None:
        checks = (("vocab_size", self.vocab_size > len(SPECIALS)),
                  ("image_width", self.image_width >= 8 and self.image_width % 8 == 0),
                  ("image_height", self.image_height >= 8 and self.image_height % 8 == 0),
                  ("d_model", self.d_model >= 8 and self.d_model % self.n_heads == 0),
                  ("n_heads", self.n_heads >= 1), ("image_layers", self.image_layers >= 0),
                  ("text_layers", self.text_layers >= 1), ("mlp_ratio", self.mlp_ratio >= 1),
                  ("max_len", self.max_len >= 8))
        for key, ok in checks:
            if not ok:
                raise ConfigError(f"compact VLM {key}: bad value {getattr(self, key)!r}")

    @property
    def image_tokens(self) -> int:
        """Patch tokens per image."""
        return (self.image_width // 8) * (self.image_height // 8)


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


class CompactSpatialModel(nn.Module):
    """Image encoder + causal text decoder with cross-attention (see the module docstring).

    Args:
        config: the sizes.

    Example:
        >>> model = CompactSpatialModel(CompactModelConfig(vocab_size=20, d_model=16, n_heads=2, text_layers=1))
        >>> images = torch.zeros(2, 96, 128, 3, dtype=torch.uint8)
        >>> model(images, torch.ones(2, 7, dtype=torch.long)).shape
        torch.Size([2, 7, 20])
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
        self.norm = nn.LayerNorm(d)
        nn.init.normal_(self.image_pos, std=0.02)
        nn.init.normal_(self.text_pos, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB at the configured size -> (B, image_tokens, d_model) image tokens."""
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x = self.stem(x).flatten(2).transpose(1, 2) + self.image_pos
        for layer in self.image_layers:
            x = layer(x)
        return self.image_norm(x)

    def image_keys_values(self, image_tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values of ``image_tokens``."""
        return [layer.cross_attn.keys_values(image_tokens) for layer in self.layers]

    def decode(self, ids: torch.Tensor, image_kv: Sequence[tuple[torch.Tensor, torch.Tensor]],
               positions: torch.Tensor | None = None, caches: list[list[torch.Tensor]] | None = None,
               key_padding: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, N, vocab) of ``ids`` (B, N) at ``positions`` (B, N; default ``0 ... N - 1`` in every row)."""
        if positions is None:
            positions = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)
        if int(positions.max()) >= self.config.max_len:
            raise InputError(f"compact VLM: {int(positions.max()) + 1} tokens exceed max_len {self.config.max_len}")
        x = self.embed(ids) + self.text_pos[0, positions]
        for i, layer in enumerate(self.layers):
            x = layer(x, image_kv[i], None if caches is None else caches[i], key_padding)
        return self.norm(x) @ self.embed.weight.T

    def forward(self, images: torch.Tensor, ids: torch.Tensor, image_index: torch.Tensor | None = None,
                key_padding: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, N, vocab) of ``ids`` about ``images[image_index]``.

        Args:
            images: (I, H, W, 3) uint8 RGB; each is encoded once however many sequences ask about it.
            ids: (B, N) token ids, ``[BOS] question [SEP] answer [EOS]`` right-padded with 0.
            image_index: (B,) which image each sequence asks about (default: ``arange(B)``).
            key_padding: (B, N) True at padding (default: where ``ids`` is 0).
        """
        image_kv = [(k if image_index is None else k[image_index], v if image_index is None else v[image_index])
                    for k, v in self.image_keys_values(self.encode_images(images))]
        return self.decode(ids, image_kv, key_padding=ids == 0 if key_padding is None else key_padding)

    @torch.inference_mode()
    def generate(self, images: torch.Tensor, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 temperature: float = 0.0, generator: torch.Generator | None = None,
                 image_index: torch.Tensor | None = None) -> list[list[int]]:
        """Answer ids (without ``<eos>``) after each prompt about ``images[image_index]``.

        ``image_index`` (one entry per prompt) defaults to one image per prompt. Prompts of different
        lengths are left-padded (masked) so that the batch decodes in step; each row keeps the positions it
        was trained with (its ``<bos>`` at 0).
        """
        n = max(len(p) for p in prompts)
        max_new_tokens = min(max_new_tokens, self.config.max_len - n)
        ids = torch.zeros(len(prompts), n, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, n - len(prompt):] = torch.as_tensor(prompt, dtype=torch.long)
        padding = ids == 0
        shift = padding.sum(dim=1, keepdim=True)
        positions = (torch.arange(n) - shift).clamp(min=0)
        image_kv = [(k if image_index is None else k[image_index], v if image_index is None else v[image_index])
                    for k, v in self.image_keys_values(self.encode_images(images))]
        caches: list[list[torch.Tensor]] = [[] for _ in self.layers]
        logits = self.decode(ids, image_kv, positions, caches, padding)[:, -1]
        answers: list[list[int]] = [[] for _ in prompts]
        done = torch.zeros(len(prompts), dtype=torch.bool)
        eos = SPECIALS.index(EOS)
        for step in range(max_new_tokens):
            if temperature > 0:
                nxt = torch.multinomial(F.softmax(logits / temperature, dim=-1), 1, generator=generator)[:, 0]
            else:
                nxt = logits.argmax(dim=-1)
            for row in (~done).nonzero()[:, 0].tolist():
                if int(nxt[row]) != eos:
                    answers[row].append(int(nxt[row]))
            done |= nxt == eos
            if bool(done.all()) or step + 1 == max_new_tokens:
                break
            padding = torch.cat([padding, torch.zeros(len(prompts), 1, dtype=torch.bool)], dim=1)
            positions = n + step - shift
            logits = self.decode(nxt[:, None], image_kv, positions, caches, padding)[:, -1]
        return answers


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (height, width, 3) uint8, area-averaged (the training images' resampling)."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BOX))


def prompt_ids(tokenizer: WordTokenizer, question: str) -> list[int]:
    """``[BOS] question [SEP]``: what the decoder reads before the answer."""
    return [SPECIALS.index(BOS), *tokenizer.encode(question), SPECIALS.index(SEP)]


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
            InputError: an image that is not (H, W, 3) uint8.
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
        prompts = [prompt_ids(self.tokenizer, q)[:cfg.max_len - 1] for q in questions]
        return _Batch(images=torch.from_numpy(np.stack(arrays)), image_index=torch.as_tensor(index), prompts=prompts)

    def _forward(self, batch: _Batch) -> list[list[int]]:
        """Decode the answers' token ids (greedy or sampled)."""
        try:
            return self.model.generate(batch.images, batch.prompts, self.options.max_new_tokens,
                                       self.options.temperature, self._generator, batch.image_index)
        except RuntimeError as err:  # out of memory, a shape mismatch in a damaged checkpoint
            raise VLMError(f"compact VLM: generation failed: {err}") from err

    def postprocess(self, answer_ids: Sequence[Sequence[int]], latency_ms: float) -> list[VLMAnswer]:
        """Detokenize the answers and parse the distance each states."""
        unit = self.options.default_unit or None
        texts = [self.tokenizer.decode(ids) for ids in answer_ids]
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
        ids = self._forward(self.preprocess(images, questions))
        return self.postprocess(ids, 1e3 * (time.perf_counter() - start))


@register_vlm("compact")
def _compact_vlm(config: VLMConfig) -> CompactVLM:
    return CompactVLM.from_config(config)


def parameter_summary(model: CompactSpatialModel) -> dict[str, Any]:
    """Parameter counts of the image encoder, the text decoder and the whole model."""
    image = sum(p.numel() for name, p in model.named_parameters() if name.startswith(("stem", "image_")))
    total = count_parameters(model)
    return {"image_encoder": image, "text_decoder": total - image, "total": total}
