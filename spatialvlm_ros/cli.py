"""``spatialvlm``: the one command-line entry point, with subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from spatialvlm_ros.errors import SpatialVLMError


def _demo(args: argparse.Namespace) -> int:
    from spatialvlm_ros.ros.demo import run_demo  # imports rclpy: only when asked for
    run_demo(config_file=args.config, out_root=args.out, frames=args.frames, domain_id=args.domain_id,
             transport=args.transport)
    return 0


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
    demo.set_defaults(func=_demo)
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


if __name__ == "__main__":
    sys.exit(main())
