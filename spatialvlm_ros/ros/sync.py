"""Subscribe to colour and depth and get stamp-matched pairs.

``message_filters.ApproximateTimeSynchronizer`` is used when importable (a full ROS 2 install),
else the local :class:`~spatialvlm_ros.messages.sync.StampPairer`.
"""

from __future__ import annotations

from typing import Any, Callable

from spatialvlm_ros.messages.sync import PairCallback, StampPairer

#: ``tap(stream, msg)``: sees every message of stream 0 (first) or 1 (second) before pairing.
Tap = Callable[[int, Any], None]


def make_synchronizer(node: Any, first_sub_args: tuple, second_sub_args: tuple, callback: PairCallback,
                      slop_s: float, queue_size: int, tap: Tap | None = None) -> tuple[str, Any, list[Any]]:
    """Subscribe to two topics and call ``callback(first, second)`` on stamp-matched pairs.

    ``*_sub_args`` are ``(msg_type, topic, qos)``. Uses message_filters when importable, else
    :class:`StampPairer`. ``tap``, if given, sees every message of either stream as it arrives (so the
    caller can tell "no images" from "images that never pair"). Returns which one was used (for the log),
    the object the caller must keep alive for as long as it wants pairs, and the two rclpy subscriptions
    (``node.destroy_subscription`` each to stop: a lifecycle node's deactivate).
    """
    try:
        import message_filters  # type: ignore[import-not-found]
    except ImportError:
        pairer = StampPairer(callback, slop_ns=int(slop_s * 1e9), queue_size=queue_size)
        streams = ((first_sub_args, pairer.add_first), (second_sub_args, pairer.add_second))
        created = [node.create_subscription(msg_type, topic, add if tap is None else _tapped(tap, index, add), qos)
                   for index, ((msg_type, topic, qos), add) in enumerate(streams)]
        return "local StampPairer", pairer, created
    subs = [message_filters.Subscriber(node, t, topic, qos_profile=qos)
            for (t, topic, qos) in (first_sub_args, second_sub_args)]
    if tap is not None:
        for index, sub in enumerate(subs):
            sub.registerCallback(lambda msg, index=index: tap(index, msg))
    sync = message_filters.ApproximateTimeSynchronizer(subs, queue_size, slop_s)
    sync.registerCallback(callback)
    return "message_filters.ApproximateTimeSynchronizer", (subs, sync), [sub.sub for sub in subs]


def _tapped(tap: Tap, index: int, add: Callable[[Any], None]) -> Callable[[Any], None]:
    def callback(msg: Any) -> None:
        tap(index, msg)
        add(msg)
    return callback
