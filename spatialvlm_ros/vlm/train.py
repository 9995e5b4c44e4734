"""``spatialvlm train``: train the compact spatial VLM (:mod:`~spatialvlm_ros.vlm.compact`) from scratch.

Input: a dataset folder from ``spatialvlm synthesize`` (``data.jsonl`` + ``images/``). Every image is
loaded once, resized to the model's input size (area averaging) and kept in memory as uint8; the
questions and answers are tokenized with a vocabulary built from the dataset (plus the distance
questions of :mod:`~spatialvlm_ros.vlm.prompts`, so the robot's questions have no unknown words).

A step draws ``batch_images`` images and ``questions_per_image`` of each image's questions (seeded
``numpy`` generator), so each image is encoded once for several questions. Loss: cross-entropy of the
answer tokens and ``<eos>`` given the image, the question and the earlier answer tokens (teacher
forcing; question tokens carry no loss). AdamW, linear warm-up then cosine decay, gradient clipping.

Output folder::

    model.safetensors, model_config.json, tokenizer.json   the weights (compact.load_weights reads them)
    training_config.json                                   TrainConfig + data seed + held-out seed + counts
    checkpoint/                                            latest model, optimizer and RNG state (resumable)
    log.jsonl                                              one line per logged step: step, loss, lr, seconds

Running again with the same ``out`` resumes from ``checkpoint/`` (the tokenizer is reused, so the ids
stay the same); a finished run is not retrained.
"""

from __future__ import annotations

import argparse
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

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
TRAINING_CONFIG_FILE = "training_config.json"


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
        image_width: model input width, pixels.
        image_height: model input height, pixels.
    """

    data: str
    out: str
    steps: int = 3000
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
    text_layers: int = 4
    image_layers: int = 1
    n_heads: int = 4
    image_width: int = 128
    image_height: int = 96

    def __post_init__(self) -> None:
        checks = (("steps", self.steps >= 1), ("max_minutes", self.max_minutes >= 0), ("lr", self.lr > 0),
                  ("weight_decay", self.weight_decay >= 0), ("warmup_steps", self.warmup_steps >= 0),
                  ("batch_images", self.batch_images >= 1), ("questions_per_image", self.questions_per_image >= 1),
                  ("threads", self.threads >= 1), ("checkpoint_every", self.checkpoint_every >= 1),
                  ("log_every", self.log_every >= 1))
        for key, ok in checks:
            if not ok:
                raise ConfigError(f"train {key}: bad value {getattr(self, key)!r}")


@dataclass(frozen=True)
class TrainingSet:
    """A dataset in memory.

    Attributes:
        images: (I, H, W, 3) uint8 RGB at the model's input size.
        sequences: per image, the token ids of its ``[BOS] question [SEP] answer [EOS]`` rows.
        answer_starts: per image, the index in each sequence of the first answer token.
        data_seed: the synthesis seed of the dataset (its ``synthesis_config.json``), None if unknown.
    """

    images: np.ndarray
    sequences: tuple[tuple[tuple[int, ...], ...], ...]
    answer_starts: tuple[tuple[int, ...], ...]
    data_seed: int | None

    @property
    def n_rows(self) -> int:
        """Question-answer pairs."""
        return sum(len(s) for s in self.sequences)


@dataclass(frozen=True)
class TrainResult:
    """What a run did.

    Attributes:
        out: the output folder.
        steps: optimizer steps done in total (resumed ones included).
        final_loss: mean answer-token loss over the last logged window.
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
    """Every text the tokenizer must know: questions, answers and the robot's distance questions."""
    from spatialvlm_ros.vlm.prompts import DISTANCE_QUESTIONS

    robot = [t for templates in DISTANCE_QUESTIONS.values() for t in templates]
    return [r["question"] for r in rows] + [r["answer"] for r in rows] + robot


def load_training_set(data: Path, tokenizer: Any, width: int, height: int, max_len: int) -> TrainingSet:
    """Load and resize every image of ``data`` and tokenize its rows (see the module docstring).

    Rows longer than ``max_len`` tokens are dropped (logged).

    Raises:
        InputError: an unreadable dataset or image.
    """
    from PIL import Image

    from spatialvlm_ros.vlm.compact import EOS, SPECIALS, prompt_ids, resize_image

    data = Path(data)
    by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in read_rows(data):
        by_image[row["images"][0]].append(row)
    images, sequences, starts = [], [], []
    dropped = 0
    for rel in sorted(by_image):
        try:
            with Image.open(data / rel) as im:
                rgb = np.asarray(im.convert("RGB"))
        except OSError as err:
            raise InputError(f"cannot read image {str(data / rel)!r}: {err}") from err
        seqs, firsts = [], []
        for row in by_image[rel]:
            prompt = prompt_ids(tokenizer, row["question"])
            seq = (*prompt, *tokenizer.encode(row["answer"]), SPECIALS.index(EOS))
            if len(seq) > max_len:
                dropped += 1
                continue
            seqs.append(seq)
            firsts.append(len(prompt))
        if seqs:
            images.append(resize_image(rgb, width, height))
            sequences.append(tuple(seqs))
            starts.append(tuple(firsts))
    if dropped:
        logger.warning("dropped %d rows longer than %d tokens", dropped, max_len)
    if not images:
        raise InputError(f"dataset {str(data)!r} has no usable rows")
    seed = None
    cfg_path = data / "synthesis_config.json"
    if cfg_path.is_file():
        seed = json.loads(cfg_path.read_text()).get("seed")
    return TrainingSet(np.stack(images), tuple(sequences), tuple(starts), seed)


def sample_batch(data: TrainingSet, rng: np.random.Generator, batch_images: int,
                 questions_per_image: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A step's batch: (images, ids, targets, image_index) as numpy arrays.

    ``ids`` (B, N) are right-padded with 0; ``targets`` (B, N) hold the next token where it is an answer
    token or ``<eos>`` and -100 (ignored) elsewhere.
    """
    picked = rng.choice(len(data.sequences), size=min(batch_images, len(data.sequences)), replace=False)
    seqs, firsts, index = [], [], []
    for slot, i in enumerate(picked):
        rows = rng.choice(len(data.sequences[i]), size=min(questions_per_image, len(data.sequences[i])),
                          replace=False)
        for r in rows:
            seqs.append(data.sequences[i][r])
            firsts.append(data.answer_starts[i][r])
            index.append(slot)
    n = max(len(s) for s in seqs) - 1
    ids = np.zeros((len(seqs), n), dtype=np.int64)
    targets = np.full((len(seqs), n), -100, dtype=np.int64)
    for row, (seq, first) in enumerate(zip(seqs, firsts)):
        ids[row, :len(seq) - 1] = seq[:-1]
        # Position p predicts token p + 1; the answer's first token is predicted from the <sep> before it.
        targets[row, first - 1:len(seq) - 1] = seq[first:]
    return data.images[picked], ids, targets, np.asarray(index)


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
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
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
    from torch.nn import functional as F

    from spatialvlm_ros.vlm.compact import (
        TOKENIZER_FILE, CompactModelConfig, CompactSpatialModel, WordTokenizer, count_parameters, save_weights,
    )

    start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    ckpt = out / CHECKPOINT_DIR
    rows = read_rows(Path(cfg.data))
    resuming = (ckpt / "state.json").is_file()
    tokenizer = WordTokenizer.load(out / TOKENIZER_FILE) if resuming else WordTokenizer.build(vocabulary_texts(rows))
    model_cfg = CompactModelConfig(vocab_size=len(tokenizer), image_width=cfg.image_width,
                                   image_height=cfg.image_height, d_model=cfg.d_model, n_heads=cfg.n_heads,
                                   image_layers=cfg.image_layers, text_layers=cfg.text_layers)
    data = load_training_set(Path(cfg.data), tokenizer, cfg.image_width, cfg.image_height, model_cfg.max_len)
    logger.info("loaded %d images, %d QA rows, vocabulary %d, in %.1f s", len(data.images), data.n_rows,
                len(tokenizer), time.perf_counter() - start)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = CompactSpatialModel(model_cfg)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "pos" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    step = 0
    out.mkdir(parents=True, exist_ok=True)
    if resuming:
        step = _load_checkpoint(ckpt, model, optimizer, rng)
        logger.info("resumed from %s at step %d", ckpt, step)
    else:
        tokenizer.save(out / TOKENIZER_FILE)
    n_params = count_parameters(model)
    logger.info("compact VLM: %d parameters, training steps %d -> %d", n_params, step, cfg.steps)
    model.train()
    losses: list[float] = []
    last_loss = math.nan
    window_start = time.perf_counter()
    with (out / "log.jsonl").open("a") as log:
        while step < cfg.steps:
            if cfg.max_minutes and time.perf_counter() - start > 60 * cfg.max_minutes:
                logger.info("time limit of %.1f min reached at step %d", cfg.max_minutes, step)
                break
            images, ids, targets, index = sample_batch(data, rng, cfg.batch_images, cfg.questions_per_image)
            time_fraction = (time.perf_counter() - start) / (60 * cfg.max_minutes) if cfg.max_minutes else 0.0
            lr = learning_rate(step, cfg, time_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = model(torch.from_numpy(images), torch.from_numpy(ids), torch.from_numpy(index))
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets).reshape(-1),
                                   ignore_index=-100)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            losses.append(loss.item())
            if step % cfg.log_every == 0 or step == cfg.steps:
                last_loss = float(np.mean(losses))
                seconds = time.perf_counter() - window_start
                logger.info("step %d/%d loss %.4f lr %.2e (%.2f s/step)", step, cfg.steps, last_loss, lr,
                            seconds / len(losses))
                log.write(json.dumps({"step": step, "loss": last_loss, "lr": lr,
                                      "elapsed_s": time.perf_counter() - start}) + "\n")
                log.flush()
                losses, window_start = [], time.perf_counter()
            if step % cfg.checkpoint_every == 0:
                _save_checkpoint(ckpt, model, optimizer, step, rng)
    if losses:
        last_loss = float(np.mean(losses))
    _save_checkpoint(ckpt, model, optimizer, step, rng)
    model.eval()
    save_weights(model, tokenizer, out)
    seconds = time.perf_counter() - start
    record = {**dataclasses.asdict(cfg), "data_seed": data.data_seed, "images": int(len(data.images)),
              "rows": data.n_rows, "steps_done": step, "parameters": n_params, "final_loss": last_loss}
    (out / TRAINING_CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    logger.info("wrote %s (step %d, loss %.4f)", out, step, last_loss)
    return TrainResult(out=str(out), steps=step, final_loss=last_loss, seconds=seconds, parameters=n_params)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``spatialvlm train`` (defaults from :class:`TrainConfig`)."""
    d = TrainConfig(data="", out="")
    parser.add_argument("data", type=Path, help="dataset folder from 'spatialvlm synthesize'")
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed when it holds a checkpoint)")
    parser.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    parser.add_argument("--max-minutes", type=float, default=d.max_minutes, help="wall-time limit (0 = none)")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    parser.add_argument("--batch-images", type=int, default=d.batch_images, help="images per step")
    parser.add_argument("--questions-per-image", type=int, default=d.questions_per_image,
                        help="questions per image and step")
    parser.add_argument("--seed", type=int, default=d.seed, help="initialisation and sampling seed")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    parser.add_argument("--held-out-seed", type=int, default=None, help="seed of the evaluation set (recorded)")
    parser.add_argument("--d-model", type=int, default=d.d_model, help="model width")
    parser.add_argument("--text-layers", type=int, default=d.text_layers, help="decoder layers")


def train_cli(args: argparse.Namespace) -> int:
    """Run ``spatialvlm train``; prints the :class:`TrainResult` as JSON on the last line."""
    cfg = TrainConfig(data=str(args.data), out=str(args.out), steps=args.steps, max_minutes=args.max_minutes,
                      lr=args.lr, batch_images=args.batch_images, questions_per_image=args.questions_per_image,
                      seed=args.seed, threads=args.threads, held_out_seed=args.held_out_seed, d_model=args.d_model,
                      text_layers=args.text_layers)
    result = train(cfg)
    print(json.dumps(dataclasses.asdict(result)))
    return 0
