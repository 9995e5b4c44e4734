"""Ground-truth distances from a bag, aligned to camera frames.

Three kinds of truth topic are understood:

* ``diagnostic_msgs/DiagnosticArray`` as ``sim_camera_node`` publishes on ``ground_truth``: the
  header stamp is the frame's stamp, each status is named by an object phrase and carries
  ``gap_m`` and ``centre_m``;
* ``std_msgs/Float32`` or ``Float64``: a distance in metres with no header, so it is aligned by
  bag (receive) time;
* two ``geometry_msgs/PoseStamped`` topics (gripper, object): the distance between their positions,
  i.e. a centre distance, aligned by header stamp.

Each frame takes the sample nearest in time, if within the tolerance; else its truth is NaN.
Without a truth topic named, the first of :data:`TRUTH_TOPICS` in the bag is used, if any.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader

from spatialvlm_ros.errors import BagError
from spatialvlm_ros.types import DistanceKind, Pair
from spatialvlm_ros.messages.conversions import stamp_to_ns
from spatialvlm_ros.messages.rosbag import deserialize, describe_topics, lookup_topic, read_messages, topic_types

log = logging.getLogger(__name__)

DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"
FLOATS = ("std_msgs/msg/Float32", "std_msgs/msg/Float64")
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
TRUTH_TOPICS = ("ground_truth", "ground_truth/distance")   # what sim_camera_node publishes


@dataclass(frozen=True, eq=False)
class TruthTrace:
    """Ground-truth distance samples of one pair.

    Attributes:
        times_ns: (N,) sorted sample times, integer nanoseconds.
        distance_m: (N,) distances, metres.
        by_header_stamp: ``times_ns`` are header stamps (compared with frame stamps); else bag times.
        tolerance_ns: a frame farther than this from every sample has no truth.

    Example:
        >>> trace = TruthTrace(np.array([0, 100]), np.array([0.3, 0.2]), by_header_stamp=True, tolerance_ns=10)
        >>> trace.at(stamp_ns=95, log_time_ns=0), trace.at(stamp_ns=50, log_time_ns=0)
        (0.2, nan)
    """

    times_ns: np.ndarray
    distance_m: np.ndarray
    by_header_stamp: bool
    tolerance_ns: int

    def at(self, stamp_ns: int, log_time_ns: int) -> float:
        """Truth of the frame with header stamp ``stamp_ns`` recorded at bag time ``log_time_ns``."""
        return _nearest(self.times_ns, self.distance_m, stamp_ns if self.by_header_stamp else log_time_ns,
                        self.tolerance_ns)


def resolve_truth_topics(reader: AnyReader, truth: str | None = None) -> tuple[str, ...]:
    """The ground-truth topics to read: the ones named, else the first of :data:`TRUTH_TOPICS` present, if any.

    Args:
        reader: an open bag.
        truth: ground-truth topic, or two PoseStamped topics separated by a comma.

    Raises:
        BagError: a named topic is not in the bag; the message lists the topics the bag does have.
    """
    types = topic_types(reader)
    if truth is None:
        found = [lookup_topic(types, name) for name in TRUTH_TOPICS]
        topics = tuple(t for t in found if t is not None)[:1]
    else:
        named = []
        for name in (n.strip() for n in truth.split(",")):
            topic = lookup_topic(types, name)
            if topic is None:
                raise BagError(f"truth topic {name!r} (--truth-topic) is not in the bag; it has: "
                               f"{describe_topics(types)}")
            named.append(topic)
        topics = tuple(named)
    log.info("truth topics: %s", ", ".join(topics) or "(none)")
    return topics


def _nearest(times_ns: np.ndarray, values: np.ndarray, t_ns: int, tolerance_ns: int) -> float:
    i = int(np.searchsorted(times_ns, t_ns))
    best = min((j for j in (i - 1, i) if 0 <= j < times_ns.size), key=lambda j: abs(int(times_ns[j]) - t_ns),
               default=None)
    if best is None or abs(int(times_ns[best]) - t_ns) > tolerance_ns:
        return math.nan
    return float(values[best])


def _samples(reader: AnyReader, topic: str) -> list[tuple[int, Any]]:
    """The messages of ``topic``; a bag that breaks off mid-way gives those before the break.

    The frame loop meets the same break and reports it.
    """
    samples = []
    try:
        for conn, log_ns, data in read_messages(reader, [topic]):
            samples.append((log_ns, deserialize(reader, data, conn.msgtype)))
    except BagError as err:
        log.warning("truth on %s read up to where the bag breaks off: %s", topic, err)
    return samples


def _diagnostic_truth(reader: AnyReader, topic: str, pair: Pair, kind: DistanceKind) -> tuple[list[int], list[float]]:
    key = f"{kind.value}_m"
    times, values, names = [], [], set()
    for _log_ns, msg in _samples(reader, topic):
        for status in msg.status:
            names.add(status.name)
            if status.name == pair.target:
                value = {kv.key: kv.value for kv in status.values}.get(key)
                if value is not None:
                    times.append(stamp_to_ns(msg.header.stamp))
                    values.append(float(value))
    if not values:
        raise BagError(f"truth topic {topic!r} has no {key!r} for {pair.target!r}; its objects: {sorted(names)}")
    return times, values


def _pose_truth(reader: AnyReader, topics: tuple[str, str], tolerance_ns: int) -> tuple[list[int], list[float]]:
    gripper, target = ([(stamp_to_ns(m.header.stamp), m.pose.position) for _t, m in _samples(reader, topic)]
                       for topic in topics)
    if not gripper or not target:
        raise BagError(f"truth topics {list(topics)} need messages on both")
    target.sort(key=lambda s: s[0])
    target_times = np.array([t for t, _p in target], dtype=np.int64)
    target_xyz = np.array([(p.x, p.y, p.z) for _t, p in target])
    times, values = [], []
    for t, p in gripper:
        i = int(np.argmin(np.abs(target_times - t)))
        if abs(int(target_times[i]) - t) <= tolerance_ns:
            times.append(t)
            values.append(float(np.linalg.norm(target_xyz[i] - (p.x, p.y, p.z))))
    return times, values


def load_truth(reader: AnyReader, topics: tuple[str, ...], pair: Pair, kind: DistanceKind,
               tolerance_ns: int) -> TruthTrace | None:
    """Read the ground truth of ``pair`` from ``topics`` (see the module docstring); None without topics.

    Raises:
        BagError: an unsupported message type, or a truth topic with nothing for this pair.
    """
    if not topics:
        return None
    types = topic_types(reader)
    kinds = [types[t] for t in topics]
    if len(topics) == 2 and kinds == [POSE_STAMPED, POSE_STAMPED]:
        if kind is not DistanceKind.CENTRE:
            log.warning("pose truth gives the centre distance, but the %s distance is evaluated", kind.value)
        times, values = _pose_truth(reader, (topics[0], topics[1]), tolerance_ns)
        by_header = True
    elif len(topics) == 1 and kinds[0] == DIAGNOSTIC_ARRAY:
        times, values = _diagnostic_truth(reader, topics[0], pair, kind)
        by_header = True
    elif len(topics) == 1 and kinds[0] in FLOATS:
        samples = _samples(reader, topics[0])
        times, values = [t for t, _m in samples], [float(m.data) for _t, m in samples]
        by_header = False
    else:
        raise BagError(f"truth topic(s) {list(topics)} carry {kinds}; expected one {DIAGNOSTIC_ARRAY}, "
                       f"Float32 or Float64 topic, or two {POSE_STAMPED} topics (gripper,object)")
    order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
    log.info("truth: %d samples from %s", len(values), ", ".join(topics))
    return TruthTrace(times_ns=np.asarray(times, dtype=np.int64)[order], distance_m=np.asarray(values)[order],
                      by_header_stamp=by_header, tolerance_ns=tolerance_ns)
