"""``spatialvlm merge``: a weight-space average of compact VLM checkpoints of one lineage.

Fine-tuning a model on a new kind of data moves it along a path in weight space; points between the model
before and after often keep much of both's skills (WiSE-FT, Wortsman et al. 2022, "Robust fine-tuning of
zero-shot models"). Here it trades the stage-4 model's near-contact accuracy against the stage-5 model's
refusal to read off-path poses as contact (README, "Training the compact VLM"). Only checkpoints of one
lineage (same architecture and tokenizer, one trained from the other) average sensibly; unrelated ones
are refused only when their shapes or tokenizers differ, which is all that can be checked.

No library here averages safetensors files with these checks, so it is written out (numpy, float64 sums).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.training.compact import TRAINING_CONFIG_FILE
from spatialvlm_ros.vlm.compact import MODEL_CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge_weights` wrote: the folder, the parents and their shares, the tensor count."""

    out: str
    weights: tuple[str, ...]
    shares: tuple[float, ...]
    tensors: int


def _read(folder: Path, name: str) -> str:
    path = folder / name
    if not path.is_file():
        raise ConfigError(f"merge: {str(folder)!r} lacks {name} (a weights folder from 'spatialvlm train')")
    return path.read_text()


def merge_weights(weights: Sequence[str | Path], shares: Sequence[float], out: str | Path) -> MergeResult:
    """Write ``sum(share_i * weights_i)`` to ``out`` with the parents' model config and tokenizer.

    ``training_config.json`` in ``out`` records each parent's folder, share and own training record, so
    the merged weights say how to reproduce them.

    Raises:
        ConfigError: fewer than two folders, shares that are not positive or do not sum to 1, a missing
            file, or parents whose model config, tokenizer or tensor shapes differ (except a vocabulary that
            another parent's extends: its new words' rows are added as ``train --init`` adds them).
    """
    from safetensors.numpy import load_file, save_file

    folders = [Path(w).expanduser() for w in weights]
    if len(folders) < 2 or len(shares) != len(folders):
        raise ConfigError(f"merge: needs two or more weights folders and one share each, got {len(folders)} "
                          f"folders and {len(shares)} shares")
    if not all(math.isfinite(s) and s > 0 for s in shares) or abs(sum(shares) - 1.0) > 1e-6:
        raise ConfigError(f"merge: shares must be positive and sum to 1, got {list(shares)}")
    configs = [json.loads(_read(folder, MODEL_CONFIG_FILE)) for folder in folders]
    vocabularies = [json.loads(_read(folder, TOKENIZER_FILE))["tokens"] for folder in folders]
    # A model fine-tuned on data with new words has them appended to its parent's vocabulary (train --init); the
    # parent is then read with those rows added as training added them, so that both can be averaged.
    longest = max(range(len(folders)), key=lambda i: len(vocabularies[i]))
    for folder, cfg, vocabulary in zip(folders, configs, vocabularies):
        if {**cfg, "vocab_size": 0} != {**configs[longest], "vocab_size": 0}:
            raise ConfigError(f"merge: {str(folder)!r} has another model config than {str(folders[longest])!r}")
        if vocabulary != vocabularies[longest][:len(vocabulary)]:
            raise ConfigError(f"merge: {str(folder)!r} has another tokenizer than {str(folders[longest])!r}")
    tensors = [load_file(str(folder / WEIGHTS_FILE)) for folder in folders]
    for t in tensors:
        if len(t["embed.weight"]) < configs[longest]["vocab_size"]:
            import torch

            from spatialvlm_ros.vlm.compact.network import extended_embedding
            t["embed.weight"] = extended_embedding(torch.from_numpy(t["embed.weight"]),
                                                   configs[longest]["vocab_size"]).numpy()
    for folder, t in zip(folders, tensors):
        if {k: v.shape for k, v in t.items()} != {k: v.shape for k, v in tensors[longest].items()}:
            raise ConfigError(f"merge: {str(folder)!r} has other tensors than {str(folders[longest])!r}")
    config, tokenizer = _read(folders[longest], MODEL_CONFIG_FILE), _read(folders[longest], TOKENIZER_FILE)
    merged = {k: sum(s * t[k].astype(np.float64) for s, t in zip(shares, tensors)).astype(tensors[0][k].dtype)
              for k in tensors[0]}
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    save_file(merged, str(out / WEIGHTS_FILE))
    (out / MODEL_CONFIG_FILE).write_text(config)
    (out / TOKENIZER_FILE).write_text(tokenizer)
    parents: list[dict[str, Any]] = []
    for folder, share in zip(folders, shares):
        record = folder / TRAINING_CONFIG_FILE
        parents.append({"weights": str(folder), "share": share,
                        "training": json.loads(record.read_text()) if record.is_file() else None})
    (out / TRAINING_CONFIG_FILE).write_text(json.dumps({"merged_from": parents}, indent=2) + "\n")
    return MergeResult(str(out), tuple(str(f) for f in folders), tuple(float(s) for s in shares), len(merged))
