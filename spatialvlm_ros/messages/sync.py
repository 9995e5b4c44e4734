"""Pair colour and depth messages by header stamp.

:class:`StampPairer` pairs two streams by nearest stamp within a slop, the one case this package
needs. The reward node uses it when ``message_filters`` is not importable (the package index offers
none), and the bag reader pairs recorded frames with it, so a bag is paired offline exactly as the
node pairs it live. It is rclpy-free and unit-tested on its own.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Deque

from spatialvlm_ros.messages.conversions import stamp_to_ns

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
