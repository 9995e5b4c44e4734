"""Composite spatial questions answered step by step from atomic queries (the paper's Section 5.3).

:class:`DeterministicPlanner` needs no language model: it recognises the common composite questions
(:data:`KINDS`), makes the atomic queries each needs through :class:`~spatialvlm_ros.reasoning.tools.SpatialTools`
and combines them with the rules below. Every query is recorded as a :class:`Step` of the answer's trace.

The rules (shared with the evaluation that synthesises questions with known truth, so both mean the same):

* ``nearest`` / ``farthest`` / ``rank``: centre distances to the reference object;
* ``between``: B is between A and C when the detour through B is short,
  ``(d(A,B) + d(B,C) - d(A,C)) / d(A,C) <`` :data:`BETWEEN_DETOUR` (B within about a quarter of |AC| of the line);
* ``fit``: the gripper fits between A and B when their surface gap exceeds its opening;
* ``triangle``: isosceles when two sides differ by less than :data:`SIDE_TOLERANCE` of the longer,
  equilateral when all three do, right-angled when the largest angle is within :data:`ANGLE_TOLERANCE_DEG` of 90;
* ``farthest_pair``: which two of three objects are farthest apart;
* ``collinear``: the triangle's height over its longest side is under :data:`COLLINEAR_RATIO` of that side;
* ``reach``: the objects whose surface gap to the gripper is within the radius.

It also answers the atomic questions (:data:`ATOMIC_KINDS`) with one query each, so a question on the
reward node's ``~/question`` topic may be a plain measurement: ``distance`` ("How far is A from B?",
centres), ``gap`` ("What is the gap between A and B?", surfaces), ``relation`` ("Is A to the left of B?")
and ``size`` ("How tall is A?"). Their answers carry the measurement's uncertainty.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

from spatialvlm_ros.reasoning.tools import Measurement, SpatialTools
from spatialvlm_ros.vlm.parsing import parse_answer

BETWEEN_DETOUR = 0.12
SIDE_TOLERANCE = 0.10
ANGLE_TOLERANCE_DEG = 10.0
COLLINEAR_RATIO = 0.10
#: Opening of the gripper's fingers when the question does not give one (a parallel-jaw hand), metres.
DEFAULT_OPENING_M = 0.08

KINDS = ("nearest", "farthest", "rank", "between", "fit", "triangle", "farthest_pair", "collinear", "reach")
#: One query each: a measurement asked as a question.
ATOMIC_KINDS = ("distance", "gap", "relation", "size")


@dataclass(frozen=True)
class Step:
    """One atomic query of a reasoning trace (or, for a language-model planner, one of its turns)."""

    tool: str
    args: tuple[str, ...]
    result: Measurement


@dataclass
class ReasoningAnswer:
    """The answer to a composite question, with how it was reached.

    Attributes:
        question: what was asked.
        kind: which composite question it was (:data:`KINDS`), or ``"llm"`` for the language-model planner.
        text: the answer in words.
        value: an object phrase, a list of them, True/False, or metres.
        valid: whether there is an answer.
        reason: why not, when invalid (``no_plan``, ``missing_measurement``, ``timeout``, ``backend_error``, ...).
        steps: every atomic query made, in order.
        planner: which planner answered.
        uncertainty_m: one standard deviation of a metric ``value`` (NaN when unknown or not metric).
    """

    question: str
    kind: str
    text: str
    value: Any = None
    valid: bool = True
    reason: str = ""
    steps: list[Step] = field(default_factory=list)
    planner: str = "deterministic"
    uncertainty_m: float = math.nan

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable view (steps with their measurements)."""
        out = asdict(self)
        out["steps"] = [{"tool": s.tool, "args": list(s.args), **asdict(s.result)} for s in self.steps]
        return out


class _MissingMeasurement(Exception):
    def __init__(self, measurement: Measurement) -> None:
        super().__init__(f"{measurement.query}: {measurement.note}")


class _Session:
    """The queries of one question, recorded; a missing value stops the plan."""

    def __init__(self, tools: SpatialTools) -> None:
        self.tools = tools
        self.steps: list[Step] = []

    def call(self, tool: str, *args: str) -> Measurement:
        result: Measurement = getattr(self.tools, tool)(*args)
        self.steps.append(Step(tool, tuple(args), result))
        return result

    def value(self, tool: str, *args: str) -> Any:
        result = self.call(tool, *args)
        if not result.ok:
            raise _MissingMeasurement(result)
        return result.value


_REF = r"(?:the |a |an )?(?P<{}>[a-z][a-z0-9 \-]*?)"


def _ref(name: str) -> str:
    return _REF.format(name)


def _clean(phrase: str) -> str:
    return re.sub(r"^(?:the|a|an)\s+", "", " ".join(phrase.lower().split()))


def _is_gripper(phrase: str) -> bool:
    return "gripper" in phrase or "hand" in phrase.split()


def _sides(s: _Session, a: str, b: str, c: str) -> dict[tuple[str, str], float]:
    return {(x, y): s.value("distance", x, y) for x, y in ((a, b), (b, c), (a, c))}


def triangle_shapes(ab: float, bc: float, ac: float) -> dict[str, bool]:
    """Which of isosceles, equilateral, right-angled the triangle with these sides is (the rules above).

    Example:
        >>> triangle_shapes(0.3, 0.4, 0.5)
        {'isosceles': False, 'equilateral': False, 'right': True}
    """
    short, mid, long = sorted((ab, bc, ac))
    cos_largest = (short ** 2 + mid ** 2 - long ** 2) / (2 * short * mid) if short * mid > 0 else 1.0
    largest_deg = math.degrees(math.acos(max(-1.0, min(1.0, cos_largest))))
    return {"isosceles": (mid - short) < SIDE_TOLERANCE * mid or (long - mid) < SIDE_TOLERANCE * long,
            "equilateral": (long - short) < SIDE_TOLERANCE * long,
            "right": abs(largest_deg - 90.0) < ANGLE_TOLERANCE_DEG}


def collinearity(ab: float, bc: float, ac: float) -> float:
    """Height of the triangle over its longest side, divided by that side (0 = on one line).

    Example:
        >>> round(collinearity(0.3, 0.4, 0.5), 3), collinearity(0.2, 0.3, 0.5)
        (0.48, 0.0)
    """
    s = (ab + bc + ac) / 2
    area = math.sqrt(max(s * (s - ab) * (s - bc) * (s - ac), 0.0))
    longest = max(ab, bc, ac)
    return 2 * area / longest ** 2 if longest > 0 else 0.0


def between_detour(ab: float, bc: float, ac: float) -> float:
    """How much longer the way from A to C through B is than the straight one, relative to it.

    Example:
        >>> between_detour(0.2, 0.3, 0.5), round(between_detour(0.4, 0.4, 0.5), 2)
        (0.0, 0.6)
    """
    return (ab + bc - ac) / ac if ac > 0 else math.inf


def _merge_alternatives(groups: dict[str, str | None]) -> dict[str, str]:
    """One pattern with alternatives names its groups ``a``, ``a2``, ...: keep the one that matched, as ``a``."""
    out: dict[str, str] = {}
    for key, value in groups.items():
        if value is not None:
            out.setdefault(key.rstrip("234"), value)
    return out


def _metres(m: Measurement) -> str:
    sigma = f" ± {m.sigma_m:.3f} m" if m.sigma_m == m.sigma_m else ""
    return f"{m.value:.3f} m{sigma}"


class DeterministicPlanner:
    """Answers the composite questions of :data:`KINDS` without a language model.

    Options (a mapping, e.g. from the JSON form of a question): ``objects`` (the candidates when the
    tools cannot list them), ``gripper`` (its phrase, default the listed one ending in "gripper"),
    ``opening_m`` (the gripper's opening for ``fit``, default :data:`DEFAULT_OPENING_M`).

    Example:
        >>> from spatialvlm_ros.reasoning.tools import Measurement
        >>> at = {"red can": (0.0, 0.0), "blue box": (0.3, 0.0), "green ball": (0.1, 0.05)}
        >>> class Flat:   # tools on three points in a plane
        ...     def objects(self): return list(at)
        ...     def distance(self, a, b):
        ...         return Measurement(f"d({a}, {b})", math.dist(at[a], at[b]))
        >>> DeterministicPlanner().answer("Which object is closest to the red can?", Flat()).value
        'green ball'
        >>> DeterministicPlanner().answer("Is the green ball between the red can and the blue box?", Flat()).value
        True
    """

    name = "deterministic"

    def __init__(self) -> None:
        ref = _ref
        self._patterns: list[tuple[str, re.Pattern[str], Callable[..., tuple[str, Any]]]] = [
            ("nearest", re.compile(rf"which (?:object|one|thing)? ?is (?:the )?(?:closest|nearest) to {ref('x')}$"),
             self._nearest),
            ("farthest",
             re.compile(rf"which (?:object|one|thing)? ?is (?:the )?(?:farthest|furthest) from {ref('x')}$"),
             self._farthest),
            ("rank", re.compile(rf"rank (?:the objects|the things|them|everything) by (?:their )?distance "
                                rf"(?:to|from) {ref('x')}(?:,? (?:nearest|closest) first)?$"), self._rank),
            ("between", re.compile(rf"is {ref('b')} between {ref('a')} and {ref('c')}$"), self._between),
            ("fit", re.compile(rf"(?:does|can|would|will) {ref('g')} fit between {ref('a')} and {ref('b')}$"),
             self._fit),
            ("triangle", re.compile(rf"do {ref('a')}, {ref('b')},? and {ref('c')} form an? "
                                    rf"(?P<shape>isosceles|equilateral|right(?:-angled| angled)?) triangle$"),
             self._triangle),
            ("farthest_pair", re.compile(rf"which two of {ref('a')}, {ref('b')},? and {ref('c')} are "
                                         rf"(?:the )?(?:farthest|furthest) apart$"), self._farthest_pair),
            ("collinear", re.compile(rf"are {ref('a')}, {ref('b')},? and {ref('c')} (?:roughly |approximately )?"
                                     rf"(?:collinear|in a (?:straight )?line|on one line)$"), self._collinear),
            ("reach", re.compile(rf"which objects are within (?P<r>[0-9.]+ ?[a-z\"']+) of {ref('g')}$"), self._reach),
            # The atomic kinds: one query each (gap before size: "how wide is the gap between ...").
            ("distance", re.compile(rf"(?:what is|what's) the (?:centre-to-centre |center-to-center )?distance "
                                    rf"(?:between {ref('a')} and|from {ref('a2')} to) {ref('b')}$"
                                    rf"|how far apart are {ref('a3')} and {ref('b2')}$"
                                    rf"|how far (?:away )?is {ref('a4')} from {ref('b3')}$"), self._distance),
            ("gap", re.compile(rf"(?:(?:what is|what's) the (?:gap|clearance|free space)"
                               rf"|how much (?:free )?space is there|how wide is the gap) between {ref('a')} and "
                               rf"{ref('b')}$|how close is {ref('a2')} to {ref('b2')}$"), self._gap),
            ("relation", re.compile(rf"is {ref('a')} (?P<rel>(?:to the )?(?:left|right) of|above|below|behind|"
                                    rf"in front of) {ref('b')}$"), self._relation),
            ("size", re.compile(rf"how (?P<dim>tall|wide) is {ref('a')}$|(?:what is|what's) the "
                                rf"(?P<dim2>height|width) of {ref('a2')}$"), self._size),
        ]

    def answer(self, question: str, tools: SpatialTools, options: Mapping[str, Any] | None = None) -> ReasoningAnswer:
        """Answer ``question`` with ``tools``; an unrecognised question or a missing measurement is invalid."""
        options = dict(options or {})
        text = " ".join(question.lower().strip().rstrip("?.!").split())
        session = _Session(tools)
        for kind, pattern, solve in self._patterns:
            m = pattern.match(text)
            if m is None:
                continue
            groups = {k: (_clean(v) if k not in ("shape", "r", "rel", "dim") else v)
                      for k, v in _merge_alternatives(m.groupdict()).items()}
            try:
                words, value = solve(session, options, **groups)
            except _MissingMeasurement as err:
                return ReasoningAnswer(question, kind, f"I cannot tell: {err}", valid=False,
                                       reason="missing_measurement", steps=session.steps)
            except ValueError as err:   # a question that names too few objects, an unreadable radius
                return ReasoningAnswer(question, kind, f"I cannot tell: {err}", valid=False, reason="bad_question",
                                       steps=session.steps)
            sigma = session.steps[-1].result.sigma_m if kind in ATOMIC_KINDS and session.steps else math.nan
            return ReasoningAnswer(question, kind, words, value, steps=session.steps, uncertainty_m=sigma)
        return ReasoningAnswer(question, "unknown", "I do not know how to break this question down.", valid=False,
                               reason="no_plan")

    # ------------------------------------------------------------------ the kinds

    @staticmethod
    def _candidates(s: _Session, options: Mapping[str, Any], exclude: Sequence[str]) -> list[str]:
        objects = [_clean(o) for o in options.get("objects") or s.tools.objects()]
        found = [o for o in objects if o not in exclude and not _is_gripper(o)]
        if len(found) < 2:
            raise ValueError(f"need at least two other objects to compare, have {found}")
        return found

    def _by_distance(self, s: _Session, options: Mapping[str, Any], x: str) -> list[tuple[float, str]]:
        return sorted((s.value("distance", x, o), o) for o in self._candidates(s, options, [x]))

    def _nearest(self, s: _Session, options: Mapping[str, Any], x: str) -> tuple[str, Any]:
        (d, o), *_ = self._by_distance(s, options, x)
        return f"The {o} is closest to the {x} ({d:.2f} m).", o

    def _farthest(self, s: _Session, options: Mapping[str, Any], x: str) -> tuple[str, Any]:
        *_, (d, o) = self._by_distance(s, options, x)
        return f"The {o} is farthest from the {x} ({d:.2f} m).", o

    def _rank(self, s: _Session, options: Mapping[str, Any], x: str) -> tuple[str, Any]:
        ranked = self._by_distance(s, options, x)
        order = [o for _, o in ranked]
        return "Nearest first: " + ", ".join(f"the {o} ({d:.2f} m)" for d, o in ranked) + ".", order

    def _between(self, s: _Session, options: Mapping[str, Any], a: str, b: str, c: str) -> tuple[str, Any]:
        ab, bc, ac = _sides(s, a, b, c).values()
        detour = between_detour(ab, bc, ac)
        held = detour < BETWEEN_DETOUR
        return (f"{'Yes' if held else 'No'}: going from the {a} to the {c} by the {b} is {100 * detour:.0f}% "
                f"longer than the straight way.", held)

    def _fit(self, s: _Session, options: Mapping[str, Any], g: str, a: str, b: str) -> tuple[str, Any]:
        opening = float(options.get("opening_m", DEFAULT_OPENING_M))
        gap = s.value("gap", a, b)
        held = gap > opening
        return (f"{'Yes' if held else 'No'}: the gap between the {a} and the {b} is {gap:.2f} m, the {g} opens "
                f"{opening:.2f} m.", held)

    def _triangle(self, s: _Session, options: Mapping[str, Any], a: str, b: str, c: str,
                  shape: str) -> tuple[str, Any]:
        ab, bc, ac = _sides(s, a, b, c).values()
        key = "right" if shape.startswith("right") else shape
        held = triangle_shapes(ab, bc, ac)[key]
        return (f"{'Yes' if held else 'No'}: the sides are {ab:.2f}, {bc:.2f} and {ac:.2f} m.", held)

    def _farthest_pair(self, s: _Session, options: Mapping[str, Any], a: str, b: str, c: str) -> tuple[str, Any]:
        sides = _sides(s, a, b, c)
        (x, y), d = max(sides.items(), key=lambda kv: kv[1])
        return f"The {x} and the {y} are farthest apart ({d:.2f} m).", sorted((x, y))

    def _collinear(self, s: _Session, options: Mapping[str, Any], a: str, b: str, c: str) -> tuple[str, Any]:
        ratio = collinearity(*_sides(s, a, b, c).values())
        held = ratio < COLLINEAR_RATIO
        return (f"{'Yes' if held else 'No'}: they stray {100 * ratio:.0f}% of the longest side from one line.",
                held)

    # ------------------------------------------------------------------ the atomic kinds

    @staticmethod
    def _measured(s: _Session, tool: str, *args: str) -> Measurement:
        result = s.call(tool, *args)
        if not result.ok:
            raise _MissingMeasurement(result)
        return result

    def _distance(self, s: _Session, options: Mapping[str, Any], a: str, b: str) -> tuple[str, Any]:
        m = self._measured(s, "distance", a, b)
        return f"The {a} and the {b} are {_metres(m)} apart (centre to centre).", m.value

    def _gap(self, s: _Session, options: Mapping[str, Any], a: str, b: str) -> tuple[str, Any]:
        m = self._measured(s, "gap", a, b)
        return f"The gap between the {a} and the {b} is {_metres(m)}.", m.value

    def _relation(self, s: _Session, options: Mapping[str, Any], a: str, rel: str, b: str) -> tuple[str, Any]:
        words = rel.replace("to the ", "")
        relation = {"left of": "left", "right of": "right", "in front of": "front"}.get(words, words)
        held = self._measured(s, "relation", a, relation, b).value
        words = f"to the {words}" if relation in ("left", "right") else words
        return f"{'Yes' if held else 'No'}: the {a} is {'' if held else 'not '}{words} the {b}.", held

    def _size(self, s: _Session, options: Mapping[str, Any], a: str, dim: str) -> tuple[str, Any]:
        dimension = {"tall": "height", "wide": "width"}.get(dim, dim)
        m = self._measured(s, "size", a, dimension)
        return f"The {a} is {_metres(m)} {'tall' if dimension == 'height' else 'wide'}.", m.value

    def _reach(self, s: _Session, options: Mapping[str, Any], g: str, r: str) -> tuple[str, Any]:
        radius = parse_answer(r)
        if not radius.valid:
            raise ValueError(f"cannot read the radius {r!r}")
        near = [o for o in self._candidates(s, options, [g]) if s.value("gap", g, o) <= radius.value_m]
        words = ", ".join(f"the {o}" for o in near) if near else "none of them"
        return f"Within {radius.value_m:.2f} m of the {g}: {words}.", sorted(near)
