"""Composite spatial questions with known truth, synthesised from held-out simulated scenes, and their scoring.

Each scene is a randomised MuJoCo tabletop (a yellow gripper and four objects of distinct colours and kinds)
rendered with RealSense-like depth noise at one step of the gripper's approach. Truth comes from the
simulator: object centres, the grasp point, and exact surface gaps (``mj_geomDistance``). A question is asked
only when its answer is clear: every comparison it rests on has a margin (:data:`MARGIN_M`, or the rule's own
band), so a correct planner on sound measurements gets it right and the score measures the pipeline, not coin
flips. Yes/no kinds draw the wanted answer first, so an "always no" planner scores about half. The rules are
the planner's own (:mod:`spatialvlm_ros.reasoning.planner`).

Seeds start at :data:`REASONING_SEED` by default, far from the data engine's training seeds (0...) and the VLM
evaluation's (1,000,000...).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from spatialvlm_ros.config import DepthNoiseConfig, SimConfig
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.reasoning.planner import (
    BETWEEN_DETOUR, COLLINEAR_RATIO, DEFAULT_OPENING_M, ReasoningAnswer, between_detour, collinearity,
    triangle_shapes,
)
from spatialvlm_ros.reasoning.tools import SpatialTools
from spatialvlm_ros.sim import TabletopSim

logger = logging.getLogger(__name__)

REASONING_SEED = 3_000_000
#: Distances a question compares must differ by at least this, metres.
MARGIN_M = 0.04
_COLOURS = ("red", "green", "blue", "cyan", "purple")
_KINDS = ("can", "box", "ball", "bowl")
_RADII_M = (0.12, 0.18, 0.24, 0.30)


@dataclass(frozen=True)
class CompositeQuestion:
    """One question with its truth.

    Attributes:
        kind: the planner kind it exercises.
        question: the text.
        truth: the right value (an object phrase, a list of them, or True/False).
        options: what the question's JSON form would carry (the gripper's opening, ...).
    """

    kind: str
    question: str
    truth: Any
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered scene and the questions asked about it."""

    seed: int
    frame: Frame
    questions: tuple[CompositeQuestion, ...]


def _clear(values: Sequence[float]) -> bool:
    """Whether sorted ``values`` are all at least :data:`MARGIN_M` apart."""
    ordered = sorted(values)
    return all(b - a >= MARGIN_M for a, b in zip(ordered, ordered[1:]))


def scene_questions(sim: TabletopSim, step: int, rng: np.random.Generator) -> list[CompositeQuestion]:
    """Every clear composite question about ``sim`` with the gripper at trajectory ``step``."""
    truth = sim.truth(step)
    centres = {k: np.asarray(v) for k, v in truth.object_positions_world.items()}
    objects = list(centres)
    gripper = sim.gripper_label

    def d(a: str, b: str) -> float:
        return float(np.linalg.norm(centres[a] - centres[b]))

    out: list[CompositeQuestion] = []
    x = objects[int(rng.integers(len(objects)))]
    others = [o for o in objects if o != x]
    dists = [d(x, o) for o in others]
    if _clear(dists):
        ranked = [o for _, o in sorted(zip(dists, others))]
        out += [CompositeQuestion("nearest", f"Which object is closest to the {x}?", ranked[0]),
                CompositeQuestion("farthest", f"Which object is farthest from the {x}?", ranked[-1]),
                CompositeQuestion("rank", f"Rank the objects by their distance to the {x}, nearest first.", ranked)]
    triples = list(itertools.permutations(objects, 3))
    rng.shuffle(triples)
    # Yes/no kinds: draw the wanted answer first, so that "always no" cannot score well.
    want = bool(rng.random() < 0.5)
    betweens = [(a, b, c, between_detour(d(a, b), d(b, c), d(a, c))) for a, b, c in triples]
    clear = [(a, b, c, t < BETWEEN_DETOUR) for a, b, c, t in betweens
             if t < BETWEEN_DETOUR / 2 or t > 2 * BETWEEN_DETOUR]
    for a, b, c, held in sorted(clear, key=lambda q: q[3] != want)[:1]:
        out.append(CompositeQuestion("between", f"Is the {b} between the {a} and the {c}?", bool(held)))
    for a, b, c in triples:
        sides = {(a, b): d(a, b), (b, c): d(b, c), (a, c): d(a, c)}
        if _clear(list(sides.values())):
            pair = sorted(max(sides, key=sides.get))
            out.append(CompositeQuestion("farthest_pair", f"Which two of the {a}, the {b} and the {c} are farthest "
                                                          "apart?", pair))
            break
    want = bool(rng.random() < 0.5)
    ratios = [(a, b, c, collinearity(d(a, b), d(b, c), d(a, c))) for a, b, c in triples]
    clear = [(a, b, c, r < COLLINEAR_RATIO) for a, b, c, r in ratios
             if r < COLLINEAR_RATIO / 2 or r > 2 * COLLINEAR_RATIO]
    for a, b, c, held in sorted(clear, key=lambda q: q[3] != want)[:1]:
        out.append(CompositeQuestion("collinear", f"Are the {a}, the {b} and the {c} in a line?", bool(held)))
    want = bool(rng.random() < 0.5)
    clear = []
    for a, b, c in triples:
        short, mid, long = sorted((d(a, b), d(b, c), d(a, c)))
        spread = min(mid - short, long - mid) / long
        if spread < 0.03 or spread > 0.25:
            clear.append((a, b, c, triangle_shapes(d(a, b), d(b, c), d(a, c))["isosceles"]))
    for a, b, c, held in sorted(clear, key=lambda q: q[3] != want)[:1]:
        out.append(CompositeQuestion("triangle", f"Do the {a}, the {b} and the {c} form an isosceles triangle?",
                                     bool(held)))
    want = bool(rng.random() < 0.5)
    fits = [(a, b, sim.object_gap(a, b)) for a, b in itertools.combinations(objects, 2)]
    clear = [(a, b, g > DEFAULT_OPENING_M) for a, b, g in fits if abs(g - DEFAULT_OPENING_M) >= MARGIN_M * 0.75]
    for a, b, held in sorted(clear, key=lambda q: q[2] != want)[:1]:
        out.append(CompositeQuestion("fit", f"Does the {gripper} fit between the {a} and the {b}?", bool(held),
                                     {"opening_m": DEFAULT_OPENING_M}))
    gaps = truth.gap_m
    for r in rng.permutation(_RADII_M):
        if all(abs(g - r) >= MARGIN_M * 0.75 for g in gaps.values()):
            near = sorted(o for o, g in gaps.items() if g <= r)
            out.append(CompositeQuestion("reach", f"Which objects are within {100 * r:.0f} cm of the {gripper}?",
                                         near))
            break
    return out


def scenes(n_questions: int, seed: int = REASONING_SEED, width: int = 640, height: int = 480,
           max_scenes: int = 1000) -> Iterator[Scene]:
    """Render scenes from ``seed`` on and yield their questions until ``n_questions``, balanced over kinds.

    Each kind gets at most its share (``n_questions / kinds``, rounded up) until every other kind has run
    out of scenes, so a frequent kind does not crowd out the rare ones.
    """
    quota: Counter[str] = Counter()
    share = -(-n_questions // 8)
    asked = 0
    for s in range(seed, seed + max_scenes):
        rng = np.random.default_rng(s)
        colours = rng.choice(_COLOURS, size=4, replace=False)
        kinds = rng.choice(_KINDS, size=4, replace=True)
        phrases = [f"{c} {k}" for c, k in zip(colours, kinds)]
        cfg = SimConfig(seed=s, width=width, height=height, randomise=True, n_frames=6, target=str(kinds[0]),
                        target_colour=str(colours[0]), distractors=tuple(phrases[1:]), start_gap_m=0.25,
                        end_gap_m=0.03, depth_noise=DepthNoiseConfig(enabled=True))
        try:
            sim = TabletopSim(cfg)
        except ValueError as err:   # SimulationError: four objects that do not fit in view
            logger.debug("scene %d skipped: %s", s, err)
            continue
        with sim:
            step = int(rng.integers(cfg.n_frames))
            questions = [q for q in scene_questions(sim, step, rng) if quota[q.kind] < share]
            questions = questions[:max(0, n_questions - asked)]
            if not questions:
                continue
            frame = sim.render(step).frame
        quota.update(q.kind for q in questions)
        asked += len(questions)
        yield Scene(s, frame, tuple(questions))
        if asked >= n_questions:
            return
        if s - seed > 4 * n_questions:   # every kind has had its chance: lift the shares
            share = n_questions


def _agrees(answer: ReasoningAnswer, truth: Any) -> bool:
    if not answer.valid:
        return False
    value = answer.value
    if isinstance(truth, bool):
        return value is truth
    if isinstance(truth, list):
        return list(value) == truth if value is not None else False
    return value == truth


def evaluate_reasoning(answer: Callable[[str, SpatialTools, Mapping[str, Any]], ReasoningAnswer],
                       make_tools: Callable[[Frame], SpatialTools], n_questions: int = 300,
                       seed: int = REASONING_SEED, width: int = 640, height: int = 480) -> dict[str, Any]:
    """Ask ``n_questions`` composite questions on fresh scenes and score them.

    Args:
        answer: the planner's ``answer(question, tools, options)``.
        make_tools: the tools for one frame (the estimator under test).
        n_questions: how many questions.
        seed: the first scene seed.
        width, height: the rendered image size.

    Returns:
        ``accuracy``, ``accuracy_by_kind``, ``questions``, ``questions_by_kind``, ``invalid`` (answers
        without a value), ``ms_per_question``, ``seed`` and ``scenes``.
    """
    right: defaultdict[str, list[bool]] = defaultdict(list)
    invalid = 0
    n_scenes = 0
    spent = 0.0
    for scene in scenes(n_questions, seed, width, height):
        n_scenes += 1
        tools = make_tools(scene.frame)
        for q in scene.questions:
            start = time.perf_counter()
            reply = answer(q.question, tools, q.options)
            spent += time.perf_counter() - start
            invalid += not reply.valid
            right[q.kind].append(_agrees(reply, q.truth))
            if not right[q.kind][-1]:
                logger.debug("wrong (%s): %s -> %r, truth %r", reply.reason or "value", q.question, reply.value,
                             q.truth)
    total = sum(len(v) for v in right.values())
    return {"accuracy": sum(sum(v) for v in right.values()) / max(total, 1),
            "accuracy_by_kind": {k: sum(v) / len(v) for k, v in sorted(right.items())},
            "questions": total, "questions_by_kind": {k: len(v) for k, v in sorted(right.items())},
            "invalid": invalid, "ms_per_question": 1e3 * spent / max(total, 1), "seed": seed, "scenes": n_scenes}
