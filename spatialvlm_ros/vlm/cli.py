"""``spatialvlm ask``: put a distance question to the configured spatial VLM and print what it says."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from spatialvlm_ros.config import EstimatorConfig, SpatialRewardConfig, config_path, load_config
from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.estimation.base import Pair
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.vlm.base import VLMDistanceEstimator, build_vlm

#: ``--flag`` -> ``estimator.vlm.<key>`` override.
_OVERRIDES = {"backend": "backend", "weights": "weights", "url": "url", "model": "model", "samples": "samples",
              "api_key_env": "api_key_env", "default_unit": "default_unit", "timeout": "timeout_s"}


def _frame(image: str) -> Frame:
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
    """The flags that override ``estimator.vlm.*`` (see :data:`_OVERRIDES`), shared by ``ask`` and ``evaluate``."""
    parser.add_argument("--backend", default=None,
                        help="VLM backend: compact (the config's default), openai (chat-completions) or transformers")
    parser.add_argument("--weights", default=None, help="compact backend: weights folder from 'spatialvlm train'")
    parser.add_argument("--url", default=None, help="API base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default=None, help="model name the server knows, or a checkpoint")
    parser.add_argument("--samples", type=int, default=samples_default,
                        help="answers per question" + ("" if samples_default is None else " (each scored)"))
    parser.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    parser.add_argument("--default-unit", default=None, help="unit of a bare number in an answer (m, cm, ...)")
    parser.add_argument("--timeout", type=float, default=None, help="per-request timeout, seconds")


def estimator_config_from_args(args: argparse.Namespace) -> EstimatorConfig:
    """The estimator settings of ``--config`` (default: the shipped file) with :func:`add_vlm_arguments` on top."""
    overrides = {f"estimator.vlm.{key}": getattr(args, flag) for flag, key in _OVERRIDES.items()
                 if getattr(args, flag) is not None}
    return load_config(SpatialRewardConfig, "spatial_reward_node",
                       args.config or config_path("spatial_reward.yaml"), overrides).estimator


def ask_cli(args: argparse.Namespace) -> int:
    """Ask, print one JSON line per answer (``--question``) or the estimate (``--pair``); 0 when one parsed."""
    cfg = estimator_config_from_args(args)
    if (args.question is None) == (args.pair is None):
        raise ConfigError("give either a QUESTION or --pair 'GRIPPER -> OBJECT'")
    frame = _frame(args.image)
    if args.question is not None:
        n = cfg.vlm.samples
        answers = build_vlm(cfg.vlm).ask_batch([frame.rgb] * n, [args.question] * n)
        for a in answers:
            print(json.dumps({"answer": a.text, "distance_m": _number(a.parsed.value_m),
                              "spread_m": _number(a.parsed.spread_m), "valid": a.parsed.valid,
                              "reason": a.parsed.reason, "latency_ms": round(a.latency_ms, 1)}))
        return 0 if any(a.parsed.valid for a in answers) else 1
    [est] = VLMDistanceEstimator(cfg.vlm, seed=cfg.seed).estimate(frame, [Pair.parse(args.pair)],
                                                                  args.distance or cfg.distance)
    print(json.dumps({"pair": str(est.pair), "kind": est.kind.value, "distance_m": _number(est.distance_m),
                      "uncertainty_m": _number(est.uncertainty_m), "valid": est.valid,
                      "reason": est.reason.value if est.reason else None, "detail": est.detail,
                      "answers": est.answer_text, "latency_ms": round(est.latency_ms, 1)}))
    return 0 if est.valid else 1
