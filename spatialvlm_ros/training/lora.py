r"""LoRA fine-tuning of a transformers VLM on the data engine's spatial VQA (``spatialvlm finetune``).

**Data.** A dataset folder written by :mod:`spatialvlm_ros.synthesis`: ``data.jsonl`` rows with chat
``messages`` (user: image + question; assistant: answer) and ``images`` paths relative to the folder.
:class:`ChatRowsDataset` renders each row through the processor's own chat template, so training sees
exactly the prompt the ``transformers`` VLM backend sends at inference; the labels are the assistant
turn (its end-of-turn token included, so the model learns to stop) and every prompt token (system,
question, image placeholders) is masked with -100.

**Training.** LoRA (peft) on ``target_modules``: by default the attention projections ``q_proj``,
``k_proj``, ``v_proj``, ``o_proj``, which in Qwen2-VL / Qwen2.5-VL exist in the language model only
(the vision tower's are ``qkv`` / ``proj`` and stay frozen). AdamW on the adapter alone, gradient
accumulation, gradient clipping, constant learning rate, the mean loss of each optimizer step logged.

**Checkpoints and resuming.** Every ``save_every`` steps ``out_dir/checkpoint-<step>/`` receives the
adapter (``adapter_config.json`` + ``adapter_model.safetensors``), the optimizer state and, written
last, ``state.json`` (step, losses, settings); the newest ``keep_checkpoints`` are kept. Running again
with the same ``out_dir`` resumes from the newest complete checkpoint: the settings must be the same
(``steps`` may grow). The rows of a step are a function of (seed, step) and dropout is reseeded every
step, so a resumed run computes the losses an uninterrupted one would. The final adapter is written
to ``out_dir/adapter``; serve it with ``estimator.vlm.backend: transformers``, ``estimator.vlm.model``
the base checkpoint and ``estimator.vlm.adapter: <out_dir>/adapter``.

**A real run** (figures are ESTIMATES from parameter and token counts, not measured: this machine
has neither a GPU nor the model hub)::

    spatialvlm synthesize --input sim:5000 --out data/spatial
    spatialvlm finetune --dataset data/spatial --model Qwen/Qwen2.5-VL-3B-Instruct --out runs/lora \
        --device cuda --dtype bfloat16 --lora-r 16 --batch-size 4 --grad-accum 4 --lr 2e-4 --steps 1000

(``remyxai/SpaceQwen2.5-VL-3B-Instruct`` fine-tunes the same way.) Qwen2.5-VL-3B has 3.8 B parameters,
7.5 GB in bfloat16; LoRA r=16 on q/k/v/o of its 36 layers adds about 7 M trainable parameters (with
AdamW state about 0.1 GB). A 320 x 240 data-engine image is about 100 merged image tokens, a row about
160 tokens, so a micro-batch of 4 keeps about 4-5 GB of activations and logits: **about 13-16 GB on a
24 GB GPU** (RTX 4090, A10, L4), about 10 GB with ``--gradient-checkpointing``. An optimizer step of
16 rows is about 4e13 FLOPs (language model forward and backward, vision tower forward only): **about
15-30 minutes per 1,000 steps** at 25-45 TFLOP/s sustained (4090 / A10 class; L4 about twice that),
plus about 30% with gradient checkpointing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from spatialvlm_ros.errors import ConfigError, InputError, SpatialVLMError
from spatialvlm_ros.perception.hf import Dtype, TransformersExpert

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")

#: Per-token model inputs, padded on the right in a batch (with the tokenizer's pad id for input_ids);
#: every other tensor a processor returns (pixels, image grids) is concatenated along dimension 0.
SEQUENCE_PAD_VALUES: dict[str, int | None] = {"input_ids": None, "labels": -100, "attention_mask": 0,
                                              "mm_token_type_ids": 0, "token_type_ids": 0}


class FinetuneError(SpatialVLMError, RuntimeError):
    """Training cannot go on (a non-finite loss); the last checkpoint is left as it was."""


@dataclass(frozen=True)
class FinetuneConfig:
    """LoRA fine-tuning settings.

    Attributes:
        steps: optimizer steps in total (a resumed run continues up to this).
        lr: AdamW learning rate (constant).
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_r``).
        lora_dropout: dropout on the LoRA input.
        target_modules: names (suffixes) of the linear layers that get adapters.
        batch_size: rows per micro-batch.
        grad_accum: micro-batches per optimizer step.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient norm clip (0 = no clipping).
        save_every: steps between checkpoints (the last step is always saved).
        keep_checkpoints: newest checkpoints kept on disk.
        log_every: steps between loss log lines (the first and last are always logged).
        seed: seeds the LoRA initialisation, the row order and dropout.
        max_rows: use only the first ``max_rows`` rows of the dataset (0 = all).
        device: torch device string ("cpu", "cuda", "cuda:1").
        dtype: weight dtype of the frozen model (the adapter trains in float32).
        gradient_checkpointing: recompute activations in backward (less memory, about 30% slower).
        local_files_only: never contact the hub (``HF_HUB_OFFLINE=1`` does the same).
        trust_remote_code: run code shipped with the checkpoint (off unless you mean it).
    """

    steps: int = 1000
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    batch_size: int = 4
    grad_accum: int = 4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    save_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    max_rows: int = 0
    device: str = "cpu"
    dtype: Dtype = "float32"
    gradient_checkpointing: bool = False
    local_files_only: bool = False
    trust_remote_code: bool = False

    #: Settings a resumed run may change: they do not change what a step computes.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({
        "steps", "save_every", "keep_checkpoints", "log_every", "device", "gradient_checkpointing",
        "local_files_only", "trust_remote_code"})

    def __post_init__(self) -> None:
        checks = (("steps", self.steps >= 1), ("lr", self.lr > 0), ("lora_r", self.lora_r >= 1),
                  ("lora_alpha", self.lora_alpha > 0), ("lora_dropout", 0 <= self.lora_dropout < 1),
                  ("target_modules", bool(self.target_modules)), ("batch_size", self.batch_size >= 1),
                  ("grad_accum", self.grad_accum >= 1), ("weight_decay", self.weight_decay >= 0),
                  ("max_grad_norm", self.max_grad_norm >= 0), ("save_every", self.save_every >= 1),
                  ("keep_checkpoints", self.keep_checkpoints >= 1), ("log_every", self.log_every >= 1),
                  ("max_rows", self.max_rows >= 0),
                  ("dtype", self.dtype in ("float32", "float16", "bfloat16")))
        bad = [key for key, ok in checks if not ok]
        if bad:
            raise ConfigError(f"finetune: bad {', '.join(bad)} in {self}")


@dataclass(frozen=True)
class FinetuneResult:
    """What a :func:`finetune` call did.

    Attributes:
        out_dir: the run folder (checkpoints, final adapter).
        adapter_dir: the final adapter (``adapter_config.json`` + ``adapter_model.safetensors``).
        start_step: optimizer steps already done when this call started (0: a fresh run).
        steps: optimizer steps done in total.
        losses: mean training loss of every optimizer step, 1..``steps`` (earlier calls' included).
        rows: rows in the training set.
        seconds: wall time of this call's training steps, seconds.
    """

    out_dir: Path
    adapter_dir: Path
    start_step: int
    steps: int
    losses: tuple[float, ...]
    rows: int
    seconds: float


class _TrainableVLM(TransformersExpert):
    """The project's loader (offline, device, dtype, errors naming the path) for the model to fine-tune."""

    model_class = "AutoModelForImageTextToText"
    processor_class = "AutoProcessor"
    role = "finetune --model"


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

class ChatRowsDataset:
    """The rows of a dataset folder's ``data.jsonl``, rendered for training (a map-style torch dataset).

    Args:
        dataset_dir: the folder (``data.jsonl`` and the images its rows name).
        processor: the model's processor; it must have a chat template.
        max_rows: keep only the first ``max_rows`` rows (0 = all).

    Raises:
        ConfigError: no ``data.jsonl`` in the folder, or a processor without a chat template.
        InputError: a row that is not JSON, has no image or no final assistant turn, or names a missing image.
    """

    def __init__(self, dataset_dir: str | Path, processor: Any, max_rows: int = 0) -> None:
        self.root = Path(dataset_dir)
        self.processor = processor
        path = self.root / "data.jsonl"
        if not path.is_file():
            raise ConfigError(f"finetune --dataset: {path} does not exist (write one with spatialvlm synthesize)")
        if not getattr(processor, "chat_template", None):
            raise ConfigError("finetune --model: its processor has no chat template")
        self.rows: list[tuple[list[dict[str, Any]], tuple[Path, ...]]] = []
        with open(path) as f:
            for line_no, line in enumerate(f, 1):
                if max_rows and len(self.rows) == max_rows:
                    break
                self.rows.append(self._read_row(path, line_no, line))
        if not self.rows:
            raise InputError(f"{path}: no rows")

    def _read_row(self, path: Path, line_no: int, line: str) -> tuple[list[dict[str, Any]], tuple[Path, ...]]:
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
            messages, images = row["messages"], tuple(self.root / p for p in row["images"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"{where}: not a chat row with 'messages' and 'images': {err}") from err
        if not messages or messages[-1].get("role") != "assistant" or len(messages) < 2:
            raise InputError(f"{where}: the last message must be the assistant's answer, after a prompt")
        if not images:
            raise InputError(f"{where}: the row names no image")
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise InputError(f"{where}: missing image(s) {missing}")
        return messages, images

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, "torch.Tensor"]:
        """Row ``index`` as model inputs: 1-D ``input_ids``, ``attention_mask``, ``labels`` (+ pixel tensors)."""
        from PIL import Image

        messages, paths = self.rows[index]
        images = []
        for p in paths:
            with Image.open(p) as image:
                images.append(image.convert("RGB"))
        prompt = self.processor.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
        full = self.processor.apply_chat_template(messages, tokenize=False)
        encoded = self.processor(text=[full], images=[images], return_tensors="pt")
        prompt_ids = self.processor(text=[prompt], images=[images], return_tensors="pt")["input_ids"][0]
        ids = encoded["input_ids"][0]
        # The labels start where the full chat stops agreeing with the prompt: a token merged across the
        # boundary belongs to the answer.
        n = min(len(ids), len(prompt_ids))
        differ = (ids[:n] != prompt_ids[:n]).nonzero()
        n_prompt = int(differ[0, 0]) if len(differ) else n
        item = {key: value[0] if key in SEQUENCE_PAD_VALUES else value for key, value in encoded.items()}
        labels = ids.clone()
        labels[:n_prompt] = -100
        item["labels"] = labels
        return item


@dataclass(frozen=True)
class ChatCollator:
    """``collate_fn`` for :class:`ChatRowsDataset`: right-pads per-token tensors, concatenates the rest.

    Args:
        pad_token_id: the tokenizer's pad id (``input_ids`` padding; attention mask 0, labels -100).
    """

    pad_token_id: int

    def __call__(self, items: Sequence[dict[str, "torch.Tensor"]]) -> dict[str, "torch.Tensor"]:
        """One batch of ``items``."""
        import torch
        from torch.nn.utils.rnn import pad_sequence

        batch = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if key in SEQUENCE_PAD_VALUES:
                pad = SEQUENCE_PAD_VALUES[key]
                batch[key] = pad_sequence(values, batch_first=True,
                                          padding_value=self.pad_token_id if pad is None else pad)
            else:
                batch[key] = torch.cat(values)
        return batch


@lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> tuple[int, ...]:
    return tuple(int(i) for i in np.random.default_rng([seed, epoch]).permutation(n))


def sample_indices(seed: int, n: int, first: int, count: int) -> list[int]:
    """Rows of the training samples ``first .. first + count - 1``: a fresh permutation each epoch, from (seed, epoch).

    Example:
        >>> sorted(sample_indices(0, 4, 0, 4))   # one epoch visits every row once
        [0, 1, 2, 3]
        >>> sample_indices(0, 4, 2, 4) == sample_indices(0, 4, 0, 8)[2:6]   # any window, same order
        True
    """
    return [_epoch_order(seed, s // n, n)[s % n] for s in range(first, first + count)]


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint (``state.json`` written) with the highest step in ``out_dir``, if any."""
    found = [(int(m[1]), p) for p in Path(out_dir).glob("checkpoint-*")
             if (m := _CHECKPOINT.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


def _save_checkpoint(out_dir: Path, step: int, model: Any, optimizer: Any, state: dict[str, Any],
                     keep: int) -> Path:
    import torch

    final = out_dir / f"checkpoint-{step:06d}"
    tmp = out_dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # adapter_config.json + adapter_model.safetensors
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    (tmp / STATE_FILE).write_text(json.dumps(state))
    # Rename last: a crash mid-save leaves the previous checkpoint the newest complete one.
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    complete = sorted(p for p in out_dir.glob("checkpoint-*") if _CHECKPOINT.match(p.name))
    for old in complete[:-keep]:
        shutil.rmtree(old)
    return final


def _restore(checkpoint: Path, model: Any, optimizer: Any, device: "torch.device") -> None:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    loaded = set_peft_model_state_dict(model, load_file(checkpoint / ADAPTER_WEIGHTS, device=str(device)))
    if loaded.unexpected_keys:
        raise ConfigError(f"{checkpoint}: adapter weights do not fit the model: {loaded.unexpected_keys[:3]}")
    optimizer.load_state_dict(torch.load(checkpoint / OPTIMIZER_FILE, map_location=device, weights_only=True))


def _settings(cfg: FinetuneConfig, model: str, rows: int) -> dict[str, Any]:
    """What must not change between a run and its resumption (as JSON would store it)."""
    fixed = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in FinetuneConfig.RESUMABLE}
    return json.loads(json.dumps({**fixed, "model": model, "rows": rows}))


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def finetune(dataset_dir: str | Path, model: str, out_dir: str | Path, steps: int = 1000, lr: float = 2e-4,
             lora_r: int = 16, **options: Any) -> FinetuneResult:
    """LoRA-fine-tune ``model`` on the dataset folder ``dataset_dir``; checkpoints and adapter in ``out_dir``.

    Resumes from the newest checkpoint in ``out_dir`` when there is one (see the module docstring).

    Args:
        dataset_dir: folder written by ``spatialvlm synthesize`` (``data.jsonl`` + images).
        model: base checkpoint, a local folder or a hub id (any ``AutoModelForImageTextToText``).
        out_dir: run folder (created if missing).
        steps: optimizer steps in total.
        lr: learning rate.
        lora_r: LoRA rank.
        **options: any other :class:`FinetuneConfig` field (``batch_size``, ``grad_accum``, ``device``, ...).

    Returns:
        What was done, with every step's loss.

    Raises:
        ConfigError: an unknown or bad option, a model or dataset that cannot be loaded, peft missing,
            target modules the model lacks, or a checkpoint in ``out_dir`` made with other settings.
        InputError: a malformed dataset row.
        FinetuneError: the loss became NaN or infinite.

    Example:
        >>> finetune("data", "Qwen/Qwen2.5-VL-3B-Instruct", "runs/x", learning_rate=1e-4)
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: finetune: unknown option(s) learning_rate
    """
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"finetune: unknown option(s) {', '.join(unknown)}")
    cfg = FinetuneConfig(steps=steps, lr=lr, lora_r=lora_r, **options)
    try:
        import torch
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ConfigError(f"finetune needs torch and peft (pip install peft): {err}") from err

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # the LoRA A matrices are initialised at random
    loaded = _TrainableVLM.from_pretrained(model, device=cfg.device, dtype=cfg.dtype,
                                           local_files_only=cfg.local_files_only,
                                           trust_remote_code=cfg.trust_remote_code)
    processor, base = loaded.processor, loaded.model
    if processor.tokenizer.pad_token is None:
        # Batches need padding; Llama-family tokenizers ship without a pad token.
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    data = ChatRowsDataset(dataset_dir, processor, cfg.max_rows)
    collate = ChatCollator(processor.tokenizer.pad_token_id)
    settings = _settings(cfg, model, len(data))

    if cfg.gradient_checkpointing:
        base.gradient_checkpointing_enable()
        base.enable_input_require_grads()  # the frozen embeddings would otherwise cut the graph
    try:
        peft_model = get_peft_model(base, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                     lora_dropout=cfg.lora_dropout,
                                                     target_modules=list(cfg.target_modules)))
    except ValueError as err:
        raise ConfigError(f"finetune --target-modules {','.join(cfg.target_modules)}: {err}") from err
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    start, losses = 0, []
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None:
        state = json.loads((checkpoint / STATE_FILE).read_text())
        if state["settings"] != settings:
            changed = sorted(k for k in settings.keys() | state["settings"].keys()
                             if settings.get(k) != state["settings"].get(k))
            raise ConfigError(f"{out} holds a run with other settings ({', '.join(changed)} differ); "
                              "use a new --out folder or the same settings")
        _restore(checkpoint, peft_model, optimizer, base.device)
        start, losses = state["step"], list(state["losses"])
        logger.info("resuming %s from %s (step %d of %d)", out, checkpoint.name, start, cfg.steps)
    trainable = sum(p.numel() for p in params)
    logger.info("fine-tuning %s on %d rows: %d trainable parameters, steps %d-%d", model, len(data), trainable,
                start + 1, cfg.steps)

    peft_model.train()
    began = time.perf_counter()
    rows_per_step = cfg.batch_size * cfg.grad_accum
    for step in range(start + 1, cfg.steps + 1):
        # Dropout reseeded per step: a resumed run draws what an uninterrupted one would.
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0]))
        order = sample_indices(cfg.seed, len(data), (step - 1) * rows_per_step, rows_per_step)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(cfg.grad_accum):
            batch = collate([data[i] for i in order[k * cfg.batch_size:(k + 1) * cfg.batch_size]])
            loss = peft_model(**_to_device(batch, base.device, base.dtype)).loss
            (loss / cfg.grad_accum).backward()
            total += float(loss.detach())
        loss_value = total / cfg.grad_accum
        if not math.isfinite(loss_value):
            raise FinetuneError(f"step {step}: loss is {loss_value}; lower --lr (last checkpoint kept in {out})")
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        losses.append(loss_value)
        if step == start + 1 or step % cfg.log_every == 0 or step == cfg.steps:
            logger.info("step %d/%d loss %.4f (%.2f s/step)", step, cfg.steps, loss_value,
                        (time.perf_counter() - began) / (step - start))
        if step % cfg.save_every == 0 or step == cfg.steps:
            state = {"step": step, "losses": losses, "settings": settings}
            _save_checkpoint(out, step, peft_model, optimizer, state, cfg.keep_checkpoints)
    seconds = time.perf_counter() - began

    adapter_dir = out / "adapter"
    peft_model.save_pretrained(adapter_dir)
    logger.info("adapter after %d steps in %s", cfg.steps, adapter_dir)
    return FinetuneResult(out_dir=out, adapter_dir=adapter_dir, start_step=start, steps=max(start, cfg.steps),
                          losses=tuple(losses), rows=len(data), seconds=seconds)


def _to_device(batch: dict[str, "torch.Tensor"], device: "torch.device",
               dtype: "torch.dtype") -> dict[str, "torch.Tensor"]:
    """Tensors on ``device``; floating ones (pixels) also in the model's dtype."""
    return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}
