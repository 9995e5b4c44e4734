"""The 43 question types of SpatialVLM (Appendix A.3), their exact truths, and the QA sampler.

Every relation is defined on the objects' 3D boxes in the scene frame (x forward, y left, z up; see
:mod:`spatialvlm_ros.synthesis.records`), comparing box centres for positions and box extents for sizes:

* A is **left** of B when A's centre is further along +y (the camera's left) by more than
  ``min_margin_m``; **right** likewise along -y.
* A is **above** B when A's centre is higher (z); **below** when lower. Needs the canonical frame.
* A is **behind** B when A's centre is further along forward (x, away from the camera); **front**
  when nearer.
* A is **tall** (taller) than B when A's height (z extent) is at least ``min_size_ratio`` times B's;
  **short** the reverse. Needs the canonical frame.
* A is **wide** (wider) when its width (the longer side of its footprint on the table; the y extent,
  across the view, for a box that is not turned) is; **thin** the reverse.
* A is **big** (bigger) when its box volume is; **small** the reverse.

A comparison within the margin / ratio is a tie and yields no qualitative question (it would have
no defensible answer). Quantities, metres: **distance** between box centres; **gap** between the
boxes (0 when they touch or overlap); **height** = z extent; **width** = the footprint's longer side; **elevation** =
height of the box's bottom above the support plane (0 if below it); **vertical distance** = |dz| of
the centres; **horizontal distance** = the centres' distance in the x-y plane. **Differences** ("how
much more to the left is A than B") are the signed centre offsets along the relation's axis; a
negative one is answered by saying A is that much in the opposite direction.

Swapping A and B never changes a truth beyond its symmetry: predicates flip, choices pick the same
object, classifications flip, quantities stay, differences change sign.

``truth_m`` is the engine's measurement, exact on the scene record; whether it is trustworthy enough
to train on is the judge's call (:mod:`~spatialvlm_ros.synthesis.judge`), passed to
:func:`synthesize_qa` as a :class:`Reviewer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from spatialvlm_ros.perception.experts import ExactDistances
from spatialvlm_ros.synthesis.config import QuestionsConfig
from spatialvlm_ros.synthesis.records import Box3D, SceneObject, SceneRecord
from spatialvlm_ros.synthesis.rounding import say_distance
from spatialvlm_ros.vlm.templates import (ANSWER_FRAMES, CLASSIFY_WORDS, QUANTITY_ANSWERS, QUANTITY_QUESTIONS,
                                          QUESTION_FRAMES, RELATION_WORDS)

Family = Literal["predicate", "choice", "classify", "quantity", "difference"]

#: Position relations: (scene axis, sign). Axis 0 = x forward, 1 = y left, 2 = z up.
POSITION = {"left": (1, 1), "right": (1, -1), "above": (2, 1), "below": (2, -1), "behind": (0, 1), "front": (0, -1)}
#: Size relations: (measure, sign).
SIZE = {"tall": ("height", 1), "short": ("height", -1), "wide": ("width", 1), "thin": ("width", -1),
        "big": ("volume", 1), "small": ("volume", -1)}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above", "behind": "front",
            "front": "behind", "tall": "short", "short": "tall", "wide": "thin", "thin": "wide", "big": "small",
            "small": "big"}
CLASSIFY_PAIRS = {name: tuple(name.split("_")) for name in CLASSIFY_WORDS}
#: Exact gripper questions pick an object with weight 1 / (gap + this), metres: near objects more often.
NEAR_WEIGHT_M = 0.05
#: Quantity types: (number of objects, needs the canonical frame).
QUANTITIES = {"distance": (2, False), "gap": (2, False), "height": (1, True), "width": (1, False),
              "elevation": (1, True), "vertical_distance": (2, True), "horizontal_distance": (2, True)}
#: Relations measured along up: meaningless without the support plane.
_UP_RELATIONS = {"above", "below", "tall", "short"}


@dataclass(frozen=True)
class QuestionType:
    """One of the 43 question types.

    Attributes:
        name: e.g. ``"predicate_left"``, ``"classify_left_right"``, ``"distance"``, ``"difference_above"``.
        family: predicate, choice, classify, quantity or difference.
        relation: the relation, either-or pair or quantity it asks about (``"left"``, ``"left_right"``, ``"gap"``).
        arity: objects it mentions (1 or 2).
        needs_up: depends on the support plane (skipped on non-canonicalised scenes).
    """

    name: str
    family: Family
    relation: str
    arity: int
    needs_up: bool

    @property
    def qualitative(self) -> bool:
        """Predicates, choices and classifications are qualitative; quantities and differences are not."""
        return self.family in ("predicate", "choice", "classify")


def _build_types() -> tuple[QuestionType, ...]:
    types = [QuestionType(f"{family}_{r}", family, r, 2, r in _UP_RELATIONS)
             for family in ("predicate", "choice") for r in RELATION_WORDS]
    types += [QuestionType(f"classify_{p}", "classify", p, 2, bool(set(CLASSIFY_PAIRS[p]) & _UP_RELATIONS))
              for p in CLASSIFY_WORDS]
    types += [QuestionType(q, "quantity", q, arity, up) for q, (arity, up) in QUANTITIES.items()]
    types += [QuestionType(f"difference_{r}", "difference", r, 2, r in _UP_RELATIONS) for r in POSITION]
    return tuple(types)


#: All 43 types, by family.
QUESTION_TYPES: tuple[QuestionType, ...] = _build_types()
TYPES_BY_NAME = {t.name: t for t in QUESTION_TYPES}


def size_measure(measure: str, box: Box3D) -> float:
    """Height (z extent, m), width (y extent, m) or volume (m^3) of a box."""
    return {"height": box.height_m, "width": box.width_m, "volume": box.volume_m3}[measure]


def relation_truth(relation: str, a: Box3D, b: Box3D) -> float:
    """Signed truth behind "A is <relation> B": positive when it holds.

    Position relations: the centre offset along the relation's direction, metres. Size relations: the
    difference of the measure (metres; cubic metres for big / small), signed the same way.

    Example:
        >>> a = Box3D(centre_m=(1.0, 0.3, 0.1), depth_m=0.1, width_m=0.1, height_m=0.2)
        >>> b = Box3D(centre_m=(1.2, 0.0, 0.1), depth_m=0.1, width_m=0.1, height_m=0.1)
        >>> relation_truth("left", a, b), relation_truth("front", a, b), relation_truth("short", a, b)
        (0.3, 0.2, -0.1)
    """
    if relation in POSITION:
        axis, sign = POSITION[relation]
        return round(sign * (a.centre_m[axis] - b.centre_m[axis]), 12)
    measure, sign = SIZE[relation]
    return round(sign * (size_measure(measure, a) - size_measure(measure, b)), 12)


def relation_holds(relation: str, a: Box3D, b: Box3D, cfg: QuestionsConfig) -> bool | None:
    """Whether A is <relation> B: True, False, or None for a tie (within the margin / size ratio)."""
    if relation in POSITION:
        value = relation_truth(relation, a, b)
        return None if abs(value) <= cfg.min_margin_m else value > 0
    measure, sign = SIZE[relation]
    ma, mb = size_measure(measure, a), size_measure(measure, b)
    if ma <= 0 or mb <= 0:
        return None
    log_ratio = sign * math.log(ma / mb)
    return None if abs(log_ratio) < math.log(cfg.min_size_ratio) else log_ratio > 0


def quantity_truth(quantity: str, a: Box3D, b: Box3D | None = None) -> float:
    """The exact value of a quantity type, metres (see the module docstring for each definition).

    Example:
        >>> a = Box3D(centre_m=(1.0, 0.0, 0.1), depth_m=0.2, width_m=0.2, height_m=0.2)
        >>> b = Box3D(centre_m=(1.0, 0.5, 0.4), depth_m=0.2, width_m=0.2, height_m=0.2)
        >>> [round(quantity_truth(q, a, b), 3) for q in ("distance", "gap", "vertical_distance", "elevation")]
        [0.583, 0.316, 0.3, 0.0]
    """
    if quantity == "height":
        return a.height_m
    if quantity == "width":
        return a.width_m
    if quantity == "elevation":
        return max(0.0, a.bottom_m)
    assert b is not None, f"{quantity} needs two objects"
    delta = np.asarray(b.centre_m) - np.asarray(a.centre_m)
    if quantity == "distance":
        return float(np.linalg.norm(delta))
    if quantity == "vertical_distance":
        return float(abs(delta[2]))
    if quantity == "horizontal_distance":
        return float(np.hypot(delta[0], delta[1]))
    if quantity == "gap":
        return a.gap_m(b)
    raise KeyError(f"unknown quantity {quantity!r}")


@dataclass(frozen=True)
class QAPair:
    """One synthesised question and answer, with the machine-readable truth beside the text.

    Attributes:
        question_type: a :data:`QUESTION_TYPES` name.
        family: its family.
        qualitative: predicate / choice / classify (else quantity / difference).
        object_ids: ids of A (and B) in the scene record, in question order.
        question: the question text.
        answer: the answer text.
        truth_m: the exact signed truth behind the answer: metres (cubic metres for big / small, see
            ``truth_unit``); for qualitative types the relation's signed evidence (positive = holds).
        truth_unit: ``"m"`` or ``"m3"``.
        truth_label: qualitative answer: ``"yes"`` / ``"no"``, the chosen object's id (choices), or the
            relation that holds (classify); None for quantities and differences.
        answer_value: the number in the answer text (quantities and differences), else None.
        answer_unit: its unit (m, cm, ft, in), else None.
        answer_value_m: ``answer_value`` in metres (signed like ``truth_m`` for differences), else None.
        rounding_step_m: the rounding step of the answer, metres, else None.
        truth_sigma_m: one standard deviation of ``truth_m`` by the judge's uncertainty model (in
            ``truth_unit``), None when no judge ran.
        judge_flags: why the judge distrusts the pair (``judge.action: flag``); empty when trusted.
        exact_truth: ``truth_m`` is a simulator's exact measurement (:func:`exact_gripper_qa`), not the
            lifted boxes'.
    """

    question_type: str
    family: str
    qualitative: bool
    object_ids: tuple[int, ...]
    question: str
    answer: str
    truth_m: float
    truth_unit: str
    truth_label: str | None = None
    answer_value: float | None = None
    answer_unit: str | None = None
    answer_value_m: float | None = None
    rounding_step_m: float | None = None
    truth_sigma_m: float | None = None
    judge_flags: tuple[str, ...] = ()
    exact_truth: bool = False


class Reviewer(Protocol):
    """Decides whether a synthesised pair may become a training answer (the judge)."""

    def review(self, pair: QAPair, a: SceneObject, b: SceneObject | None) -> QAPair | None:
        """The pair as it enters the dataset (with its uncertainty and any flags), or None to drop it."""
        ...


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _pick_concise(options: tuple[str, ...], rng: np.random.Generator, decay: float) -> str:
    weights = decay ** np.arange(len(options))
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]


def _sentence(template: str, **slots: str) -> str:
    text = template.format(**slots)
    return text[:1].upper() + text[1:]


def make_qa(qtype: QuestionType, a: SceneObject, b: SceneObject | None, rng: np.random.Generator,
            cfg: QuestionsConfig) -> QAPair | None:
    """Synthesise one question of type ``qtype`` about A (and B); None when the relation is a tie.

    Args:
        qtype: the question type.
        a: object A.
        b: object B (None for one-object quantities).
        rng: draws phrasings and the rounding.
        cfg: margins, rounding and answer-bias settings.

    Returns:
        The question and answer with their truth, or None for a tie.
    """
    slots = {"A": a.reference, "B": b.reference if b is not None else ""}
    ids = (a.object_id,) if qtype.arity == 1 or b is None else (a.object_id, b.object_id)
    common = {"question_type": qtype.name, "family": qtype.family, "qualitative": qtype.qualitative,
              "object_ids": ids}
    decay = cfg.concise_decay
    rel = qtype.relation
    if qtype.family in ("predicate", "choice", "classify"):
        assert b is not None
        first = CLASSIFY_PAIRS[rel][0] if qtype.family == "classify" else rel
        holds = relation_holds(first, a.box, b.box, cfg)
        if holds is None:
            return None
        truth = relation_truth(first, a.box, b.box)
        unit = "m3" if SIZE.get(first, ("",))[0] == "volume" else "m"
        if qtype.family == "predicate":
            words, opposite = RELATION_WORDS[rel], RELATION_WORDS[OPPOSITE[rel]]
            slots.update(rel=_pick(words["rel"], rng), opp_rel=_pick(opposite["rel"], rng))
            question = _sentence(_pick(QUESTION_FRAMES["predicate"], rng), **slots)
            answer = _sentence(_pick_concise(ANSWER_FRAMES["predicate_yes" if holds else "predicate_no"], rng, decay),
                               **slots)
            return QAPair(**common, question=question, answer=answer, truth_m=truth, truth_unit=unit,
                          truth_label="yes" if holds else "no")
        if qtype.family == "choice":
            chosen, other = (a, b) if holds else (b, a)
            slots.update(cmp=_pick(RELATION_WORDS[rel]["cmp"], rng), X=chosen.reference, Y=other.reference)
            question = _sentence(_pick(QUESTION_FRAMES["choice"], rng), **slots)
            answer = _sentence(_pick_concise(ANSWER_FRAMES["choice"], rng, decay), **slots)
            return QAPair(**common, question=question, answer=answer, truth_m=truth, truth_unit=unit,
                          truth_label=str(chosen.object_id))
        held = first if holds else CLASSIFY_PAIRS[rel][1]
        slots.update(rels=_pick(CLASSIFY_WORDS[rel], rng), rel=_pick(RELATION_WORDS[held]["rel"], rng),
                     short=RELATION_WORDS[held]["short"][0])
        question = _sentence(_pick(QUESTION_FRAMES["classify"], rng), **slots)
        answer = _sentence(_pick_concise(ANSWER_FRAMES["classify"], rng, decay), **slots)
        return QAPair(**common, question=question, answer=answer, truth_m=truth, truth_unit=unit, truth_label=held)

    if qtype.family == "quantity":
        return _quantity_qa(qtype, a, b, quantity_truth(rel, a.box, b.box if b is not None else None), rng, cfg)

    assert b is not None
    truth = relation_truth(rel, a.box, b.box)
    spoken = say_distance(abs(truth), rng, cfg.imperial_probability, cfg.coarse_probability, cfg.max_coarse_error)
    slots.update(more=_pick(RELATION_WORDS[rel]["more"], rng), value=spoken.text)
    question = _sentence(_pick(QUESTION_FRAMES["difference"], rng), **slots)
    slots["less"] = _pick(RELATION_WORDS[OPPOSITE[rel]]["more"], rng)
    answer = _sentence(_pick_concise(ANSWER_FRAMES["difference_more" if truth >= 0 else "difference_less"], rng, decay),
                       **slots)
    return QAPair(**common, question=question, answer=answer, truth_m=truth, truth_unit="m",
                  answer_value=spoken.value, answer_unit=spoken.unit,
                  answer_value_m=math.copysign(spoken.value_m, truth), rounding_step_m=spoken.step_m)


def _quantity_qa(qtype: QuestionType, a: SceneObject, b: SceneObject | None, truth: float, rng: np.random.Generator,
                 cfg: QuestionsConfig, exact_truth: bool = False) -> QAPair:
    """A quantity question about A (and B) answered with ``truth`` metres (``exact_truth``: sigma 0, not judged)."""
    slots = {"A": a.reference, "B": b.reference if b is not None else ""}
    ids = (a.object_id,) if qtype.arity == 1 or b is None else (a.object_id, b.object_id)
    spoken = say_distance(truth, rng, cfg.imperial_probability, cfg.coarse_probability, cfg.max_coarse_error)
    question = _sentence(_pick(QUANTITY_QUESTIONS[qtype.relation], rng), **slots)
    answer = _sentence(_pick_concise(QUANTITY_ANSWERS[qtype.relation], rng, cfg.concise_decay), **slots,
                       value=spoken.text)
    return QAPair(question_type=qtype.name, family=qtype.family, qualitative=False, object_ids=ids,
                  question=question, answer=answer, truth_m=truth, truth_unit="m", answer_value=spoken.value,
                  answer_unit=spoken.unit, answer_value_m=spoken.value_m, rounding_step_m=spoken.step_m,
                  truth_sigma_m=0.0 if exact_truth else None, exact_truth=exact_truth)


def exact_gripper_qa(scene: SceneRecord, exact: ExactDistances, rng: np.random.Generator,
                     cfg: QuestionsConfig) -> list[QAPair]:
    """``cfg.exact_per_image`` gap / centre-distance questions from the gripper, answered with a simulator's truth.

    These are the questions a reach reward asks, and a depth-lifted box cannot answer them near contact: two
    boxes overlap while the surfaces are still centimetres apart, and the judge rightly drops a 1 cm gap
    measured to +-1 cm. A simulator knows the surface gap exactly, so these rows carry it (``truth_sigma_m``
    0, ``exact_truth``) and bypass the judge. Nearer objects are asked about more often (weight
    1 / (gap + 5 cm)), so scenes set up near contact yield near-contact questions. The gripper or an object
    the record left out (cut by the image border, judged away) is not asked about.

    Example:
        >>> from spatialvlm_ros.synthesis.records import SceneObject
        >>> def obj(i, name):
        ...     box = Box3D(centre_m=(1.0, 0.1 * i, 0.05), depth_m=0.1, width_m=0.1, height_m=0.1)
        ...     return SceneObject(object_id=i, name=name, caption=name, reference=f"the {name}", box=box,
        ...                        pixel_centre=(0.0, 0.0), n_points=100)
        >>> scene = SceneRecord(image_id="x", width=20, height=20, canonicalised=True,
        ...                     camera_to_scene=tuple(tuple(r) for r in np.eye(4)), camera_height_m=0.5,
        ...                     objects=(obj(0, "yellow gripper"), obj(1, "red can")))
        >>> exact = ExactDistances("yellow gripper", {"red can": 0.012}, {"red can": 0.05})
        >>> pairs = exact_gripper_qa(scene, exact, np.random.default_rng(0), QuestionsConfig(exact_per_image=2))
        >>> sorted((p.question_type, p.truth_m, p.object_ids) for p in pairs)
        [('distance', 0.05, (0, 1)), ('gap', 0.012, (0, 1))]
    """
    by_name = {o.name: o for o in scene.objects}
    gripper = by_name.get(exact.gripper)
    others = [o for o in scene.objects if o is not gripper and o.name in exact.gap_m and o.name in exact.centre_m]
    if gripper is None or not others or cfg.exact_per_image == 0:
        return []
    weights = np.array([1.0 / (max(exact.gap_m[o.name], 0.0) + NEAR_WEIGHT_M) for o in others])
    first_kind = int(rng.integers(2))
    out = []
    for k in range(cfg.exact_per_image):
        target = others[int(rng.choice(len(others), p=weights / weights.sum()))]
        # Alternate the kinds so both are asked equally; a gap is 0 at contact (never negative, as for boxes).
        kind = ("gap", "distance")[(first_kind + k) % 2]
        truth = max(exact.gap_m[target.name], 0.0) if kind == "gap" else exact.centre_m[target.name]
        out.append(_quantity_qa(TYPES_BY_NAME[kind], gripper, target, truth, rng, cfg, exact_truth=True))
    return out


def eligible_types(scene: SceneRecord) -> tuple[QuestionType, ...]:
    """Types a scene can be asked: enough objects, and nothing elevation-dependent unless canonicalised."""
    n = len(scene.objects)
    return tuple(t for t in QUESTION_TYPES if t.arity <= n and (scene.canonicalised or not t.needs_up))


def synthesize_qa(scene: SceneRecord, rng: np.random.Generator, cfg: QuestionsConfig,
                  reviewer: Reviewer | None = None) -> list[QAPair]:
    """Draw ``cfg.per_image`` question-answer pairs about a scene.

    Each pair is qualitative with probability ``cfg.qualitative_fraction`` (else quantitative), then a
    type of that kind is drawn uniformly among the eligible ones, then the objects; a draw that lands on
    a tie, or that the ``reviewer`` drops, is redrawn, up to ``cfg.max_tries`` times.

    Example:
        >>> from spatialvlm_ros.synthesis.records import SceneObject
        >>> box = Box3D(centre_m=(1.0, 0.0, 0.1), depth_m=0.1, width_m=0.1, height_m=0.2)
        >>> can = SceneObject(object_id=1, name="red can", caption="red can", reference="the red can", box=box,
        ...                   pixel_centre=(10.0, 10.0), n_points=100)
        >>> scene = SceneRecord(image_id="x", width=20, height=20, canonicalised=True,
        ...                     camera_to_scene=tuple(tuple(r) for r in np.eye(4)), camera_height_m=0.5,
        ...                     objects=(can,))
        >>> pairs = synthesize_qa(scene, np.random.default_rng(0), QuestionsConfig(per_image=2))
        >>> len(pairs), {p.question_type for p in pairs} <= {"height", "width", "elevation"}   # one object
        (2, True)
    """
    types = eligible_types(scene)
    pools = [tuple(t for t in types if t.qualitative), tuple(t for t in types if not t.qualitative)]
    out: list[QAPair] = []
    objects = scene.objects
    for _ in range(cfg.per_image):
        wanted = 0 if rng.random() < cfg.qualitative_fraction else 1
        pool = pools[wanted] or pools[1 - wanted]
        if not pool:
            break
        for _ in range(cfg.max_tries):
            qtype = pool[int(rng.integers(len(pool)))]
            picked = rng.choice(len(objects), size=qtype.arity, replace=False)
            a, b = objects[picked[0]], objects[picked[1]] if qtype.arity == 2 else None
            pair = make_qa(qtype, a, b, rng, cfg)
            if pair is not None and reviewer is not None:
                pair = reviewer.review(pair, a, b)
            if pair is not None:
                out.append(pair)
                break
    return out
