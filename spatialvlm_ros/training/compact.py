"""``spatialvlm train``: train the compact spatial VLM (:mod:`~spatialvlm_ros.vlm.compact`) from scratch.

Input: a dataset folder from ``spatialvlm synthesize`` (``data.jsonl``, ``images/``, ``scenes/``). Every
image is loaded once, resized to the model's input size (area averaging) and kept in memory as uint8;
the questions and answers are tokenized with a vocabulary built from the dataset (plus the distance
questions of :mod:`~spatialvlm_ros.vlm.prompts`, so the robot's questions have no unknown words); each
row's objects (its ``object_ids``) are looked up in its image's scene record.

A step draws ``batch_images`` images and ``questions_per_image`` of each image's questions (seeded
``numpy`` generator), so each image is encoded once for several questions. The loss
(:func:`batch_losses`) sums six terms: cross-entropy of the answer tokens and ``<eos>`` (teacher forcing;
question tokens carry no loss; the answer names the objects as ``<a>``/``<b>``, see :func:`answer_text`);
L1 of the value head's log-metres at ``<num>`` against the exact truth; at the ``<a>``/``<b>`` slots, the
pointer's cross-entropy against the patch of the named object, a smooth L1 on its scene record and the
cross-entropy of where its reference starts and ends in the question; and at ``<r>``, a binary
cross-entropy of whether the asked relation holds. AdamW, linear warm-up then cosine decay, gradient
clipping.

Output folder::

    model.safetensors, model_config.json, tokenizer.json   the weights (network.load_weights reads them)
    training_config.json                                   TrainConfig + data seed + held-out seed + counts
    checkpoint/                                            latest model, optimizer and RNG state (resumable)
    log.jsonl                                              per logged step: step, losses, lr, seconds

Running again with the same ``out`` resumes from ``checkpoint/`` (the tokenizer is reused, so the ids
stay the same); a finished run is not retrained.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.vlm.compact.tokenizer import (EOS_ID, NUM_ID, REF_A_ID, SPECIALS, WordTokenizer, mask_numbers,
                                                  mask_references, prompt_ids, reference_spans)

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
TRAINING_CONFIG_FILE = "training_config.json"
#: What ``TrainConfig.learn`` may train: every weight, or only the embeddings of words new to ``init``.
LEARN = ("all", "new_words")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run.

    Attributes:
        data: dataset folder (``data.jsonl`` + ``images/``).
        out: output folder (weights, config, checkpoint, log).
        steps: optimizer steps.
        max_minutes: stop (and save) after this much wall time of this invocation even if ``steps`` are not
            done (0 = no limit); the learning-rate decay follows it (:func:`learning_rate`).
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        batch_images: images per step.
        questions_per_image: questions per image and step (sequences per step = the product).
        seed: seeds initialisation and batch sampling.
        threads: torch CPU threads.
        checkpoint_every: steps between checkpoints.
        log_every: steps between log lines.
        held_out_seed: seed of the held-out set the model is evaluated on (recorded only).
        d_model: model width.
        text_layers: decoder layers.
        image_layers: image transformer layers.
        n_heads: attention heads.
        image_width: model input width, pixels (None: the initial weights', or 128 from scratch).
        image_height: model input height, pixels (None: the initial weights', or 96 from scratch).
        init: start from these weights (a folder of an earlier ``spatialvlm train``) instead of a random
            initialisation: their tokenizer and architecture are kept (the size settings above are then
            ignored), except an input size set above, to which they are resized
            (:func:`~spatialvlm_ros.vlm.compact.network.resize_input`), and words of the data the tokenizer
            lacks, which are appended to it (:func:`~spatialvlm_ros.vlm.compact.network.extend_vocabulary`).
            None: from scratch.
        learn: ``"all"`` trains every weight; ``"new_words"`` (needs ``init``, at its input size) trains only the
            embedding rows of the words appended to ``init``'s tokenizer and freezes the rest: a question in its
            old words then reads exactly as with ``init`` (the same logits over the old tokens and the same
            numbers), and the new ones are learned. The output projection is tied to the embedding, so decoding
            also sees the new words' logits: greedy answers stay the same as long as none of them wins, which
            training pushes down (they never occur in answers); sampled answers may differ slightly.
            A data word the tokenizer spells otherwise (:meth:`WordTokenizer.spelling`: "gray", "Mug") is read
            as the known word, not appended.
    """

    data: str
    out: str
    steps: int = 8000
    max_minutes: float = 0.0
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    batch_images: int = 8
    questions_per_image: int = 8
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 200
    log_every: int = 20
    held_out_seed: int | None = None
    d_model: int = 128
    text_layers: int = 3
    image_layers: int = 1
    n_heads: int = 4
    image_width: int | None = None
    image_height: int | None = None
    init: str | None = None
    learn: str = "all"

    def __post_init__(self) -> None:
        checks = (("steps", self.steps >= 1), ("max_minutes", self.max_minutes >= 0), ("lr", self.lr > 0),
                  ("weight_decay", self.weight_decay >= 0), ("warmup_steps", self.warmup_steps >= 0),
                  ("batch_images", self.batch_images >= 1), ("questions_per_image", self.questions_per_image >= 1),
                  ("threads", self.threads >= 1), ("checkpoint_every", self.checkpoint_every >= 1),
                  ("log_every", self.log_every >= 1))
        for key, ok in checks:
            if not ok:
                raise ConfigError(f"train {key}: bad value {getattr(self, key)!r}")
        if self.learn not in LEARN:
            raise ConfigError(f"train learn: {self.learn!r} is not one of {list(LEARN)}")
        if self.learn == "new_words" and not self.init:
            raise ConfigError("train learn 'new_words': needs init, the weights whose vocabulary is extended")


@dataclass(frozen=True)
class Example:
    """One question-answer row, ready for training.

    Attributes:
        ids: ``[BOS] question [SEP] <a> <b> <r> answer [EOS]`` token ids (the answer's number is ``<num>``).
        answer_start: index in ``ids`` of the first answer token.
        attributes: (2, len(ATTRIBUTES)) the scene record of the first and second object the question
            names (:data:`~spatialvlm_ros.vlm.compact.network.ATTRIBUTES`); NaN rows where there is none.
        patches: (2,) the image patch holding each object's pixel centre, -1 where there is none.
        log_value: log of the quantity's magnitude in metres (floored at 5 mm) for a quantitative row, else NaN.
        spans: (2, 2) the first and last position in ``ids`` of each object's reference in the question, -1
            where it does not occur.
        holds: 1 when the relation the row asks about holds for its objects (the sign of its ``truth_m``:
            "A is left of B", "A is bigger", "A is more to the left by ..."), 0 when not, NaN for rows
            without a relation (quantities).
    """

    ids: tuple[int, ...]
    answer_start: int
    attributes: np.ndarray
    patches: np.ndarray
    log_value: float
    spans: np.ndarray
    holds: float


@dataclass(frozen=True)
class TrainingSet:
    """A dataset in memory.

    Attributes:
        images: (I, H, W, 3) uint8 RGB at the model's input size.
        examples: per image, its rows.
        data_seed: the synthesis seed of the dataset (its ``synthesis_config.json``), None if unknown.
    """

    images: np.ndarray
    examples: tuple[tuple[Example, ...], ...]
    data_seed: int | None

    @property
    def n_rows(self) -> int:
        """Question-answer pairs."""
        return sum(len(e) for e in self.examples)


@dataclass(frozen=True)
class Batch:
    """A step's inputs and targets (numpy; see :func:`sample_batch`).

    Attributes:
        images: (I, H, W, 3) uint8 RGB.
        image_index: (B,) which image each sequence asks about.
        ids: (B, N) input ids, right-padded with 0.
        targets: (B, N) the next token where it is an answer token or ``<eos>``, else -100 (ignored).
        slot_positions: (B, 2) positions of ``<a>`` and ``<b>`` in each row.
        attributes: (B, 2, len(ATTRIBUTES)) the objects' records (NaN: none).
        patches: (B, 2) the objects' patches (-1: none).
        value_positions: (B,) the position whose next token is ``<num>`` (-1: none).
        log_values: (B,) its target (NaN: none).
        spans: (B, 2, 2) where each object's reference starts and ends in ``ids`` (-1: not in the question).
        holds: (B,) whether the asked relation holds (1 / 0; NaN: the row asks none).
    """

    images: np.ndarray
    image_index: np.ndarray
    ids: np.ndarray
    targets: np.ndarray
    slot_positions: np.ndarray
    attributes: np.ndarray
    patches: np.ndarray
    value_positions: np.ndarray
    log_values: np.ndarray
    spans: np.ndarray
    holds: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    """What a run did.

    Attributes:
        out: the output folder.
        steps: optimizer steps done in total (resumed ones included).
        final_loss: mean total loss (:func:`batch_losses`) over the last logged window.
        seconds: wall time of this invocation, seconds.
        parameters: trainable parameters.
    """

    out: str
    steps: int
    final_loss: float
    seconds: float
    parameters: int


def read_rows(data: Path) -> list[dict[str, Any]]:
    """The rows of ``data/data.jsonl``.

    Raises:
        InputError: no such file, or a malformed line.
    """
    path = Path(data) / "data.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the dataset {str(path)!r}: {err}") from err


def vocabulary_texts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every text the tokenizer must know: questions, answers (numbers as ``<num>``) and the robot's questions."""
    from spatialvlm_ros.vlm.prompts import DISTANCE_QUESTIONS

    robot = [t for templates in DISTANCE_QUESTIONS.values() for t in templates]
    return [r["question"] for r in rows] + [answer_text(r) for r in rows] + robot


def answer_text(row: dict[str, Any]) -> str:
    """The answer as the decoder writes it: numbers as ``<num>``, the objects' references as ``<a>``, ``<b>``.

    A quantitative row's number becomes ``<num>``; the objects' references (``object_references``, where
    the question holds them) become ``<a>`` and ``<b>``.

    Example:
        >>> answer_text({"question": "Which is taller, the red can or the bowl?", "answer": "The bowl is taller.",
        ...              "object_references": ["the red can", "the bowl"], "answer_value": None})
        '<b> is taller.'
    """
    return _answer_and_spans(row)[0]


def _answer_and_spans(row: dict[str, Any]) -> tuple[str, list[tuple[int, int] | None]]:
    """:func:`answer_text` and where each object's reference is in the question's pieces (one search for both)."""
    references = row.get("object_references") or []
    spans = reference_spans(WordTokenizer.pieces(row["question"]), references)
    # A reference the question does not hold cannot be copied from it: the decoder spells that one out.
    # References first: a digit in one ("the 2 liter bottle") is not the answer's number.
    answer = mask_references(row["answer"], references, [span is not None for span in spans])
    return (mask_numbers(answer) if row.get("answer_value") is not None else answer), spans


def object_records(scene: dict[str, Any], grid: tuple[int, int]) -> dict[int, tuple[np.ndarray, int]]:
    """Per object id of a scene record (``scenes/<id>.json``): its attributes and the patch of its pixel centre.

    Args:
        scene: the record: image ``width``/``height`` and ``objects`` with ``box`` and ``pixel_centre``.
        grid: the model's patch grid, (columns, rows).

    Example:
        >>> scene = {"width": 320, "height": 240, "objects": [{"object_id": 3, "pixel_centre": [300, 10],
        ...          "box": {"centre_m": [1, 0, 0.1], "width_m": 0.1, "height_m": 0.2, "depth_m": 0.05}}]}
        >>> attributes, patch = object_records(scene, (16, 12))[3]
        >>> [round(float(a), 3) for a in attributes], patch
        ([1.0, 0.0, 0.1, 0.1, 0.2, 0.05, 0.938, 0.042], 15)
    """
    records = {}
    for obj in scene["objects"]:
        box = obj["box"]
        u, v = obj["pixel_centre"][0] / scene["width"], obj["pixel_centre"][1] / scene["height"]
        attributes = np.array([*box["centre_m"], box["width_m"], box["height_m"], box["depth_m"], u, v], np.float32)
        col, row = min(int(u * grid[0]), grid[0] - 1), min(int(v * grid[1]), grid[1] - 1)
        records[int(obj["object_id"])] = (attributes, row * grid[0] + col)
    return records


def make_example(row: dict[str, Any], tokenizer: Any, records: dict[int, tuple[np.ndarray, int]]) -> Example:
    """The :class:`Example` of a dataset row, given its image's :func:`object_records` (may be empty)."""
    from spatialvlm_ros.vlm.compact.network import ATTRIBUTES

    prompt = prompt_ids(tokenizer, row["question"])
    attributes = np.full((2, len(ATTRIBUTES)), np.nan, np.float32)
    patches = np.full(2, -1, np.int64)
    for slot, object_id in enumerate(row.get("object_ids", [])[:2]):
        if object_id in records:
            attributes[slot], patches[slot] = records[object_id]
    quantitative = row.get("answer_value") is not None and row.get("truth_m") is not None
    log_value = math.log(max(abs(float(row["truth_m"])), 0.005)) if quantitative else math.nan
    answer, found = _answer_and_spans(row)
    ids = (*prompt, *tokenizer.encode(answer), EOS_ID)
    spans = np.full((2, 2), -1, np.int64)
    for slot, span in enumerate(found[:2]):
        if span:
            spans[slot] = np.asarray(span) + 1          # the question starts after <bos>
    # Predicates, choices, classifications and differences all ask about one relation; its truth's sign says
    # whether it holds (see synthesis.questions.relation_truth). Quantities ask none.
    relational = row.get("family") in ("predicate", "choice", "classify", "difference") and row.get("truth_m")
    holds = float(float(row["truth_m"]) > 0) if relational else math.nan
    return Example(ids, len(prompt), attributes, patches, log_value, spans, holds)


def load_training_set(data: Path, tokenizer: Any, width: int, height: int, max_len: int) -> TrainingSet:
    """Load and resize every image of ``data``, tokenize its rows and read their objects' scene records.

    Rows longer than ``max_len`` tokens are dropped (logged). An image without a scene record
    (``scenes/<image_id>.json``) trains the text only.

    Raises:
        InputError: an unreadable dataset or image.
    """
    from PIL import Image

    from spatialvlm_ros.vlm.compact.network import fit_image, same_aspect

    data = Path(data)
    by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in read_rows(data):
        by_image[row["images"][0]].append(row)
    images, examples = [], []
    dropped = no_scene = 0
    for rel in sorted(by_image):
        try:
            with Image.open(data / rel) as im:
                rgb = np.asarray(im.convert("RGB"))
        except OSError as err:
            raise InputError(f"cannot read image {str(data / rel)!r}: {err}") from err
        if not same_aspect(rgb.shape[:2], width, height):
            # The objects' pixel centres and pointer targets are fractions of the whole image; inference would crop
            # or pad such an image (fit_image), so training on it would teach targets the model never sees.
            raise InputError(f"image {str(data / rel)!r} is {rgb.shape[1]}x{rgb.shape[0]}, not the model's aspect "
                             f"{width}x{height}: train with image_width/image_height of the data's aspect")
        scene_path = data / "scenes" / f"{by_image[rel][0].get('image_id', Path(rel).stem)}.json"
        records = {}
        if scene_path.is_file():
            records = object_records(json.loads(scene_path.read_text()), (width // 8, height // 8))
        else:
            no_scene += 1
        rows = [make_example(row, tokenizer, records) for row in by_image[rel]]
        kept = tuple(e for e in rows if len(e.ids) <= max_len)
        dropped += len(rows) - len(kept)
        if kept:
            images.append(fit_image(rgb, width, height))
            examples.append(kept)
    if dropped:
        logger.warning("dropped %d rows longer than %d tokens", dropped, max_len)
    if no_scene:
        logger.warning("%d images have no scene record: their objects' slots are not supervised", no_scene)
    if not images:
        raise InputError(f"dataset {str(data)!r} has no usable rows")
    seed = None
    cfg_path = data / "synthesis_config.json"
    if cfg_path.is_file():
        seed = json.loads(cfg_path.read_text()).get("seed")
    return TrainingSet(np.stack(images), tuple(examples), seed)


def sample_batch(data: TrainingSet, rng: np.random.Generator, batch_images: int, questions_per_image: int) -> Batch:
    """A step's batch: ``batch_images`` images and up to ``questions_per_image`` of each one's rows."""
    picked = rng.choice(len(data.examples), size=min(batch_images, len(data.examples)), replace=False)
    chosen: list[Example] = []
    index = []
    for slot, i in enumerate(picked):
        rows = rng.choice(len(data.examples[i]), size=min(questions_per_image, len(data.examples[i])), replace=False)
        chosen += [data.examples[i][r] for r in rows]
        index += [slot] * len(rows)
    n = max(len(e.ids) for e in chosen) - 1
    ids = np.zeros((len(chosen), n), dtype=np.int64)
    targets = np.full((len(chosen), n), -100, dtype=np.int64)
    value_positions = np.full(len(chosen), -1, dtype=np.int64)
    for row, e in enumerate(chosen):
        ids[row, :len(e.ids) - 1] = e.ids[:-1]
        # Position p predicts token p + 1; the answer's first token is predicted from the <r> slot before it.
        targets[row, e.answer_start - 1:len(e.ids) - 1] = e.ids[e.answer_start:]
        if NUM_ID in e.ids and math.isfinite(e.log_value):
            value_positions[row] = e.ids.index(NUM_ID) - 1
    slot_a = np.array([e.ids.index(REF_A_ID) for e in chosen])
    return Batch(images=data.images[picked], image_index=np.asarray(index), ids=ids, targets=targets,
                 slot_positions=np.stack([slot_a, slot_a + 1], axis=1),
                 attributes=np.stack([e.attributes for e in chosen]), patches=np.stack([e.patches for e in chosen]),
                 value_positions=value_positions, log_values=np.array([e.log_value for e in chosen], np.float32),
                 spans=np.stack([e.spans for e in chosen]), holds=np.array([e.holds for e in chosen], np.float32))


def batch_losses(model: Any, batch: Batch) -> dict[str, Any]:
    """The training losses of ``batch`` (torch scalars).

    ``answer``: cross-entropy of the answer tokens; ``value``: L1 of the log-metres at ``<num>``;
    ``attributes``: smooth L1 of the slots' object records, in units of
    :data:`~spatialvlm_ros.vlm.compact.network.ATTRIBUTE_SCALE`; ``pointer``: cross-entropy of the slots' pointer over
    the patches; ``span``: cross-entropy of the slots' reference start and end over the positions;
    ``holds``: binary cross-entropy of the relation slot's :attr:`~spatialvlm_ros.vlm.compact.network.ModelOutput.holds`
    against whether the asked relation holds; ``total``: their sum. A loss with no target in the batch is 0.
    """
    import torch
    from torch.nn import functional as F

    from spatialvlm_ros.vlm.compact.network import ATTRIBUTE_SCALE

    out = model(torch.from_numpy(batch.images), torch.from_numpy(batch.ids), torch.from_numpy(batch.image_index))
    answer = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), torch.from_numpy(batch.targets).reshape(-1),
                             ignore_index=-100)
    rows = torch.arange(len(batch.ids))
    has_value = torch.from_numpy(batch.value_positions >= 0)
    value = out.log_value[rows, torch.from_numpy(batch.value_positions).clamp(min=0)]
    value_loss = (F.l1_loss(value[has_value], torch.from_numpy(batch.log_values)[has_value])
                  if bool(has_value.any()) else value.sum() * 0)
    slots = torch.from_numpy(batch.slot_positions)
    predicted = out.attributes[rows[:, None], slots]                      # (B, 2, A)
    target = torch.from_numpy(batch.attributes) / torch.tensor(ATTRIBUTE_SCALE)
    known = ~torch.isnan(target)
    attributes = (F.smooth_l1_loss(predicted[known], target[known]) if bool(known.any())
                  else predicted.sum() * 0)
    pointer_logits = out.pointer[rows[:, None], slots]                    # (B, 2, P)
    pointer = F.cross_entropy(pointer_logits.reshape(-1, pointer_logits.shape[-1]),
                              torch.from_numpy(batch.patches).reshape(-1), ignore_index=-1)
    if not bool((torch.from_numpy(batch.patches) >= 0).any()):
        pointer = pointer_logits.sum() * 0
    spans = torch.from_numpy(batch.spans)                                # (B, 2, 2)
    span_logits = torch.stack([out.span_start[rows[:, None], slots], out.span_end[rows[:, None], slots]], dim=2)
    span = (F.cross_entropy(span_logits.reshape(-1, span_logits.shape[-1]), spans.reshape(-1), ignore_index=-1)
            if bool((spans >= 0).any()) else span_logits.sum() * 0)
    holds_target = torch.from_numpy(batch.holds)
    asked = ~torch.isnan(holds_target)
    holds_logit = out.holds[rows, slots[:, 1] + 1]                        # at <r>, right after <b>
    holds = (F.binary_cross_entropy_with_logits(holds_logit[asked], holds_target[asked]) if bool(asked.any())
             else holds_logit.sum() * 0)
    losses = {"answer": answer, "value": value_loss, "attributes": attributes, "pointer": pointer, "span": span,
              "holds": holds}
    losses["total"] = sum(losses.values())
    return losses


def _new_words(tokenizer: WordTokenizer, rows: Sequence[dict[str, Any]]) -> list[str]:
    """The words of the dataset that ``tokenizer`` lacks (they would all read ``<unk>``)."""
    return sorted({piece for text in vocabulary_texts(rows) for piece in tokenizer.unknown_words(text)})


def final_tokens(data: TrainingSet) -> tuple[int, ...]:
    """The tokens that end every answer they occur in (right before ``<eos>``, never earlier).

    Decoding may stop after one of them: in this training set, ``<eos>`` always came next.
    """
    last: set[int] = set()
    inner: set[int] = set()
    for examples in data.examples:
        for e in examples:
            answer = e.ids[e.answer_start:-1]     # without <eos>
            if answer:
                last.add(answer[-1])
                inner.update(answer[:-1])
    return tuple(sorted(t for t in last - inner if t >= len(SPECIALS)))


def learning_rate(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to 5% of it.

    The decay's progress is the larger of the step fraction and ``time_fraction`` (wall time used of
    ``cfg.max_minutes``), so a run stopped by its time limit still ends at the low learning rate.

    Example:
        >>> cfg = TrainConfig(data="d", out="o", steps=100, warmup_steps=10, lr=1.0)
        >>> learning_rate(0, cfg), learning_rate(10, cfg), round(learning_rate(100, cfg), 3)
        (0.1, 1.0, 0.05)
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, max(time_fraction, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)))
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _training_record(folder: str | None) -> dict[str, Any] | None:
    """The ``training_config.json`` of the initial weights (how they were made), None without one.

    Raises:
        ConfigError: the file is there but unreadable or not a JSON object (read before training, not after it).
    """
    record = Path(folder) / TRAINING_CONFIG_FILE if folder else None
    if record is None or not record.is_file():
        return None
    try:
        parsed = json.loads(record.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{record}: cannot read it as a training record: {err}") from err
    if not isinstance(parsed, dict):
        raise ConfigError(f"{record}: not a training record (a JSON object), got {type(parsed).__name__}")
    return parsed


def _parameter_groups(model: Any, cfg: TrainConfig, known_words: int) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: every weight (matrices decayed), or with ``learn="new_words"`` the embedding.

    In that mode the rows of the first ``known_words`` tokens get a zero gradient and no weight decay, so Adam
    leaves them exactly as they were (its update is 0 where every gradient has been 0).
    """
    import torch

    if cfg.learn == "new_words":
        for p in model.parameters():
            p.requires_grad_(False)
        embedding = model.embed.weight.requires_grad_(True)
        keep = torch.zeros(len(embedding), 1, dtype=embedding.dtype, device=embedding.device)
        keep[known_words:] = 1.0
        embedding.register_hook(lambda grad: grad * keep)
        logger.info("learning only the embeddings of the %d new words (%d parameters); every other weight is "
                    "frozen", len(embedding) - known_words, (len(embedding) - known_words) * embedding.shape[1])
        return [{"params": [embedding], "weight_decay": 0.0}]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "pos" in n]
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _save_checkpoint(folder: Path, model: Any, optimizer: Any, step: int, rng: np.random.Generator) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    torch.save(optimizer.state_dict(), folder / "optimizer.pt.tmp")
    (folder / "optimizer.pt.tmp").replace(folder / "optimizer.pt")
    # The step file is written last: a checkpoint without it (a crash while saving) is not resumed from.
    state = {"step": step, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state().tolist()}
    (folder / "state.json.tmp").write_text(json.dumps(state))
    (folder / "state.json.tmp").replace(folder / "state.json")


def _load_checkpoint(folder: Path, model: Any, optimizer: Any, rng: np.random.Generator) -> int:
    import torch
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text())
    try:
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except RuntimeError as err:   # missing / unexpected / mis-shaped tensors
        raise ConfigError(f"checkpoint {str(folder)!r} does not fit the model these settings build (another "
                          f"architecture or sizes, e.g. --text-layers); train into a new --out: {err}") from err
    try:
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    except ValueError as err:   # another set of trained parameters (e.g. another --learn)
        raise ConfigError(f"checkpoint {str(folder)!r} trained other parameters than these settings (another "
                          f"--learn?); resume with the settings it was started with, or train into a new --out: "
                          f"{err}") from err
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    return int(state["step"])


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume training) the compact VLM as ``cfg`` says; write the weights into ``cfg.out``.

    Raises:
        ConfigError: bad settings, or a resumed run whose tokenizer does not fit.
        InputError: an unreadable dataset.

    Example:
        >>> train(TrainConfig(data="/no/such/dataset", out="/tmp/x"))
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.InputError: cannot read the dataset '/no/such/dataset/data.jsonl': ...
    """
    import torch

    from spatialvlm_ros.vlm.compact.network import (
        TOKENIZER_FILE, CompactModelConfig, CompactSpatialModel, count_parameters, extend_vocabulary, load_weights,
        resize_input, save_weights,
    )

    start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    ckpt = out / CHECKPOINT_DIR
    rows = read_rows(Path(cfg.data))
    resuming = (ckpt / "state.json").is_file()
    initial = load_weights(Path(cfg.init)) if cfg.init else None
    init_record = _training_record(cfg.init)
    known_words = initial[0].config.vocab_size if initial else 0   # token rows before any new word
    if resuming:
        tokenizer = WordTokenizer.load(out / TOKENIZER_FILE)
    else:
        tokenizer = initial[1] if initial else WordTokenizer.build(vocabulary_texts(rows))
    if initial:
        new_words = [] if resuming else _new_words(tokenizer, rows)
        if new_words:
            tokenizer = tokenizer.extended(new_words)
            logger.info("the data has %d words %s lacks (%s%s): added to its vocabulary", len(new_words), cfg.init,
                        ", ".join(w.strip() for w in new_words[:12]), ", ..." if len(new_words) > 12 else "")
        if len(tokenizer) > initial[0].config.vocab_size:   # new words now, or in the run being resumed
            initial = (extend_vocabulary(initial[0], len(tokenizer)), tokenizer)
        size = (cfg.image_width or initial[0].config.image_width, cfg.image_height or initial[0].config.image_height)
        if size != (initial[0].config.image_width, initial[0].config.image_height):
            if cfg.learn == "new_words":
                raise ConfigError(f"train learn 'new_words': keeps every old weight, so it cannot resize {cfg.init} "
                                  f"to {size[0]}x{size[1]}; leave image_width/image_height unset")
            initial = (resize_input(initial[0], *size), initial[1])
            logger.info("resized %s to a %dx%d input", cfg.init, *size)
        model_cfg = initial[0].config
    else:
        model_cfg = CompactModelConfig(vocab_size=len(tokenizer), image_width=cfg.image_width or 128,
                                       image_height=cfg.image_height or 96, d_model=cfg.d_model,
                                       n_heads=cfg.n_heads, image_layers=cfg.image_layers,
                                       text_layers=cfg.text_layers)
    data = load_training_set(Path(cfg.data), tokenizer, model_cfg.image_width, model_cfg.image_height,
                             model_cfg.max_len)
    if cfg.learn == "new_words":
        if len(tokenizer) == known_words:
            raise ConfigError(f"train learn 'new_words': the data uses no word that {cfg.init} lacks; nothing to learn")
    else:   # decoding's stopping tokens are the data's (kept as the initial model's when only new words learn)
        model_cfg = dataclasses.replace(model_cfg, final_tokens=final_tokens(data))
    logger.info("loaded %d images, %d QA rows, vocabulary %d, in %.1f s", len(data.images), data.n_rows,
                len(tokenizer), time.perf_counter() - start)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = CompactSpatialModel(model_cfg)
    if initial:
        model.load_state_dict(initial[0].state_dict())
        logger.info("initialised from %s", cfg.init)
    n_params = count_parameters(model)   # before any is frozen: the model's size
    optimizer = torch.optim.AdamW(_parameter_groups(model, cfg, known_words), lr=cfg.lr, betas=(0.9, 0.98))
    step = 0
    out.mkdir(parents=True, exist_ok=True)
    if resuming:
        step = _load_checkpoint(ckpt, model, optimizer, rng)
        logger.info("resumed from %s at step %d", ckpt, step)
    else:
        tokenizer.save(out / TOKENIZER_FILE)
    logger.info("compact VLM: %d parameters, training steps %d -> %d", n_params, step, cfg.steps)
    model.train()
    window: dict[str, list[float]] = defaultdict(list)   # the losses since the last log line
    last: dict[str, float] = {"total": math.nan}
    window_start = time.perf_counter()
    with (out / "log.jsonl").open("a") as log:
        while step < cfg.steps:
            if cfg.max_minutes and time.perf_counter() - start > 60 * cfg.max_minutes:
                logger.info("time limit of %.1f min reached at step %d", cfg.max_minutes, step)
                break
            time_fraction = (time.perf_counter() - start) / (60 * cfg.max_minutes) if cfg.max_minutes else 0.0
            lr = learning_rate(step, cfg, time_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = batch_losses(model, sample_batch(data, rng, cfg.batch_images, cfg.questions_per_image))
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            for key, value in losses.items():
                window[key].append(value.item())
            if step % cfg.log_every == 0 or step == cfg.steps:
                last = {key: float(np.mean(values)) for key, values in window.items()}
                seconds = (time.perf_counter() - window_start) / len(window["total"])
                parts = " ".join(f"{key} {value:.3f}" for key, value in last.items() if key != "total")
                logger.info("step %d/%d loss %.4f (%s) lr %.2e (%.2f s/step)", step, cfg.steps, last["total"], parts,
                            lr, seconds)
                log.write(json.dumps({"step": step, "loss": last, "lr": lr,
                                      "elapsed_s": time.perf_counter() - start}) + "\n")
                log.flush()
                window, window_start = defaultdict(list), time.perf_counter()
            if step % cfg.checkpoint_every == 0:
                _save_checkpoint(ckpt, model, optimizer, step, rng)
    if window:
        last = {key: float(np.mean(values)) for key, values in window.items()}
    last_loss = last["total"]
    _save_checkpoint(ckpt, model, optimizer, step, rng)
    model.eval()
    save_weights(model, tokenizer, out)
    seconds = time.perf_counter() - start
    record = {**dataclasses.asdict(cfg), "image_width": model_cfg.image_width, "image_height": model_cfg.image_height,
              "data_seed": data.data_seed, "images": int(len(data.images)),
              "rows": data.n_rows, "steps_done": step, "parameters": n_params, "final_loss": last_loss,
              "final_losses": last, "init_training": init_record}
    (out / TRAINING_CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    logger.info("wrote %s (step %d, loss %.4f)", out, step, last_loss)
    return TrainResult(out=str(out), steps=step, final_loss=last_loss, seconds=seconds, parameters=n_params)
