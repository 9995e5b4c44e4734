"""The dataset folder: streaming, resumable, deterministic.

Layout (``<id>`` = image id)::

    images/<id>.png           the RGB image
    depth/<id>.npy            float32 metres (``output.save_depth``)
    clouds/<id>.npz           each object's cleaned cloud, key = object id, (N, 3) float32 metres in the
                              scene frame (``output.save_point_clouds``)
    scenes/<id>.json          the scene record (objects, captions, 3D boxes, camera -> scene transform)
    qa/<id>.jsonl             that image's rows
    judge/<id>.json           that image's counts: objects and candidate questions seen, kept, dropped by reason
    done/<id>                 written last, atomically: the image is finished ("ok" or "filtered: ...")
    data.jsonl                every row, images in id order (written by :meth:`DatasetWriter.finalize`)
    data.parquet              the same rows (when pyarrow is installed and ``output.parquet``)
    README.md                 dataset card with counts per question type and drops by reason
    synthesis_config.json     the settings; a resumed run must use the same ones

Nothing holds the dataset in memory: each image's files are written as it finishes, and
:meth:`DatasetWriter.finalize` streams the per-image rows into the combined files. A re-run skips every
image with a done marker; since each image's output depends only on (seed, image id), a resumed or
re-ordered run produces byte-identical files.

Rows use the chat format of VLM fine-tuning (TRL / Qwen2-VL style)::

    {"images": ["images/<id>.png"],
     "messages": [{"role": "user", "content": [{"type": "image", "text": null},
                                               {"type": "text", "text": "<question>"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "<answer>"}]}], ...}

beside the machine-readable truth of :class:`~spatialvlm_ros.synthesis.questions.QAPair`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Mapping

import cv2
import numpy as np

from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.synthesis.config import SynthesisConfig
from spatialvlm_ros.synthesis.judge import JudgeCounts
from spatialvlm_ros.synthesis.questions import QUESTION_TYPES, QAPair
from spatialvlm_ros.synthesis.records import SceneRecord

logger = logging.getLogger(__name__)

CONFIG_FILE = "synthesis_config.json"
#: Rows per Parquet row group (bounded memory while converting).
PARQUET_BATCH = 2000


def _write_atomic(path: Path, data: bytes) -> None:
    # Write-then-rename: an interrupted run never leaves a half file that a resume would trust.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def chat_row(image_id: str, index: int, pair: QAPair, scene: SceneRecord) -> dict[str, Any]:
    """One dataset row: chat messages plus the pair's machine-readable fields.

    Example:
        >>> from spatialvlm_ros.synthesis.questions import QAPair
        >>> pair = QAPair(question_type="height", family="quantity", qualitative=False, object_ids=(1,),
        ...               question="How tall is the can?", answer="12 centimeters.", truth_m=0.122,
        ...               truth_unit="m", answer_value=12.0, answer_unit="cm", answer_value_m=0.12,
        ...               rounding_step_m=0.01)
        >>> scene = SceneRecord(image_id="im", width=4, height=4, canonicalised=True,
        ...                     camera_to_scene=tuple(tuple(r) for r in np.eye(4)), camera_height_m=0.5, objects=())
        >>> row = chat_row("im", 0, pair, scene)
        >>> row["id"], row["messages"][1]["content"][0]["text"], row["truth_m"]
        ('im-000', '12 centimeters.', 0.122)
    """
    refs = {o.object_id: o.reference for o in scene.objects}
    fields = dataclasses.asdict(pair)
    fields["object_ids"] = list(pair.object_ids)
    fields["judge_flags"] = list(pair.judge_flags)
    return {
        "id": f"{image_id}-{index:03d}",
        "image_id": image_id,
        "images": [f"images/{image_id}.png"],
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": pair.question}]},
            {"role": "assistant", "content": [{"type": "text", "text": pair.answer}]},
        ],
        **fields,
        "object_references": [refs.get(i, "") for i in pair.object_ids],
        "canonicalised": scene.canonicalised,
    }


class DatasetWriter:
    """Writes one dataset folder (see the module docstring).

    Args:
        root: the folder (created if missing).
        cfg: the settings; stored on first use, and a resume with different settings is refused.

    Raises:
        ConfigError: ``root`` holds a dataset made with other settings.
    """

    def __init__(self, root: Path, cfg: SynthesisConfig) -> None:
        self.root = Path(root)
        self.cfg = cfg
        optional = ((("depth",) if cfg.output.save_depth else ())
                    + (("clouds",) if cfg.output.save_point_clouds else ()))
        for sub in ("images", "scenes", "qa", "judge", "done") + optional:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        settings = json.dumps(dataclasses.asdict(cfg), sort_keys=True, indent=1)
        stored = self.root / CONFIG_FILE
        if stored.exists() and stored.read_text() != settings:
            raise ConfigError(f"{self.root} was synthesised with other settings ({stored}); "
                              "use a new --out folder or the same config and seed")
        if not stored.exists():
            _write_atomic(stored, settings.encode())

    def is_done(self, image_id: str) -> bool:
        """Whether the image was finished by this or an earlier run."""
        return (self.root / "done" / image_id).exists()

    def mark_filtered(self, image_id: str, label: str) -> None:
        """Record that the filter dropped the image (so a resume does not redo it)."""
        _write_atomic(self.root / "done" / image_id, f"filtered: {label}".encode())

    def write_image(self, rgb: np.ndarray, depth_m: np.ndarray | None, scene: SceneRecord,
                    pairs: list[QAPair], clouds_m: Mapping[int, np.ndarray] | None = None,
                    counts: Mapping[str, int] | None = None) -> None:
        """Write one image's files, the done marker last (``counts``: the judge's, see :class:`JudgeCounts`)."""
        image_id = scene.image_id
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise InputError(f"{image_id}: could not encode the image as PNG")
        _write_atomic(self.root / "images" / f"{image_id}.png", png.tobytes())
        if self.cfg.output.save_depth and depth_m is not None:
            path = self.root / "depth" / f"{image_id}.npy"
            with open(path.with_name(path.name + ".tmp"), "wb") as f:
                np.save(f, depth_m.astype(np.float32))
            os.replace(path.with_name(path.name + ".tmp"), path)
        if self.cfg.output.save_point_clouds:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **{str(k): v for k, v in (clouds_m or {}).items()})
            _write_atomic(self.root / "clouds" / f"{image_id}.npz", buffer.getvalue())
        _write_atomic(self.root / "scenes" / f"{image_id}.json", json.dumps(scene.to_json()).encode())
        rows = "".join(json.dumps(chat_row(image_id, k, p, scene)) + "\n" for k, p in enumerate(pairs))
        _write_atomic(self.root / "qa" / f"{image_id}.jsonl", rows.encode())
        _write_atomic(self.root / "judge" / f"{image_id}.json",
                      json.dumps(JudgeCounts(counts or {}).to_json(), sort_keys=True).encode())
        _write_atomic(self.root / "done" / image_id, b"ok")

    def _finished(self) -> Iterator[str]:
        for marker in sorted((self.root / "done").iterdir()):
            if marker.suffix != ".tmp" and marker.read_text() == "ok":
                yield marker.name

    def _rows(self) -> Iterator[dict[str, Any]]:
        for image_id in self._finished():
            with open(self.root / "qa" / f"{image_id}.jsonl") as f:
                for line in f:
                    yield json.loads(line)

    def _judge_counts(self) -> JudgeCounts:
        total = JudgeCounts()
        for image_id in self._finished():
            path = self.root / "judge" / f"{image_id}.json"
            if path.exists():
                total.update(json.loads(path.read_text()))
        return total

    def finalize(self) -> dict[str, Any]:
        """Stream every finished image's rows into data.jsonl (+ data.parquet) and write the card.

        Returns:
            Summary counts: images, filtered images, rows, rows per question type, parquet written.
        """
        counts: Counter[str] = Counter()
        parquet = _ParquetSink(self.root / "data.parquet") if self.cfg.output.parquet else None
        tmp = self.root / "data.jsonl.tmp"
        with open(tmp, "w") as out:
            for row in self._rows():
                out.write(json.dumps(row) + "\n")
                counts[row["question_type"]] += 1
                if parquet is not None:
                    parquet.add(row)
        os.replace(tmp, self.root / "data.jsonl")
        wrote_parquet = parquet.close() if parquet is not None else False
        markers = [m.read_text() for m in (self.root / "done").iterdir() if m.suffix != ".tmp"]
        summary = {"images": sum(m == "ok" for m in markers), "filtered": sum(m != "ok" for m in markers),
                   "rows": sum(counts.values()), "per_type": {t.name: counts[t.name] for t in QUESTION_TYPES},
                   "parquet": wrote_parquet, "judge": self._judge_counts().to_json()}
        _write_atomic(self.root / "README.md", dataset_card(summary, self.cfg).encode())
        return summary


class _ParquetSink:
    """Rows -> data.parquet in bounded batches; a no-op (with one log line) without pyarrow."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._batch: list[dict[str, Any]] = []
        self._writer: Any = None
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            logger.warning("pyarrow is not installed: writing data.jsonl only")
            self._pa = None
            return
        self._pa, self._pq = pa, pq
        text = pa.struct([("type", pa.string()), ("text", pa.string())])
        message = pa.struct([("role", pa.string()), ("content", pa.list_(text))])
        self.schema = pa.schema([
            ("id", pa.string()), ("image_id", pa.string()), ("images", pa.list_(pa.string())),
            ("messages", pa.list_(message)), ("question_type", pa.string()), ("family", pa.string()),
            ("qualitative", pa.bool_()), ("object_ids", pa.list_(pa.int64())), ("question", pa.string()),
            ("answer", pa.string()), ("truth_m", pa.float64()), ("truth_unit", pa.string()),
            ("truth_label", pa.string()), ("answer_value", pa.float64()), ("answer_unit", pa.string()),
            ("answer_value_m", pa.float64()), ("rounding_step_m", pa.float64()), ("truth_sigma_m", pa.float64()),
            ("judge_flags", pa.list_(pa.string())), ("exact_truth", pa.bool_()),
            ("object_references", pa.list_(pa.string())),
            ("canonicalised", pa.bool_())])

    def add(self, row: dict[str, Any]) -> None:
        if self._pa is None:
            return
        self._batch.append(row)
        if len(self._batch) >= PARQUET_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._writer is None:
            self._writer = self._pq.ParquetWriter(str(self.path) + ".tmp", self.schema)
        if self._batch:
            self._writer.write_table(self._pa.Table.from_pylist(self._batch, schema=self.schema))
            self._batch = []

    def close(self) -> bool:
        if self._pa is None:
            return False
        self._flush()
        self._writer.close()
        os.replace(str(self.path) + ".tmp", self.path)
        return True


def dataset_card(summary: dict[str, Any], cfg: SynthesisConfig) -> str:
    """The README.md of a dataset folder: what it is, how to load it, counts per question type, drops by reason."""
    judge = JudgeCounts(summary.get("judge", {}))
    verb = "flagged" if cfg.judge.enabled and cfg.judge.action == "flag" else "dropped"
    lines = [
        "# Synthetic spatial VQA (SpatialVLM data engine, spatialvlm_ros)", "",
        f"- images: {summary['images']} (filtered out: {summary['filtered']})",
        f"- question-answer rows: {summary['rows']}",
        f"- seed: {cfg.seed}; experts: objects={cfg.experts.objects}, depth={cfg.experts.depth}, "
        f"filter={cfg.experts.filter}, embedder={cfg.experts.embedder}",
        f"- judge: {'on, ' + cfg.judge.action if cfg.judge.enabled else 'off'}; candidate questions "
        f"{judge['candidates']}, kept {judge['kept']} ({judge.kept_fraction:.1%})", "",
        "Rows are chat `messages` (user: image + question; assistant: answer) with `images` paths, plus the exact",
        "truth in metres (`truth_m`), the question type, object ids and the answer's number, unit and rounding",
        "step. Scene frame: x forward, y left, z up on the support plane; `scenes/<id>.json` holds each image's",
        "objects, captions, 3D boxes and camera transform; elevation-dependent types are skipped on scenes that",
        "could not be canonicalised. With the judge on, `truth_sigma_m` is each measurement's standard deviation",
        "and `judge_flags` why the judge distrusts a row (flag mode). `exact_truth` rows (simulated sources) ask",
        "the gripper's gap or distance and carry the simulator's exact measurement instead.", "",
        "```python", "from datasets import load_dataset",
        "ds = load_dataset('json', data_files='data.jsonl', split='train')   # or 'parquet', 'data.parquet'", "```",
        "", "| question type | rows |", "|---|---|",
    ]
    lines += [f"| {name} | {n} |" for name, n in summary["per_type"].items()]
    lines += ["", f"## What was {verb}, and why", "",
              f"Objects seen: {judge['objects']}; candidate questions: {judge['candidates']}, "
              f"kept: {judge['kept']}.", "",
              "| what | reason | count |", "|---|---|---|"]
    lines += [f"| object | {reason} | {n} |" for reason, n in judge.by_reason("object").items()]
    lines += [f"| question | {reason} | {n} |" for reason, n in judge.by_reason("question").items()]
    return "\n".join(lines) + "\n"
