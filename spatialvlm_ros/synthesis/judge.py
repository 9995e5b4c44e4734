"""The geometric judge: what should not become a training answer, and how sure each answer is.

Experts err: a mask stops short of a silhouette or bleeds past it, depth is noisy and missing at edges,
an object is cut by the image border or split by an occluder. The judge runs twice per image, with
``judge:`` in ``config/synthesis.yaml`` (:class:`~spatialvlm_ros.synthesis.config.JudgeConfig`):

**Objects** (:func:`object_reasons`, after lifting), each rule one reason:

* ``truncated``: the mask comes within ``border_px`` of the image border, so the object may go on
  beyond it (its size and centre would be short);
* ``low_depth_coverage``: under ``min_depth_coverage`` of the mask has a depth reading;
* ``fragmented``: the cloud falls into pieces, the second-largest at least ``max_fragment_ratio`` of
  the largest (an occluder cuts it, or the mask merged two objects);
* ``implausible_size``: its largest side is outside the range ``size_priors`` gives the caption's
  head noun ("soda can" -> can: 5-30 cm); nouns without a prior pass.

**Uncertainty** (:func:`object_sigmas`): one standard deviation of each box's centre and sides, from
a boundary error of ``mask_error_px`` pixels at the object's pixel footprint (z / f) and the depth
noise ``depth_sigma_at_1m_m`` z^2 at each silhouette edge; along the view, the unseen back may hide
``hidden_depth_fraction`` of an object's depth. The height of an object resting on the support has
one uncertain end (its top), and its elevation none.

**Questions** (:class:`QuestionJudge`, the :class:`~spatialvlm_ros.synthesis.questions.Reviewer` of
question synthesis), on every candidate pair:

* ``relation_uncertain``: a left / right, front / behind, above / below answer whose centre offset is
  under ``sigmas`` standard deviations, or a taller / wider / bigger one whose log size ratio is:
  within the measurement's uncertainty the answer could flip;
* ``quantity_uncertain``: ``sigmas`` standard deviations of a quantity (with the depth-scale error
  ``depth_scale_sigma``) already exceed ``quantity_tolerance`` of its value;
* ``rounding_too_coarse``: the spoken rounding's error plus those sigmas exceed it (3 cm said for a
  2.6 cm offset measured to +-3 mm).

With ``action: drop`` a judged object leaves the scene (its caption goes to the record's ``dropped``
with the reason) and a judged pair is redrawn; with ``action: flag`` both stay, carrying their reasons
(``flags`` on the object, ``judge_flags`` on the row). Every drop is counted by reason in
:class:`JudgeCounts`, which the dataset card sums.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Mapping

from spatialvlm_ros.synthesis.config import JudgeConfig
from spatialvlm_ros.synthesis.lifting import LiftedObject
from spatialvlm_ros.synthesis.questions import CLASSIFY_PAIRS, POSITION, SIZE, TYPES_BY_NAME, QAPair, size_measure
from spatialvlm_ros.synthesis.records import Box3D, SceneObject

OBJECT_REASONS = ("truncated", "low_depth_coverage", "fragmented", "implausible_size")
QUESTION_REASONS = ("relation_uncertain", "quantity_uncertain", "rounding_too_coarse")
#: Why extraction drops an object without the judge (ambiguity removal, too few points).
EXTRACTION_REASONS = ("background", "ambiguous", "too_few_points")


class JudgeCounts(Counter):
    """What the judge saw and dropped in one image, or a dataset (summed).

    Keys: ``object:<reason>`` and ``question:<reason>`` drops (or flags), ``objects`` seen,
    ``candidates`` (question pairs synthesised) and ``kept`` ones, and ``exact``: rows answered with a
    simulator's exact truth, which the judge does not see
    (:func:`~spatialvlm_ros.synthesis.questions.exact_gripper_qa`).

    Example:
        >>> counts = JudgeCounts({"candidates": 4, "kept": 3, "question:relation_uncertain": 1})
        >>> counts.kept_fraction, counts.by_reason("question")
        (0.75, {'relation_uncertain': 1})
    """

    @property
    def kept_fraction(self) -> float:
        """Kept over candidate pairs (1.0 when there were none)."""
        return self["kept"] / self["candidates"] if self["candidates"] else 1.0

    def by_reason(self, kind: str) -> dict[str, int]:
        """``{reason: count}`` of ``kind`` ``"object"`` or ``"question"``, sorted by reason."""
        prefix = kind + ":"
        return {k[len(prefix):]: v for k, v in sorted(self.items()) if k.startswith(prefix) and v}

    def to_json(self) -> dict[str, int]:
        """Plain, sorted, without zeros."""
        return {k: int(v) for k, v in sorted(self.items()) if v}


def head_noun(caption: str) -> str:
    """The caption's last word, lower case (``"small red soda can"`` -> ``"can"``)."""
    words = caption.lower().split()
    return words[-1] if words else ""


def object_reasons(lifted: LiftedObject, caption: str, cfg: JudgeConfig,
                   priors: Mapping[str, tuple[float, float]] | None = None) -> tuple[str, ...]:
    """Why ``lifted`` should not be asked about (empty: it may be).

    Args:
        lifted: the lifted object.
        caption: its caption (its head noun picks the size prior).
        cfg: the judge settings.
        priors: ``cfg.priors``, parsed once by the caller (parsed here when None).

    Example:
        >>> import numpy as np
        >>> box = Box3D(centre_m=(1.0, 0.0, 0.06), depth_m=0.066, width_m=0.066, height_m=0.6)
        >>> lifted = LiftedObject(points_m=np.zeros((0, 3)), box=box, n_points=500, mask_pixels=520,
        ...                       depth_coverage=0.96, fragment_ratio=0.0, border_gap_px=0, depth_median_m=1.0,
        ...                       footprint_m=0.004, on_support=True)
        >>> object_reasons(lifted, "red soda can", JudgeConfig())
        ('truncated', 'implausible_size')
    """
    reasons = []
    if lifted.border_gap_px < cfg.border_px:
        reasons.append("truncated")
    if lifted.depth_coverage < cfg.min_depth_coverage:
        reasons.append("low_depth_coverage")
    if lifted.fragment_ratio > cfg.max_fragment_ratio:
        reasons.append("fragmented")
    prior = (cfg.priors if priors is None else priors).get(head_noun(caption))
    largest = max(lifted.box.width_m, lifted.box.height_m)
    if prior is not None and not prior[0] <= largest <= prior[1]:
        reasons.append("implausible_size")
    return tuple(reasons)


def object_sigmas(lifted: LiftedObject, cfg: JudgeConfig) -> tuple[tuple[float, float, float],
                                                                   tuple[float, float, float]]:
    """One standard deviation of the box's centre (x, y, z) and sides (depth, width, height), metres.

    Example:
        >>> import numpy as np
        >>> box = Box3D(centre_m=(1.0, 0.0, 0.06), depth_m=0.066, width_m=0.066, height_m=0.12)
        >>> lifted = LiftedObject(points_m=np.zeros((0, 3)), box=box, n_points=500, mask_pixels=520,
        ...                       depth_coverage=0.96, fragment_ratio=0.0, border_gap_px=9, depth_median_m=1.0,
        ...                       footprint_m=0.004, on_support=True)
        >>> centre, size = object_sigmas(lifted, JudgeConfig())
        >>> [round(s * 1000, 1) for s in size]               # mm: depth, width, height
        [17.7, 6.3, 4.5]
    """
    z = lifted.depth_median_m
    edge = math.hypot(cfg.mask_error_px * lifted.footprint_m, cfg.depth_sigma_at_1m_m * z * z)
    hidden = cfg.hidden_depth_fraction * lifted.box.depth_m
    two_edges = math.sqrt(2.0) * edge
    height = edge if lifted.on_support else two_edges
    size = (math.hypot(two_edges, hidden), two_edges, height)
    centre = (math.hypot(edge / math.sqrt(2.0), hidden / 2), edge / math.sqrt(2.0), height / 2)
    return centre, size


def _axis_sigma(obj: SceneObject, axis: int) -> float:
    return obj.sigma_centre_m[axis]


def _relative_size_sigma(measure: str, obj: SceneObject) -> float:
    depth, width, height = obj.sigma_size_m
    box = obj.box
    if measure == "height":
        return height / box.height_m if box.height_m > 0 else math.inf
    if measure == "width":
        return width / box.width_m if box.width_m > 0 else math.inf
    sides = (box.depth_m, box.width_m, box.height_m)
    if min(sides) <= 0:
        return math.inf
    return math.sqrt(sum((s / v) ** 2 for s, v in zip(obj.sigma_size_m, sides)))


def _distance_sigma(delta: tuple[float, ...], sa: tuple[float, ...], sb: tuple[float, ...]) -> float:
    """Linearised sigma of |delta| with independent per-axis sigmas of both ends."""
    norm = math.sqrt(sum(d * d for d in delta))
    if norm == 0:
        return math.sqrt(sum(a * a + b * b for a, b in zip(sa, sb)) / len(delta))
    return math.sqrt(sum((d / norm) ** 2 * (a * a + b * b) for d, a, b in zip(delta, sa, sb)))


def quantity_sigma(quantity: str, a: SceneObject, b: SceneObject | None) -> float:
    """One standard deviation of a quantity question's measured value (before the depth-scale error)."""
    ca, sa = a.sigma_centre_m, a.sigma_size_m
    if quantity == "height":
        return sa[2]
    if quantity == "width":
        return sa[1]
    if quantity == "elevation":
        return 0.0 if a.on_support else math.hypot(ca[2], sa[2] / 2)
    assert b is not None, f"{quantity} needs two objects"
    cb, sb = b.sigma_centre_m, b.sigma_size_m
    delta = tuple(q - p for p, q in zip(a.box.centre_m, b.box.centre_m))
    if quantity == "distance":
        return _distance_sigma(delta, ca, cb)
    if quantity == "horizontal_distance":
        return _distance_sigma(delta[:2], ca[:2], cb[:2])
    if quantity == "vertical_distance":
        return math.hypot(ca[2], cb[2])
    if quantity == "gap":
        # Separation of the axis-aligned bounds per axis; each end moves with a centre and half a side.
        separation = [max(0.0, la - ub, lb - ua) for la, ua, lb, ub in
                      zip(a.box.lower_m, a.box.upper_m, b.box.lower_m, b.box.upper_m)]
        ends_a = [math.hypot(c, s / 2) for c, s in zip(ca, sa)]
        ends_b = [math.hypot(c, s / 2) for c, s in zip(cb, sb)]
        return _distance_sigma(tuple(separation), tuple(ends_a), tuple(ends_b))
    raise KeyError(f"unknown quantity {quantity!r}")


def relation_sigma(relation: str, a: SceneObject, b: SceneObject) -> float:
    """Sigma of the relation's evidence: metres for positions, the log size ratio for sizes."""
    if relation in POSITION:
        axis = POSITION[relation][0]
        return math.hypot(_axis_sigma(a, axis), _axis_sigma(b, axis))
    measure = SIZE[relation][0]
    return math.hypot(_relative_size_sigma(measure, a), _relative_size_sigma(measure, b))


def _log_ratio(relation: str, a: Box3D, b: Box3D) -> float:
    measure = SIZE[relation][0]
    ma, mb = size_measure(measure, a), size_measure(measure, b)
    return abs(math.log(ma / mb)) if ma > 0 and mb > 0 else 0.0


class QuestionJudge:
    """The judge of one image's candidate pairs; counts what it drops (or flags) in :attr:`counts`.

    Args:
        cfg: the judge settings.
        counts: where to count (a fresh :class:`JudgeCounts` when None).

    Example:
        >>> from spatialvlm_ros.synthesis.questions import TYPES_BY_NAME, make_qa
        >>> from spatialvlm_ros.synthesis.config import QuestionsConfig
        >>> import numpy as np
        >>> def obj(i, y):
        ...     box = Box3D(centre_m=(1.0, y, 0.05), depth_m=0.1, width_m=0.1, height_m=0.1)
        ...     return SceneObject(object_id=i, name="box", caption="box", reference=f"box {i}", box=box,
        ...                        pixel_centre=(0.0, 0.0), n_points=100, sigma_centre_m=(0.02, 0.02, 0.02))
        >>> judge = QuestionJudge(JudgeConfig())
        >>> near, far = obj(1, 0.03), obj(2, 0.0)
        >>> pair = make_qa(TYPES_BY_NAME["predicate_left"], near, far, np.random.default_rng(0), QuestionsConfig())
        >>> judge.review(pair, near, far) is None, judge.counts.to_json()     # 3 cm apart, sigma 2.8 cm
        (True, {'candidates': 1, 'question:relation_uncertain': 1})
    """

    def __init__(self, cfg: JudgeConfig, counts: JudgeCounts | None = None) -> None:
        self.cfg = cfg
        self.counts = JudgeCounts() if counts is None else counts

    def reasons(self, pair: QAPair, a: SceneObject, b: SceneObject | None) -> tuple[tuple[str, ...], float]:
        """(why the pair should not be trained on, the sigma of its ``truth_m``)."""
        cfg = self.cfg
        if pair.qualitative:
            assert b is not None
            relation = TYPES_BY_NAME[pair.question_type].relation
            first = CLASSIFY_PAIRS[relation][0] if pair.family == "classify" else relation
            sigma = relation_sigma(first, a, b)
            evidence = abs(pair.truth_m) if first in POSITION else _log_ratio(first, a.box, b.box)
            return (("relation_uncertain",) if evidence < cfg.sigmas * sigma else ()), sigma
        measured = abs(pair.truth_m)
        if pair.family == "quantity":
            sigma = quantity_sigma(pair.question_type, a, b)
        else:
            assert b is not None
            axis = POSITION[TYPES_BY_NAME[pair.question_type].relation][0]
            sigma = math.hypot(_axis_sigma(a, axis), _axis_sigma(b, axis))
        sigma = math.hypot(sigma, cfg.depth_scale_sigma * measured)
        allowed = cfg.quantity_tolerance * measured
        spread = cfg.sigmas * sigma
        if spread > allowed:
            return ("quantity_uncertain",), sigma
        assert pair.answer_value_m is not None
        if abs(abs(pair.answer_value_m) - measured) + spread > allowed:
            return ("rounding_too_coarse",), sigma
        return (), sigma

    def review(self, pair: QAPair, a: SceneObject, b: SceneObject | None) -> QAPair | None:
        """The pair with its sigma and flags, or None when ``action`` is drop and a rule fires."""
        self.counts["candidates"] += 1
        reasons, sigma = self.reasons(pair, a, b)
        inherited = tuple(dict.fromkeys(a.flags + (b.flags if b is not None else ())))
        for reason in reasons:
            self.counts[f"question:{reason}"] += 1
        if reasons and self.cfg.action == "drop":
            return None
        self.counts["kept"] += 1
        return dataclasses.replace(pair, truth_sigma_m=sigma, judge_flags=inherited + reasons)


class CountingReviewer:
    """Counts candidates without judging (``judge.enabled: false``), so the card still has the totals."""

    def __init__(self, counts: JudgeCounts | None = None) -> None:
        self.counts = JudgeCounts() if counts is None else counts

    def review(self, pair: QAPair, a: SceneObject, b: SceneObject | None) -> QAPair:
        """The pair unchanged."""
        self.counts["candidates"] += 1
        self.counts["kept"] += 1
        return pair
