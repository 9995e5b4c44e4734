"""The VLM subcommands ``ask``, ``evaluate``, ``train``, ``merge`` and ``finetune``: flags and what runs them.

``ask`` and ``evaluate`` share the flags that override ``estimator.vlm.*`` (:func:`add_vlm_arguments`).
The work is done below the door: :mod:`spatialvlm_ros.evaluation.vlm_benchmark` scores a VLM (on a
held-out set the data engine synthesises first, :func:`synthesize_held_out`),
:mod:`spatialvlm_ros.training.compact` trains the compact model, :mod:`spatialvlm_ros.training.lora`
fine-tunes a transformers VLM (both import torch only to train).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from spatialvlm_ros.config import EstimatorConfig, SpatialRewardConfig, config_path, load_config
from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.types import Pair
from spatialvlm_ros.evaluation.vlm_benchmark import (EVAL_SEED_OFFSET, PAPER_RESULTS, check_held_out, evaluate_vlm,
                                                     held_out_seed, warn_if_training_data)
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.sim.splits import SPLITS
from spatialvlm_ros.training.compact import LEARN, TrainConfig, train
from spatialvlm_ros.training.lora import FinetuneConfig, finetune
from spatialvlm_ros.training.merge import merge_weights
from spatialvlm_ros.estimation.vlm import VLMDistanceEstimator
from spatialvlm_ros.vlm.labels import final_answer, hedges, yes_no
from spatialvlm_ros.vlm.registry import build_vlm

logger = logging.getLogger(__name__)

#: Per backend, ``--flag`` -> the key it overrides in that backend's section ``estimator.vlm.<backend>.<key>``.
_SECTION_FLAGS = {
    "compact": {"weights": "weights", "default_unit": "default_unit", "zoom_weights": "zoom_weights"},
    "openai": {"url": "url", "model": "model", "api_key_env": "api_key_env", "default_unit": "default_unit",
               "timeout": "timeout_s"},
    "transformers": {"model": "model", "default_unit": "default_unit", "timeout": "max_time_s"},
}
_FLAGS = ("weights", "url", "model", "api_key_env", "default_unit", "timeout", "zoom_weights")


# ---------------------------------------------------------------------------------------------
# ask
# ---------------------------------------------------------------------------------------------

def image_frame(image: str) -> Frame:
    """The frame to ask about: ``sim`` renders the simulated tabletop, anything else is an image file."""
    if image == "sim":
        from spatialvlm_ros.config import SimConfig
        from spatialvlm_ros.sim import TabletopSim
        with TabletopSim(SimConfig(n_frames=2)) as sim:
            return sim.render(0).frame
    import cv2
    bgr = cv2.imread(str(Path(image)), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read an image from {image}")
    h, w = bgr.shape[:2]
    # VLMs look at pixels only; these nominal intrinsics just make a valid Frame.
    intrinsics = CameraIntrinsics(fx=float(w), fy=float(w), cx=(w - 1) / 2, cy=(h - 1) / 2, width=w, height=h)
    return Frame(rgb=np.ascontiguousarray(bgr[..., ::-1]), intrinsics=intrinsics)


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value  # JSON has no NaN


def add_vlm_arguments(parser: argparse.ArgumentParser, samples_default: int | None = None) -> None:
    """The flags that override ``estimator.vlm.*`` (see :data:`_SECTION_FLAGS`), shared by ``ask`` and ``evaluate``."""
    parser.add_argument("--backend", default=None,
                        help="VLM backend: compact (the config's default), openai (chat-completions) or transformers")
    parser.add_argument("--weights", default=None, help="compact backend: weights folder from 'spatialvlm train'")
    parser.add_argument("--zoom-weights", default=None,
                        help="compact backend: the second look's weights folder (re-asks a question about two "
                             "objects on a window around them; estimator.vlm.compact.zoom_weights)")
    parser.add_argument("--url", default=None, help="openai backend: API base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default=None,
                        help="openai backend: model name the server knows; transformers backend: a checkpoint")
    parser.add_argument("--samples", type=int, default=samples_default,
                        help="answers per question" + ("" if samples_default is None else " (each scored)"))
    parser.add_argument("--api-key-env", default=None, help="openai backend: environment variable holding the API key")
    parser.add_argument("--default-unit", default=None, help="unit of a bare number in an answer (m, cm, ...)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="openai backend: per-request timeout; transformers backend: generation limit, seconds")


def estimator_config_from_args(args: argparse.Namespace) -> EstimatorConfig:
    """The estimator settings of ``--config`` (default: the shipped file) with :func:`add_vlm_arguments` on top.

    Raises:
        ConfigError: a flag that the chosen backend does not take (``--url`` with ``--backend compact``).
    """
    path = args.config or config_path("spatial_reward.yaml")
    backend = args.backend or load_config(SpatialRewardConfig, "spatial_reward_node", path).estimator.vlm.backend
    overrides = {f"estimator.vlm.{key}": getattr(args, key, None) for key in ("backend", "samples", "mirror")
                 if getattr(args, key, None) is not None}
    section = _SECTION_FLAGS.get(backend, {})
    for flag in _FLAGS:
        value = getattr(args, flag)
        if value is None:
            continue
        if flag not in section:
            takers = [name for name, flags in _SECTION_FLAGS.items() if flag in flags]
            raise ConfigError(f"--{flag.replace('_', '-')} is a setting of the {' or '.join(takers)} backend, "
                              f"not of {backend!r}")
        overrides[f"estimator.vlm.{backend}.{section[flag]}"] = value
    return load_config(SpatialRewardConfig, "spatial_reward_node", path, overrides).estimator


def ask_cli(args: argparse.Namespace) -> int:
    """Ask, print one JSON line per answer (a QUESTION) or the estimate (``--pair``).

    Returns:
        With a QUESTION: 0 when some answer answers (a distance, a yes or no, or any other text that does not say it
        cannot tell; ``answered``), else 1. ``valid`` and ``reason`` are about the distance read from the answer,
        ``label`` is its yes / no (null when it gives neither). With ``--pair``: 0 when the estimate is valid,
        else 1.
    """
    cfg = estimator_config_from_args(args)
    if (args.question is None) == (args.pair is None):
        raise ConfigError("give either a QUESTION or --pair 'GRIPPER -> OBJECT'")
    frame = image_frame(args.image)
    if args.question is not None:
        n = cfg.vlm.samples
        answers = build_vlm(cfg.vlm).ask_batch([frame.rgb] * n, [args.question] * n)
        answered = [_answers(a.text) for a in answers]
        for a, said in zip(answers, answered):
            print(json.dumps({"answer": a.text, "distance_m": _number(a.parsed.value_m),
                              "spread_m": _number(a.parsed.spread_m), "valid": a.parsed.valid,
                              "reason": a.parsed.reason, "label": yes_no(a.text) if said else None,
                              "answered": said, "latency_ms": round(a.latency_ms, 1)}))
        return 0 if any(answered) or any(a.parsed.valid for a in answers) else 1
    [est] = VLMDistanceEstimator(cfg.vlm, seed=cfg.seed).estimate(frame, [Pair.parse(args.pair)],
                                                                  args.distance or cfg.distance)
    print(json.dumps({"pair": str(est.pair), "kind": est.kind.value, "distance_m": _number(est.distance_m),
                      "uncertainty_m": _number(est.uncertainty_m), "valid": est.valid,
                      "reason": est.reason.value if est.reason else None, "detail": est.detail,
                      "answers": est.answer_text, "latency_ms": round(est.latency_ms, 1)}))
    return 0 if est.valid else 1


def _answers(text: str) -> bool:
    """Whether ``text`` answers at all: its answer part is not empty and does not say it cannot tell."""
    return bool(final_answer(text)) and not hedges(text)


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------

def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``spatialvlm evaluate``'s arguments (the VLM flags are ``spatialvlm ask``'s)."""
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder from 'spatialvlm synthesize' (default: synthesise a held-out sim set)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder: metrics.json, answers.csv, trajectories.csv (and dataset/ "
                             "without --data)")
    parser.add_argument("--config", type=Path, default=None,
                        help="spatial_reward_node parameter file with estimator.vlm (default: "
                             "config/spatial_reward.yaml)")
    parser.add_argument("--synthesis-config", type=Path, default=None,
                        help="data engine YAML for the held-out set; its sim.width/height also size the approach "
                             "frames (default: config/synthesis.yaml)")
    parser.add_argument("--image-size", type=image_size, default=None, metavar="WxH",
                        help="render the held-out scenes and approaches at this size instead (e.g. 432x240 for a "
                             "16:9 camera)")
    parser.add_argument("--scenes", type=int, default=20, help="held-out simulated scenes without --data")
    parser.add_argument("--split", choices=SPLITS, default=None,
                        help="held-out scenes (without --data) and approach trajectories: 'sim' like the "
                             "training split (default; pass the split a --data set was made with); "
                             "'shift': camera rigs, a gripper, textures and lights training never shows, and "
                             "stronger sensor damage; 'plain': the look before domain randomisation; 'around': "
                             "'sim' with the camera anywhere around the target (spatialvlm_ros.sim.splits)")
    parser.add_argument("--seed", type=int, default=0,
                        help=f"held-out seed index: scenes and trajectories use {EVAL_SEED_OFFSET} + SEED")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows")
    parser.add_argument("--batch-size", type=int, default=32, help="questions per ask_batch")
    parser.add_argument("--trajectories", type=int, default=2, help="approach trajectories for Spearman (0: skip)")
    parser.add_argument("--frames", type=int, default=20, help="frames per trajectory")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                        help="approach trajectories: also ask on each frame's mirror image and average, as the "
                             "estimator does with estimator.vlm.mirror (default: that setting of --config)")
    add_vlm_arguments(parser, samples_default=1)


def image_size(text: str) -> tuple[int, int]:
    """``"432x240"`` -> ``(432, 240)`` (width, height in pixels), for ``--image-size``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 432x240") from None
    return width, height


def synthesize_held_out(out: Path, scenes: int, seed: int, synthesis_config: Path | None = None,
                        split: str = "sim", size: tuple[int, int] | None = None) -> Path:
    """Synthesise ``scenes`` simulated scenes with the held-out ``seed`` into the dataset folder ``out``.

    Args:
        out: dataset folder (created; an existing one made with the same settings is resumed).
        scenes: number of ``sim:N`` scenes.
        seed: synthesis seed, already mapped by :func:`held_out_seed`.
        synthesis_config: data engine YAML (default: the shipped ``config/synthesis.yaml``).
        split: one of :data:`~spatialvlm_ros.sim.splits.SPLITS`: ``"sim"`` (the training split's scene
            distribution), ``"shift"`` (the held-out shift), ``"plain"`` (the look before domain
            randomisation) or ``"around"`` (``sim`` with the camera anywhere around the target).
        size: (width, height) of the images, replacing the config's ``sim.width`` / ``sim.height``.

    Returns:
        ``out``.

    Raises:
        ConfigError: ``seed`` is a training seed, or bad settings.
    """
    from spatialvlm_ros.synthesis.config import load_synthesis_config
    from spatialvlm_ros.synthesis.engine import run_local
    from spatialvlm_ros.synthesis.sources import SimSource
    check_held_out(seed)
    cfg = load_synthesis_config(synthesis_config, {"seed": seed})
    if size is not None:
        cfg = dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, width=size[0], height=size[1]))
    source = SimSource(scenes, cfg, split=split)
    summary = run_local(source, out, cfg)
    logger.info("held-out set: %d scenes, %d questions, seed %d, in %s", summary.images, summary.rows, seed, out)
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def print_report(summary: dict[str, Any]) -> None:
    """Print the metrics beside the paper's Table 1, and the per-type breakdown, as rich tables."""
    from rich.console import Console
    from rich.table import Table
    console = Console()
    table = Table(title=f"{summary['model']} on {summary['data']}",
                  caption="Paper: 331 / 215 human-written questions on real images; here: templated questions "
                          "on held-out synthetic scenes. Not the same benchmark.")
    table.add_column("metric")
    table.add_column("this model", justify="right", style="bold")
    for name in PAPER_RESULTS:
        table.add_column(name, justify="right")
    rows = (("qualitative accuracy", "qualitative_accuracy"), ("answers with a number", "number_rate"),
            ("within [0.5x, 2x]", "within_0.5_2x"), ("within [0.75x, 1.25x]", "within_0.75_1.25x"))
    for label, key in rows:
        table.add_row(label, _fmt(summary[key]), *(_fmt(p.get(key)) for p in PAPER_RESULTS.values()))
    rho = summary["spearman"]
    table.add_row("Spearman along approaches", "-" if rho is None else f"{rho:.3f}", *("-" for _ in PAPER_RESULTS))
    console.print(table)
    per_type = Table(title="per question type")
    for column in ("type", "n", "accuracy", "number", "[0.5x, 2x]", "[0.75x, 1.25x]"):
        per_type.add_column(column, justify="left" if column == "type" else "right")
    for name, m in summary["per_type"].items():
        per_type.add_row(name, str(m["n"]), _fmt(m.get("accuracy")), _fmt(m.get("number_rate")),
                         _fmt(m.get("within_0.5_2x")), _fmt(m.get("within_0.75_1.25x")))
    console.print(per_type)


def evaluate_cli(args: argparse.Namespace) -> int:
    """Run ``spatialvlm evaluate``: print the tables, then the summary as JSON on the last line; 0 on success.

    Raises:
        ConfigError: bad settings or seeds.
        InputError: an unreadable dataset.
        VLMError: the model did not answer the first batch.
    """
    estimator = estimator_config_from_args(args)
    if args.split is None and args.data is not None:
        # A dataset folder does not record its split; its trajectories would silently be another split's.
        logger.warning("--data without --split: the approach trajectories are drawn like the 'sim' split; pass the "
                       "split the dataset was made with")
    split = args.split or "sim"
    seed = held_out_seed(args.seed)
    if not getattr(args, "verbose", False):
        # One simulator per scene would log a line each.
        logging.getLogger("spatialvlm_ros.sim").setLevel(logging.WARNING)
    from spatialvlm_ros.synthesis.config import load_synthesis_config
    sim = load_synthesis_config(args.synthesis_config).sim
    size = args.image_size or (sim.width, sim.height)   # the held-out scenes' and the approaches' frames
    vlm = build_vlm(estimator.vlm)
    with tempfile.TemporaryDirectory(prefix="spatialvlm-eval-") as tmp:
        data = args.data
        if data is None:
            data = synthesize_held_out((args.out or Path(tmp)) / "dataset", args.scenes, seed, args.synthesis_config,
                                       split, size)
        else:
            warn_if_training_data(data)
        section = getattr(estimator.vlm, estimator.vlm.backend, None)
        # The compact backend has no model name: it is named by its weights folder.
        model = (f"compact:{estimator.vlm.compact.weights or 'packaged'}" if estimator.vlm.backend == "compact"
                 else getattr(section, "model", estimator.vlm.backend))
        report = evaluate_vlm(vlm, data, model=model, samples=estimator.vlm.samples,
                              batch_size=args.batch_size, limit=args.limit,
                              default_unit=getattr(section, "default_unit", "") or None, trajectories=args.trajectories,
                              frames=args.frames, seed=seed, kind=estimator.distance,
                              size=size, split=split, mirror=estimator.vlm.mirror)
    summary = report.summary()
    if args.out is not None:
        report.write(args.out)
    print_report(summary)
    print(json.dumps(summary))
    return 0


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

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
    parser.add_argument("--init", type=Path, default=None,
                        help="start from these weights (an earlier run's --out) instead of a random initialisation")
    parser.add_argument("--learn", choices=[x.replace("_", "-") for x in LEARN], default=d.learn.replace("_", "-"),
                        help="'all' trains every weight; 'new-words' (with --init) only the embeddings of the words "
                             "--init's tokenizer lacks, the rest frozen: old questions answered exactly as before")
    parser.add_argument("--image-width", type=int, default=None,
                        help="model input width, a multiple of 8 (default: --init's, or 128); with --init, its "
                             "weights are resized to it")
    parser.add_argument("--image-height", type=int, default=None,
                        help="model input height, a multiple of 8 (default: --init's, or 96)")


def train_cli(args: argparse.Namespace) -> int:
    """Run ``spatialvlm train``; prints the :class:`~spatialvlm_ros.training.compact.TrainResult` as JSON last."""
    cfg = TrainConfig(data=str(args.data), out=str(args.out), steps=args.steps, max_minutes=args.max_minutes,
                      lr=args.lr, batch_images=args.batch_images, questions_per_image=args.questions_per_image,
                      seed=args.seed, threads=args.threads, held_out_seed=args.held_out_seed, d_model=args.d_model,
                      text_layers=args.text_layers, image_width=args.image_width, image_height=args.image_height,
                      init=str(args.init) if args.init else None, learn=args.learn.replace("-", "_"))
    result = train(cfg)
    print(json.dumps(dataclasses.asdict(result)))
    return 0


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``spatialvlm merge``."""
    parser.add_argument("weights", type=Path, nargs="+", help="weights folders from 'spatialvlm train' (one lineage)")
    parser.add_argument("--shares", type=float, nargs="+", required=True,
                        help="each folder's share of the average, in order; they sum to 1")
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged weights")


def merge_cli(args: argparse.Namespace) -> int:
    """Run ``spatialvlm merge``; prints the :class:`~spatialvlm_ros.training.merge.MergeResult` as JSON last."""
    result = merge_weights(args.weights, args.shares, args.out)
    print(json.dumps(dataclasses.asdict(result)))
    return 0


# ---------------------------------------------------------------------------------------------
# finetune
# ---------------------------------------------------------------------------------------------

def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``spatialvlm finetune`` arguments to ``parser`` (defaults: :class:`FinetuneConfig`'s)."""
    d = FinetuneConfig()
    parser.add_argument("--dataset", type=Path, required=True, help="dataset folder from spatialvlm synthesize")
    parser.add_argument("--model", required=True,
                        help="base model: local folder or hub id, e.g. Qwen/Qwen2.5-VL-3B-Instruct")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, adapter); resumable")
    for name, kind, what in (("steps", int, "optimizer steps in total"), ("lr", float, "learning rate"),
                             ("lora_r", int, "LoRA rank"), ("lora_alpha", int, "LoRA alpha"),
                             ("lora_dropout", float, "LoRA dropout"), ("batch_size", int, "rows per micro-batch"),
                             ("grad_accum", int, "micro-batches per optimizer step"),
                             ("weight_decay", float, "AdamW weight decay"),
                             ("max_grad_norm", float, "gradient clip norm (0 = none)"),
                             ("save_every", int, "steps between checkpoints"),
                             ("keep_checkpoints", int, "checkpoints kept"),
                             ("log_every", int, "steps between loss log lines"), ("seed", int, "random seed"),
                             ("max_rows", int, "use the first N rows only (0 = all)"),
                             ("device", str, "torch device")):
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            help=f"{what} (default: {getattr(d, name)})")
    parser.add_argument("--target-modules", default=None,
                        help=f"comma-separated layer names that get adapters (default: {','.join(d.target_modules)})")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                        help=f"weight dtype (default: {d.dtype}; bfloat16 on a GPU)")
    for flag, what in (("gradient_checkpointing", "recompute activations: less memory, slower"),
                       ("local_files_only", "never contact the model hub"),
                       ("trust_remote_code", "run code shipped with the checkpoint")):
        parser.add_argument("--" + flag.replace("_", "-"), action="store_true", default=None, help=what)


def finetune_cli(args: argparse.Namespace) -> int:
    """Run ``spatialvlm finetune`` (arguments from :func:`add_finetune_arguments`); prints a JSON summary.

    Raises:
        ConfigError: see :func:`~spatialvlm_ros.training.lora.finetune`.
        InputError: see :func:`~spatialvlm_ros.training.lora.finetune`.
        FinetuneError: see :func:`~spatialvlm_ros.training.lora.finetune`.
    """
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)
               if getattr(args, f.name, None) is not None}
    if "target_modules" in options:
        options["target_modules"] = tuple(m.strip() for m in options["target_modules"].split(",") if m.strip())
    result = finetune(args.dataset, args.model, args.out, **options)
    print(json.dumps({"out": str(result.out_dir), "adapter": str(result.adapter_dir), "rows": result.rows,
                      "start_step": result.start_step, "steps": result.steps,
                      "first_loss": result.losses[0] if result.losses else None,
                      "last_loss": result.losses[-1] if result.losses else None,
                      "seconds": round(result.seconds, 3)}))
    return 0
