"""``spatialvlm``: the one command-line entry point, with subcommands.

The parser is built here; a subcommand runs ``module:function`` (imported only then). The VLM subcommands
live in :mod:`~spatialvlm_ros.cli.vlm`, ``synthesize`` in :mod:`~spatialvlm_ros.cli.synthesize`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path
from typing import Callable

from spatialvlm_ros.config.gripper import GRIPPER_MODELS
from spatialvlm_ros.errors import SpatialVLMError


def _lazy(target: str) -> Callable[[argparse.Namespace], int]:
    """Run ``module:function`` on the parsed arguments, importing it only then (some import rclpy or torch)."""
    def run(args: argparse.Namespace) -> int:
        module, function = target.split(":")
        return getattr(importlib.import_module(module), function)(args)
    return run


def _eval_bag(args: argparse.Namespace) -> int:
    """``eval-bag``: offline needs no ROS install; ``--live`` replays over DDS, so its module imports rclpy."""
    target = ("spatialvlm_ros.ros.bag_replay:evaluate_bag_live_cli" if args.live
              else "spatialvlm_ros.bag.evaluate:evaluate_bag_cli")
    return _lazy(target)(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="spatialvlm", description="SpatialVLM-style metric spatial reasoning for ROS 2 robots.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="simulated gripper approaches a can; the reward node measures it live over ROS 2",
        description="Run sim_camera_node and spatial_reward_node as separate processes over DDS, print a live "
                    "table, and write a bag, a plot and summary.json under --out.")
    demo.add_argument("--config", type=Path, default=None,
                      help="ROS parameter file for both nodes (default: the shipped config/sim_demo.yaml)")
    demo.add_argument("--out", type=Path, default=Path("results"), help="parent folder of the results folder")
    demo.add_argument("--frames", type=int, default=None, help="trajectory length (overrides sim.n_frames)")
    demo.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: random 10-99)")
    demo.add_argument("--transport", choices=["shm", "default"], default="shm",
                      help="Fast DDS profile: 'shm' ships images through a large shared-memory segment")
    demo.set_defaults(func=_lazy("spatialvlm_ros.ros.demo:demo_cli"))

    bag = sub.add_parser(
        "eval-bag", help="replay a rosbag2 (mcap or sqlite3) through the estimator and score it",
        description="Run the spatial reward on every synchronised frame of a bag (offline, as fast as possible) or "
                    "replay it over DDS into spatial_reward_node (--live); write CSV, JSON, plots and an "
                    "annotated bag; print the metrics as JSON on the last line.")
    bag.add_argument("bag", type=Path, help="rosbag2 folder or .mcap/.db3 file")
    bag.add_argument("--config", type=Path, default=None,
                     help="spatial_reward_node parameter file (default: config/spatial_reward.yaml)")
    bag.add_argument("--out", type=Path, default=None, help="results folder (default: results/eval-<bag>-<time>)")
    bag.add_argument("--live", action="store_true", help="replay over DDS into the real spatial_reward_node")
    bag.add_argument("--rate", type=float, default=1.0, help="live replay speed factor")
    bag.add_argument("--image-topic", default=None, help="colour topic (default: detected)")
    bag.add_argument("--depth-topic", default=None, help="depth topic (default: detected; '' for none)")
    bag.add_argument("--info-topic", default=None, help="camera_info topic (default: detected)")
    bag.add_argument("--truth-topic", default=None, help="ground-truth distance topic (default: detected if any)")
    bag.add_argument("--gripper", default=None, help="gripper phrase (default: from the config's first pair)")
    bag.add_argument("--object", dest="target", default=None, help="object phrase (default: from the config)")
    bag.add_argument("--distance", choices=["gap", "centre"], default=None, help="which distance (default: config)")
    bag.add_argument("--gripper-pose-topic", default=None,
                     help="take the gripper from this geometry_msgs/PoseStamped topic (camera optical frame, or "
                          "estimator.gripper.camera_from_pose_frame_*) instead of the image")
    bag.add_argument("--gripper-model", choices=list(GRIPPER_MODELS), default=None,
                     help="with --gripper-pose-topic: the gripper's shape (default: the config's, franka_hand)")
    bag.add_argument("--gripper-opening-m", type=float, default=None,
                     help="with --gripper-pose-topic: opening between the finger pads, metres (default: widest)")
    bag.add_argument("--workers", type=int, default=None, help="offline estimator threads (default: min(4, cores))")
    bag.add_argument("--domain-id", type=int, default=None, help="--live ROS_DOMAIN_ID (default: random 10-99)")
    bag.add_argument("--truth-tolerance", type=float, default=0.05,
                     help="max time between a Float32 truth message and its frame, seconds")
    bag.set_defaults(func=_eval_bag)

    synth = sub.add_parser(
        "synthesize", help="synthesise spatial VQA (the SpatialVLM data engine) from images, a bag or the simulator",
        description="Turn images into spatial question-answer pairs (43 question types) with metric truth.")
    synth.add_argument("--input", required=True,
                       help="sim:N (N domain-randomised simulated scenes; sim-plain:N: without domain "
                            "randomisation), an image folder, or a rosbag2 file/folder")
    synth.add_argument("--out", type=Path, required=True, help="dataset folder (resumable)")
    synth.add_argument("--config", type=Path, default=None, help="synthesis YAML (default: config/synthesis.yaml)")
    synth.add_argument("--engine", choices=["local", "ray"], default="local", help="in-process or Ray Data")
    synth.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    synth.add_argument("--ray-workers", type=int, default=None, help="Ray workers (default: the cluster's CPUs)")
    synth.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    synth.add_argument("--exact-per-image", type=int, default=None,
                       help="overrides questions.exact_per_image: gripper gap/distance rows per simulated image "
                            "answered with the simulator's exact truth (0: none, as the data of VLM stages 1-3)")
    synth.add_argument("--off-path-share", type=float, default=None,
                       help="overrides sim.off_path_share: share of simulated scenes whose gripper is off its approach "
                            "line, not aimed at the target (0: none, as the data of VLM stages 1-4)")
    synth.add_argument("--zoom-share", type=float, default=None,
                       help="overrides sim.zoom_share: share of simulated scenes cut to a window around the gripper "
                            "and the target, as the compact VLM's second look reads them (0: none, every stage "
                            "before the zoom expert)")
    synth.add_argument("--wrist-share", type=float, default=None,
                       help="overrides sim.wrist_share: share of simulated scenes seen from the wrist camera fixed "
                            "to the gripper instead of the scene's camera (0: none, every stage so far)")
    synth.add_argument("--kinds", nargs="+", default=None, metavar="KIND",
                       help="overrides sim.kinds: the object kinds scenes are drawn from ('all': every kind the "
                            "simulator has, adding mug, bottle, cone, wedge; default: can box ball bowl)")
    synth.add_argument("--colours", nargs="+", default=None, metavar="COLOUR",
                       help="overrides sim.colours ('all': adding grey, silver, brown, beige, pink)")
    synth.set_defaults(func=_lazy("spatialvlm_ros.cli.synthesize:synthesize_cli"))

    # light: torch is imported only to train or ask
    from spatialvlm_ros.cli.vlm import (add_evaluate_arguments, add_finetune_arguments, add_merge_arguments,
                                        add_train_arguments, add_vlm_arguments)
    ask = sub.add_parser(
        "ask", help="ask a spatial VLM how far apart two objects are in an image",
        description="Send an image and a question to the spatial VLM of estimator.vlm (the compact in-house "
                    "model by default, an OpenAI-compatible server such as vLLM, Ollama or llama.cpp, or a "
                    "transformers checkpoint); print the answers and the metres parsed from them as JSON.")
    ask.add_argument("image", help="image file (PNG, JPEG), or 'sim' for a simulated tabletop frame")
    ask.add_argument("question", nargs="?", default=None,
                     help="free-text question, e.g. 'How far is the yellow gripper from the red can?'")
    ask.add_argument("--pair", help="instead of a question, 'GRIPPER -> OBJECT': ask the distance question and "
                                    "report mean +- std over the samples")
    ask.add_argument("--distance", choices=["gap", "centre"], default=None, help="with --pair (default: config)")
    ask.add_argument("--config", type=Path, default=None,
                     help="spatial_reward_node parameter file (default: config/spatial_reward.yaml)")
    add_vlm_arguments(ask)
    ask.set_defaults(func=_lazy("spatialvlm_ros.cli.vlm:ask_cli"))

    for name, help_text, description, add_arguments in (
            ("finetune", "LoRA-fine-tune a transformers VLM on a synthesized spatial VQA dataset",
             "Train a LoRA adapter (peft) on data.jsonl from 'spatialvlm synthesize'; checkpoints are resumable; "
             "prints a JSON summary on the last line.", add_finetune_arguments),
            ("evaluate", "score a spatial VLM with the paper's metrics on held-out spatial VQA",
             "Ask the VLM of estimator.vlm every question of a synthesized dataset (default: a fresh held-out "
             "simulated set) and along approach trajectories; print qualitative accuracy, number rate, ratio bands "
             "and Spearman beside the paper's numbers, the JSON summary on the last line.", add_evaluate_arguments),
            ("train", "train the compact in-house spatial VLM on a synthesized dataset",
             "Train the compact VLM (vlm/compact/, RGB only) from scratch on data.jsonl from 'spatialvlm "
             "synthesize'; resumable; prints a JSON summary on the last line.", add_train_arguments),
            ("merge", "average compact VLM weights of one lineage (how the shipped weights are made)",
             "Write the weight-space average of compact weights folders (same architecture and tokenizer, one "
             "fine-tuned from the other) with the given shares; prints a JSON summary on the last line.",
             add_merge_arguments)):
        command = sub.add_parser(name, help=help_text, description=description)
        add_arguments(command)
        command.set_defaults(func=_lazy(f"spatialvlm_ros.cli.vlm:{name}_cli"))

    reason = sub.add_parser(
        "reason", help="answer a composite spatial question step by step (nearest, between, fits, triangle, ...)",
        description="Break a composite spatial question into atomic queries (distance, gap, relations, sizes) "
                    "answered by the geometric estimator or the spatial VLM, with a deterministic planner or a "
                    "language model; print the trace and the answer, JSON last. --evaluate measures accuracy on "
                    "questions with known truth from fresh simulated scenes.")
    from spatialvlm_ros.cli.reason import add_reason_arguments
    add_reason_arguments(reason)
    reason.set_defaults(func=_lazy("spatialvlm_ros.cli.reason:reason_cli"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``spatialvlm``; returns the exit status (2 for bad configuration or input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except SpatialVLMError as err:
        logging.getLogger("spatialvlm").error("%s", err)
        return 2
