"""``spatialvlm eval-bag``: score the spatial reward on a recorded rosbag2, offline or live over DDS.

Writes into the results folder: ``frames.csv`` (one :class:`FrameRecord` per frame),
``metrics.json``, ``trace.png`` (estimate, truth and reward over time), ``errors.png`` (when there
is ground truth) and ``annotated_bag/`` (the bag with ``reward`` and ``distance/<object>`` added).

Offline, frames are scored in-process (:mod:`.offline`). Live, they are replayed over DDS into a real
node; that needs rclpy, so this module never does it itself: the ROS side (``ros/bag_replay.py``,
which ``spatialvlm eval-bag --live`` runs) hands :func:`evaluate_bag` a :class:`LiveReplay`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from spatialvlm_ros.bag.offline import default_workers, run_offline
from spatialvlm_ros.bag.records import RunResult
from spatialvlm_ros.bag.report import summarise, write_annotated_bag, write_report
from spatialvlm_ros.bag.truth import load_truth, resolve_truth_topics
from spatialvlm_ros.config import SpatialRewardConfig, config_path, load_config
from spatialvlm_ros.errors import BagError
from spatialvlm_ros.types import DistanceKind, Pair
from spatialvlm_ros.messages.gripper_pose import GripperPoses
from spatialvlm_ros.messages.rosbag import (camera_messages, describe_topics, deserialize, lookup_topic, message_count,
                                            open_bag, read_messages, resolve_topics, topic_types)

log = logging.getLogger(__name__)

#: Keys of the CLI's JSON line, always present (null when undefined, e.g. without ground truth).
RESULT_KEYS = ("mae_m", "median_abs_error_m", "median_rel_error", "spearman", "within_0.5_2x",
               "within_0.75_1.25x", "invalid_rate", "frames_per_s", "frames", "frames_answered",
               "frames_with_truth", "latency_ms_p50", "latency_ms_p95")


@dataclass(frozen=True)
class LiveReplay:
    """How :func:`evaluate_bag` scores a bag live: its camera topics played into a real node over DDS.

    Attributes:
        run: ``run(reader, topics, config, truth=..., out_dir=...)`` plays the open bag's camera topics
            (:class:`~spatialvlm_ros.messages.rosbag.CameraTopics`) into a node configured by ``config``
            and returns its per-frame records, truth aligned; its files (parameters, log) go to ``out_dir``.
        rate: the replay speed factor ``run`` plays at (2.0 = twice as fast as recorded).

    Raises:
        BagError: ``rate`` is not > 0.
    """

    run: Callable[..., RunResult]
    rate: float = 1.0

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise BagError(f"--rate must be > 0, got {self.rate}")


@dataclass(frozen=True)
class Evaluation:
    """The outcome of :func:`evaluate_bag`.

    Attributes:
        out: the results folder.
        result: the per-frame records and the run's wall time.
        metrics: what ``metrics.json`` holds (None where a metric is undefined).
    """

    out: Path
    result: RunResult
    metrics: Mapping[str, Any]


def select_pair(config: SpatialRewardConfig, gripper: str | None = None, target: str | None = None,
                distance: str | None = None) -> SpatialRewardConfig:
    """``config`` reduced to the one pair evaluated; unnamed parts come from its first pair.

    Example:
        >>> cfg = select_pair(SpatialRewardConfig(), target="blue box", distance="centre")
        >>> [str(p) for p in cfg.pairs], str(cfg.estimator.distance)
        (['yellow gripper -> blue box'], 'centre')
    """
    first = config.pairs[0]
    pair = Pair(gripper or first.gripper, target or first.target)
    kind = DistanceKind(distance) if distance else config.estimator.distance
    return dataclasses.replace(config, pairs=(pair,), estimator=dataclasses.replace(config.estimator, distance=kind))


def with_gripper_pose(config: SpatialRewardConfig, pose_topic: str | None, model: str | None = None,
                      opening_m: float | None = None) -> SpatialRewardConfig:
    """``config`` with the gripper from a pose topic; unchanged when ``pose_topic`` is None.

    The CLI's ``--gripper-pose-topic``, ``--gripper-model`` and ``--gripper-opening-m``.

    Example:
        >>> cfg = with_gripper_pose(SpatialRewardConfig(), "/robot/tcp_pose", "robotiq_2f85", 0.05)
        >>> g = cfg.estimator.gripper
        >>> g.source, g.pose_topic, g.model, g.opening_m
        ('pose', '/robot/tcp_pose', 'robotiq_2f85', 0.05)
    """
    if pose_topic is None:
        return config
    changes: dict[str, Any] = {"source": "pose", "pose_topic": pose_topic}
    if model is not None:
        changes["model"] = model
    if opening_m is not None:
        changes["opening_m"] = opening_m
    gripper = dataclasses.replace(config.estimator.gripper, **changes)
    return dataclasses.replace(config, estimator=dataclasses.replace(config.estimator, gripper=gripper))


def default_out(bag: Path) -> Path:
    """``results/eval-<bag name>-<YYYYmmdd-HHMMSS>``."""
    name = bag.name if bag.is_dir() else bag.stem
    return Path("results") / f"eval-{name}-{datetime.now():%Y%m%d-%H%M%S}"


def evaluate_bag(bag: str | Path, config: SpatialRewardConfig, *, out: str | Path | None = None,
                 live: LiveReplay | None = None, image_topic: str | None = None, depth_topic: str | None = None,
                 info_topic: str | None = None, truth_topic: str | None = None, truth_tolerance_s: float = 0.05,
                 workers: int | None = None) -> Evaluation:
    """Evaluate ``config.pairs[0]`` on every frame of ``bag`` and write the results folder.

    Args:
        bag: rosbag2 folder, or a bare ``.mcap`` / ``.db3`` file.
        config: the reward node's configuration (see :func:`select_pair` to choose the pair).
        out: results folder (default :func:`default_out`); created if needed, must not hold results.
        live: replay over DDS into a real ``spatial_reward_node`` instead of estimating in-process
            (``live_replay`` in ``ros/bag_replay.py`` makes one).
        image_topic, depth_topic, info_topic: camera topics (default: detected; depth ``""`` = none).
        truth_topic: ground-truth topic(s) (default: ``ground_truth`` if present; see :mod:`.truth`).
        truth_tolerance_s: farthest a truth sample may be from its frame.
        workers: offline estimator threads (default :func:`default_workers`).

    Raises:
        BagError: missing or unreadable bag, missing topics, bad arguments, or a failed live replay. A bag
            that breaks off mid-way (a corrupt chunk) raises too, naming the bag and the offset, after the
            frames evaluated before it have been written to ``out``.
    """
    bag = Path(bag)
    out = Path(out) if out is not None else default_out(bag)
    if (out / "metrics.json").exists() or (out / "annotated_bag").exists():
        raise BagError(f"{out} already holds an evaluation; choose another --out")
    pair, kind = config.pairs[0], config.estimator.distance
    with open_bag(bag) as reader:
        topics = resolve_topics(reader, image=image_topic, depth=depth_topic, camera_info=info_topic)
        truth_topics = resolve_truth_topics(reader, truth_topic)
        truth = load_truth(reader, truth_topics, pair, kind, tolerance_ns=int(truth_tolerance_s * 1e9))
        colour_frames = message_count(reader, topics.image)
        out.mkdir(parents=True, exist_ok=True)
        if live is not None:
            result = live.run(reader, topics, config, truth=truth, out_dir=out)
        else:
            frames = camera_messages(reader, topics, slop_ns=int(config.sync.slop_s * 1e9),
                                     queue_size=config.sync.queue_size)
            gripper = _gripper_poses(reader, config) if config.estimator.gripper.source == "pose" else None
            result = run_offline(frames, config, truth=truth,
                                 total=colour_frames, workers=workers, gripper=gripper)
        if not result.records and not result.error:
            raise BagError(f"no frames to evaluate on {topics.image}"
                           + (f" paired with {topics.depth}" if topics.depth else ""))
        # A bag that broke off cannot be copied either: the annotated bag is left out.
        added = write_annotated_bag(reader, out / "annotated_bag", result.records, pair) if not result.error else {}
    metrics = {**summarise(result), "mode": "live" if live else "offline", "bag": str(bag), "pair": str(pair),
               "distance": kind.value, "colour_frames": colour_frames,
               "topics": {**dataclasses.asdict(topics), "truth": truth_topics},
               "added_topics": added, "workers": None if live else (workers or default_workers()),
               "rate": live.rate if live else None, "complete": not result.error, "error": result.error or None}
    title = f"{pair}: {kind.value} distance ({bag.name}, {metrics['mode']})"
    if not result.records:
        raise BagError(f"{result.error}; no frame was evaluated before it")
    written = write_report(out, result.records, metrics, title=title)
    if result.error:
        raise BagError(f"{result.error}; the {len(result.records)} frames evaluated before it are in {out} "
                       "(metrics.json says complete: false)")
    log.info("%d frames, %d answered, %.1f frames/s; results in %s", written["frames"], written["frames_answered"],
             metrics["frames_per_s"], out)
    return Evaluation(out=out, result=result, metrics=written)


POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
JOINT_STATE = "sensor_msgs/msg/JointState"


def _gripper_poses(reader: Any, config: SpatialRewardConfig) -> GripperPoses:
    """Every gripper pose (and opening) of the bag, by stamp (``estimator.gripper.pose_topic``, ``joint_state_topic``).

    Raises:
        BagError: the pose topic is missing or not a PoseStamped (naming the bag's topics).
    """
    cfg = config.estimator.gripper
    types = topic_types(reader)
    pose_topic = lookup_topic(types, cfg.pose_topic)
    if pose_topic is None or types[pose_topic] != POSE_STAMPED:
        found = f"is a {types[pose_topic]}" if pose_topic else "is not in the bag"
        raise BagError(f"gripper pose topic {cfg.pose_topic!r} {found}; it must be a geometry_msgs/PoseStamped. "
                       f"Topics: {describe_topics(types)}")
    joint_topic = lookup_topic(types, cfg.joint_state_topic) if cfg.joint_state_topic else None
    if cfg.joint_state_topic and (joint_topic is None or types[joint_topic] != JOINT_STATE):
        raise BagError(f"joint state topic {cfg.joint_state_topic!r} is not a sensor_msgs/JointState in the bag. "
                       f"Topics: {describe_topics(types)}")
    poses = GripperPoses(cfg, capacity=message_count(reader, pose_topic) + 1)
    if joint_topic:
        poses.openings.capacity = message_count(reader, joint_topic) + 1
    skipped = 0
    for connection, _time, data in read_messages(reader, [t for t in (pose_topic, joint_topic) if t]):
        msg = deserialize(reader, data, connection.msgtype)
        if connection.topic == pose_topic:
            skipped += not poses.add_pose_msg(msg)
        else:
            poses.add_joint_state_msg(msg)
    log.info("%d gripper poses on %s (%d not finite, left out)", len(poses.poses), pose_topic, skipped)
    return poses


def evaluate_bag_cli(args: argparse.Namespace, live: LiveReplay | None = None) -> int:
    """``spatialvlm eval-bag``: run :func:`evaluate_bag` from parsed arguments; print the metrics as JSON.

    Offline unless ``live`` is given: ``--live`` reaches here through ``ros/bag_replay.py``, which makes
    the replay (and imports rclpy). The last line of stdout is one JSON object with at least the keys in
    :data:`RESULT_KEYS`.
    """
    config_file = args.config if args.config is not None else config_path("spatial_reward.yaml")
    config = select_pair(load_config(SpatialRewardConfig, "spatial_reward_node", config_file),
                         args.gripper, args.target, args.distance)
    config = with_gripper_pose(config, getattr(args, "gripper_pose_topic", None), getattr(args, "gripper_model", None),
                               getattr(args, "gripper_opening_m", None))
    evaluation = evaluate_bag(args.bag, config, out=args.out, live=live, image_topic=args.image_topic,
                              depth_topic=args.depth_topic, info_topic=args.info_topic, truth_topic=args.truth_topic,
                              truth_tolerance_s=args.truth_tolerance, workers=args.workers)
    line = {key: evaluation.metrics.get(key) for key in RESULT_KEYS}
    line.update(mode=evaluation.metrics["mode"], out=str(evaluation.out))
    print(json.dumps(line))
    return 0
