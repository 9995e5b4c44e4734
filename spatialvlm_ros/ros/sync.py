"""Pair colour and depth messages by header stamp.

``message_filters.ApproximateTimeSynchronizer`` is used when importable (a full ROS 2 install).
The package index offers no ``message_filters``, so :class:`StampPairer` is a small local
equivalent for the one case this package needs: two streams, nearest stamp within a slop.
It is rclpy-free and unit-tested on its own.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Deque

from spatialvlm_ros.ros.conversions import stamp_to_ns

PairCallback = Callable[[Any, Any], None]


class StampPairer:
    """Emit (first, second) message pairs whose header stamps differ by at most ``slop_ns``.

    Each stream keeps its last ``queue_size`` messages. On every arrival the newest message is
    matched to the closest-stamped message of the other stream; a match is emitted once, and
    everything up to it is dropped from both queues (older frames are never emitted after newer
    ones, so a late depth image cannot resurrect a stale colour frame).

    Example:
        >>> from types import SimpleNamespace as NS
        >>> msg = lambda ns: NS(header=NS(stamp=NS(sec=0, nanosec=ns)))
        >>> out = []
        >>> p = StampPairer(lambda a, b: out.append((a.header.stamp.nanosec, b.header.stamp.nanosec)),
        ...                 slop_ns=5, queue_size=4)
        >>> p.add_first(msg(100)); p.add_second(msg(103)); p.add_second(msg(200))
        >>> out
        [(100, 103)]
    """

    def __init__(self, callback: PairCallback, slop_ns: int, queue_size: int) -> None:
        self._callback = callback
        self._slop_ns = slop_ns
        self._queues: tuple[Deque[tuple[int, Any]], Deque[tuple[int, Any]]] = (
            collections.deque(maxlen=queue_size), collections.deque(maxlen=queue_size))
        self._lock = threading.Lock()

    def add_first(self, msg: Any) -> None:
        """Add a message of the first stream (colour)."""
        self._add(0, msg)

    def add_second(self, msg: Any) -> None:
        """Add a message of the second stream (depth)."""
        self._add(1, msg)

    def _add(self, index: int, msg: Any) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        with self._lock:
            self._queues[index].append((stamp, msg))
            other = self._queues[1 - index]
            if not other:
                return
            j, (other_stamp, other_msg) = min(enumerate(other), key=lambda e: abs(e[1][0] - stamp))
            if abs(other_stamp - stamp) > self._slop_ns:
                return
            # Drop the matched pair and everything older than it from both streams.
            for _ in range(j + 1):
                other.popleft()
            self._queues[index].clear()
            pair = (msg, other_msg) if index == 0 else (other_msg, msg)
        self._callback(*pair)


def make_synchronizer(node: Any, first_sub_args: tuple, second_sub_args: tuple, callback: PairCallback,
                      slop_s: float, queue_size: int) -> tuple[str, Any]:
    """Subscribe to two topics and call ``callback(first, second)`` on stamp-matched pairs.

    ``*_sub_args`` are ``(msg_type, topic, qos)``. Uses message_filters when importable, else
    :class:`StampPairer`. Returns which one was used (for the log) and the object the caller must
    keep alive for as long as it wants pairs.
    """
    try:
        import message_filters  # type: ignore[import-not-found]
    except ImportError:
        pairer = StampPairer(callback, slop_ns=int(slop_s * 1e9), queue_size=queue_size)
        for (msg_type, topic, qos), callback_of_stream in ((first_sub_args, pairer.add_first),
                                                           (second_sub_args, pairer.add_second)):
            node.create_subscription(msg_type, topic, callback_of_stream, qos)
        return "local StampPairer", pairer
    subs = [message_filters.Subscriber(node, t, topic, qos_profile=qos)
            for (t, topic, qos) in (first_sub_args, second_sub_args)]
    sync = message_filters.ApproximateTimeSynchronizer(subs, queue_size, slop_s)
    sync.registerCallback(callback)
    return "message_filters.ApproximateTimeSynchronizer", (subs, sync)
