"""The local approximate-time pairing used when message_filters is not installed."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from spatialvlm_ros.messages.sync import StampPairer


def _msg(stamp_ns: int) -> NS:
    return NS(header=NS(stamp=NS(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)), id=stamp_ns)


@pytest.fixture
def pairs() -> list[tuple[int, int]]:
    return []


def _pairer(pairs: list, slop_ns: int = 10, queue_size: int = 5) -> StampPairer:
    return StampPairer(lambda a, b: pairs.append((a.id, b.id)), slop_ns=slop_ns, queue_size=queue_size)


def test_pairs_nearest_stamp_within_slop_in_either_arrival_order(pairs: list) -> None:
    p = _pairer(pairs)
    p.add_first(_msg(100))
    p.add_second(_msg(95))        # within 10 ns: pair
    p.add_second(_msg(205))       # depth first this time
    p.add_first(_msg(200))
    assert pairs == [(100, 95), (200, 205)]


def test_no_pair_outside_slop(pairs: list) -> None:
    p = _pairer(pairs)
    p.add_first(_msg(100))
    p.add_second(_msg(150))
    assert pairs == []


def test_older_frames_are_never_emitted_after_a_newer_pair(pairs: list) -> None:
    p = _pairer(pairs)
    p.add_first(_msg(100))
    p.add_first(_msg(200))
    p.add_second(_msg(200))       # pairs with 200; 100 is dropped with it
    p.add_second(_msg(101))       # a late depth for 100 must not resurrect the stale colour frame
    assert pairs == [(200, 200)]


def test_queue_is_bounded(pairs: list) -> None:
    p = _pairer(pairs, queue_size=3)
    for t in range(0, 1000, 100):
        p.add_first(_msg(t))
    p.add_second(_msg(0))         # its partner fell out of the 3-deep queue
    p.add_second(_msg(900))
    assert pairs == [(900, 900)]
