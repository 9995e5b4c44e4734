r"""Score a spatial VLM with the paper's metrics on held-out spatial VQA (run by ``spatialvlm evaluate``).

The VLM (``spatialvlm evaluate`` builds it from ``estimator.vlm`` of the spatial_reward config, with
``spatialvlm ask``'s overrides) is asked every question of a dataset folder written by ``spatialvlm
synthesize`` (``data.jsonl`` + ``images/``), in batches of
:meth:`~spatialvlm_ros.vlm.base.SpatialVLM.ask_batch`, each ``samples`` times; every answer is scored on
its own (:func:`evaluate_vlm`). Without ``--data`` the command first synthesises a fresh held-out set of
simulated scenes with the data engine.

Metrics (the paper's, Table 1 / Table 4, plus a robot-style rank check):

* **qualitative accuracy**: share of answers to predicate / choice / classify questions whose decided
  label (:func:`decide_label`, with the readers of :mod:`~spatialvlm_ros.vlm.labels`) equals the row's
  ``truth_label``; an answer no label can be read from counts as wrong.
* **number rate**: share of answers to quantity / difference questions that state a distance
  (:func:`~spatialvlm_ros.vlm.parsing.parse_answer` valid).
* **within [0.5x, 2x]** and **within [0.75x, 1.25x]**: share of those answers whose ``|value| / |truth_m|``
  lies in the band. Absolute values because a difference's truth is signed ("how much more to the left":
  -0.1 m means 0.1 m to the right) and the direction is a qualitative matter; a difference answered as
  "-10 cm" is read as 10 cm. An answer without a number is outside every band. Rows whose ``|truth_m|``
  is below :data:`MIN_BAND_TRUTH_M` are left out of the bands (counted as ``band_excluded``): a ratio to
  a near-zero truth, such as the elevation of an object resting on the table, measures box-fitting
  noise, not the model.
* **Spearman** along scripted approach trajectories (:func:`approach_trajectories`, the paper's Fig. 5
  set-up: a yellow gripper closing in on a red can): the distance question is asked on every frame, the
  parsed answers are averaged per frame, and the rank correlation with the simulator's exact distance is
  computed per trajectory; the reported ``spearman`` is their mean.

Held-out seeds: the data engine draws every simulated scene from ``(seed, index)`` alone. Seeds at or
above :data:`EVAL_SEED_OFFSET` are reserved for evaluation, training data uses seeds below it;
:func:`held_out_seed` maps ``--seed`` into the reserved range and :func:`check_held_out` refuses any
other seed for a set synthesised or simulated for evaluation. A ``--data`` folder made with a training
seed is evaluated with a warning (it may be real images, which have no such convention).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np

from spatialvlm_ros.config import SimConfig
from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.types import DistanceKind, Pair
from spatialvlm_ros.synthesis.questions import CLASSIFY_PAIRS, OPPOSITE, TYPES_BY_NAME
from spatialvlm_ros.vlm.base import SpatialVLM, VLMAnswer, VLMError
from spatialvlm_ros.vlm.labels import hedges, which_object, which_relation, yes_no
from spatialvlm_ros.vlm.parsing import ParsedDistance, parse_answer
from spatialvlm_ros.vlm.prompts import distance_question

logger = logging.getLogger(__name__)

#: Synthesis / simulator seeds at or above this are reserved for evaluation; training data uses smaller ones.
EVAL_SEED_OFFSET = 1_000_000
#: Quantitative rows with a smaller ``|truth_m|`` are left out of the ratio bands (metres).
MIN_BAND_TRUTH_M = 0.01
#: "Near contact": a true gripper-object gap below this (metres), where a reach task's success is decided.
NEAR_CONTACT_M = 0.05
#: The bands, as (name, low, high) ratios of answer to truth.
BANDS = (("within_0.5_2x", 0.5, 2.0), ("within_0.75_1.25x", 0.75, 1.25))
#: The paper's Table 1 (qualitative: 331 human-written questions; quantitative: 215), as fractions.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "SpatialVLM": {"qualitative_accuracy": 0.752, "number_rate": 0.990, "within_0.5_2x": 0.372},
    "GPT-4V": {"qualitative_accuracy": 0.680, "number_rate": 0.010, "within_0.5_2x": 0.000},
    "LLaVA-1.5": {"qualitative_accuracy": 0.713, "number_rate": 0.209, "within_0.5_2x": 0.130},
    "PaLM 2-E": {"qualitative_accuracy": 0.504, "number_rate": 0.888, "within_0.5_2x": 0.339},
}


# ---------------------------------------------------------------------------------------------
# Held-out seeds
# ---------------------------------------------------------------------------------------------

def check_held_out(seed: int) -> None:
    """Refuse a seed outside the evaluation range (``>= EVAL_SEED_OFFSET``).

    Raises:
        ConfigError: ``seed`` is a training seed.

    Example:
        >>> check_held_out(EVAL_SEED_OFFSET + 3)
        >>> check_held_out(7)
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: seed 7 is in the training range (< 1000000); evaluation needs ...
    """
    if seed < EVAL_SEED_OFFSET:
        raise ConfigError(f"seed {seed} is in the training range (< {EVAL_SEED_OFFSET}); evaluation needs a "
                          f"held-out seed >= {EVAL_SEED_OFFSET}")


def held_out_seed(seed: int) -> int:
    """The evaluation seed for ``--seed`` (``EVAL_SEED_OFFSET + seed``), checked to be held out.

    Raises:
        ConfigError: ``seed`` is negative, or so large that training seeds could reach it.

    Example:
        >>> held_out_seed(0), held_out_seed(5)
        (1000000, 1000005)
    """
    if not 0 <= seed < EVAL_SEED_OFFSET:
        raise ConfigError(f"--seed must be in [0, {EVAL_SEED_OFFSET}), got {seed}")
    check_held_out(EVAL_SEED_OFFSET + seed)
    return EVAL_SEED_OFFSET + seed


def warn_if_training_data(data: Path) -> None:
    """Warn when the dataset folder ``data`` was synthesised with a training seed (it may not be held out)."""
    stored = data / "synthesis_config.json"
    if stored.is_file():
        seed = json.loads(stored.read_text()).get("seed", 0)
        if seed < EVAL_SEED_OFFSET:
            logger.warning("%s was synthesised with seed %d, a training seed (< %d): it may not be held out",
                           data, seed, EVAL_SEED_OFFSET)


# ---------------------------------------------------------------------------------------------
# Questions and their scores
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalQuestion:
    """One dataset row as the evaluation needs it.

    Attributes:
        row_id: the row's ``id``.
        image: the image file, absolute.
        question: the user message's text.
        question_type: a :data:`~spatialvlm_ros.synthesis.questions.QUESTION_TYPES` name.
        family: predicate, choice, classify, quantity or difference.
        qualitative: predicate / choice / classify.
        truth_m: exact truth, metres (signed for differences).
        truth_label: qualitative truth: yes / no, the chosen object's id, or the relation that holds.
        object_ids: ids of A (and B), question order.
        object_references: how the question names them, same order.
        exact_truth: a gripper gap / distance row answered with the simulator's exact measurement
            (:func:`~spatialvlm_ros.synthesis.questions.exact_gripper_qa`); scored apart from the paper's mix.
    """

    row_id: str
    image: Path
    question: str
    question_type: str
    family: str
    qualitative: bool
    truth_m: float
    truth_label: str | None
    object_ids: tuple[int, ...]
    object_references: tuple[str, ...]
    exact_truth: bool = False

    @property
    def relation(self) -> str:
        """What the question asks about: ``"left"``, an either-or pair like ``"left_right"``, or a quantity."""
        return TYPES_BY_NAME[self.question_type].relation


def load_questions(root: Path, limit: int | None = None) -> list[EvalQuestion]:
    """The rows of ``root/data.jsonl`` (the first ``limit`` if given), images resolved against ``root``.

    Raises:
        InputError: no ``data.jsonl``, or a row without the fields the data engine writes.
    """
    path = Path(root) / "data.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: no such file; --data must be a folder written by 'spatialvlm synthesize'")
    out = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if limit is not None and len(out) >= limit:
                break
            row = json.loads(line)
            try:
                user = next(m for m in row["messages"] if m["role"] == "user")
                question = next(c["text"] for c in user["content"] if c["type"] == "text")
                out.append(EvalQuestion(
                    row_id=row["id"], image=Path(root) / row["images"][0], question=question,
                    question_type=row["question_type"], family=row["family"], qualitative=bool(row["qualitative"]),
                    truth_m=float(row["truth_m"]), truth_label=row["truth_label"],
                    object_ids=tuple(row["object_ids"]), object_references=tuple(row["object_references"]),
                    exact_truth=bool(row.get("exact_truth", False))))   # older datasets have none
            except (KeyError, StopIteration, TypeError) as err:
                raise InputError(f"{path}:{line_no}: not a data engine row ({err!r} missing)") from err
    return out


def decide_label(question: EvalQuestion, text: str) -> str | None:
    """The qualitative label an answer gives, comparable to ``question.truth_label``; None when undecidable.

    An answer that hedges ("I don't know", "can't tell"; :func:`~spatialvlm_ros.vlm.labels.hedges`) gives no
    label. Otherwise, with the readers of :mod:`~spatialvlm_ros.vlm.labels`:

    * predicate: :func:`yes_no`; if the answer says neither, whether it states the asked relation or its
      opposite (:func:`which_relation`);
    * choice: the id of the object :func:`which_object` finds;
    * classify: the relation :func:`which_relation` finds.
    """
    refs = question.object_references
    if hedges(text):
        return None
    if question.family == "predicate":
        label = yes_no(text, refs)
        if label is None:
            stated = which_relation(text, (question.relation, OPPOSITE[question.relation]), refs)
            label = None if stated is None else ("yes" if stated == question.relation else "no")
        return label
    if question.family == "choice":
        index = which_object(text, refs)
        return None if index is None else str(question.object_ids[index])
    if question.family == "classify":
        return which_relation(text, CLASSIFY_PAIRS[question.relation], refs)
    raise ValueError(f"{question.question_type} is not qualitative")


@dataclass(frozen=True)
class AnswerRecord:
    """One answer, scored.

    Attributes:
        question: what was asked.
        sample: which sample of the question (0-based).
        text: the answer ("" when the request failed).
        error: why no answer came ("" = it came).
        label: qualitative: the decided label (None = undecidable).
        value_m: quantitative: the distance read (NaN = no number).
        latency_ms: request wall time.
    """

    question: EvalQuestion
    sample: int
    text: str
    error: str
    label: str | None
    value_m: float
    latency_ms: float

    @property
    def correct(self) -> bool:
        """Qualitative: the label matches the truth."""
        return self.label is not None and self.label == self.question.truth_label

    @property
    def has_number(self) -> bool:
        """Quantitative: the answer states a distance."""
        return math.isfinite(self.value_m)

    @property
    def ratio(self) -> float:
        """``|value| / |truth|``; NaN without a number or with a truth below :data:`MIN_BAND_TRUTH_M`."""
        truth = abs(self.question.truth_m)
        return abs(self.value_m) / truth if truth >= MIN_BAND_TRUTH_M else math.nan


def _magnitude(question: EvalQuestion, parsed: ParsedDistance, text: str, default_unit: str | None) -> float:
    """The distance an answer states, metres, NaN if none; a difference's sign is dropped ("-10 cm" = 10 cm)."""
    if not parsed.valid and question.family == "difference":
        parsed = parse_answer(re.sub(r"(?<![\w.])-(?=\s*[\d.])", "", text), default_unit)
    return parsed.value_m if parsed.valid else math.nan


def score_answer(question: EvalQuestion, answer: VLMAnswer, sample: int = 0,
                 default_unit: str | None = None) -> AnswerRecord:
    """Score one answer: its label for a qualitative question, its distance for a quantitative one."""
    if question.qualitative:
        return AnswerRecord(question, sample, answer.text, "", decide_label(question, answer.text), math.nan,
                            answer.latency_ms)
    return AnswerRecord(question, sample, answer.text, "", None,
                        _magnitude(question, answer.parsed, answer.text, default_unit), answer.latency_ms)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read the image {path}")
    return np.ascontiguousarray(bgr[..., ::-1])


def ask_questions(vlm: SpatialVLM, questions: Sequence[EvalQuestion], samples: int = 1, batch_size: int = 32,
                  default_unit: str | None = None) -> list[AnswerRecord]:
    """Ask every question ``samples`` times, ``batch_size`` requests per :meth:`SpatialVLM.ask_batch`, and score them.

    Once the model has answered, a batch whose request fails is recorded with the error and scored as no
    answer (wrong, no number), and the evaluation goes on with the next batch.

    Raises:
        VLMError: the first batch failed (the model is unreachable or misconfigured: fail fast).
        InputError: an image cannot be read.
    """
    jobs = [(q, s) for q in questions for s in range(samples)]
    records: list[AnswerRecord] = []
    for batch in _batches(jobs, batch_size):
        images: dict[Path, np.ndarray] = {}
        for q, _ in batch:
            if q.image not in images:
                images[q.image] = _read_rgb(q.image)
        try:
            answers = vlm.ask_batch([images[q.image] for q, _ in batch], [q.question for q, _ in batch])
        except VLMError as err:
            if not records:
                raise
            logger.warning("%d questions unanswered: %s", len(batch), err)
            records += [AnswerRecord(q, s, "", str(err), None, math.nan, math.nan) for q, s in batch]
            continue
        records += [score_answer(q, a, s, default_unit) for (q, s), a in zip(batch, answers)]
        logger.debug("%d/%d answers", len(records), len(jobs))
    return records


def _mean(values: Iterable[bool]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


def _band_share(records: Sequence[AnswerRecord], low: float, high: float) -> float:
    """Share of the band-eligible answers within ``[low, high]``; no number counts as outside."""
    eligible = [r for r in records if abs(r.question.truth_m) >= MIN_BAND_TRUTH_M]
    return _mean(r.has_number and low <= r.ratio <= high for r in eligible)


def answer_metrics(records: Sequence[AnswerRecord]) -> dict[str, Any]:
    """Qualitative accuracy, number rate, ratio bands, their counts and the per-question-type breakdown.

    These are over the data engine's sampled questions (the paper's mix). The rows answered with a
    simulator's exact gripper gap or distance are scored apart, under ``exact_gripper`` (number rate, bands
    and median |error|, per type), and give the **near-contact** figure: the median |error| of the exact gap
    rows whose truth is under :data:`NEAR_CONTACT_M` (NaN when the dataset has none).

    Example:
        >>> q = EvalQuestion("r0", Path("x.png"), "How tall is the can?", "height", "quantity", False, 0.1, None,
        ...                  (1,), ("the can",))
        >>> m = answer_metrics([AnswerRecord(q, 0, "12 cm", "", None, 0.12, 5.0)])
        >>> m["number_rate"], m["within_0.5_2x"], m["within_0.75_1.25x"], m["per_type"]["height"]["n"]
        (1.0, 1.0, 1.0, 1)
    """
    exact = [r for r in records if r.question.exact_truth]
    qualitative = [r for r in records if r.question.qualitative]
    quantitative = [r for r in records if not r.question.qualitative and not r.question.exact_truth]
    metrics: dict[str, Any] = {
        "qualitative_accuracy": _mean(r.correct for r in qualitative),
        "number_rate": _mean(r.has_number for r in quantitative),
        **{name: _band_share(quantitative, low, high) for name, low, high in BANDS},
        "answers": len(records),      # all of them, the exact gripper rows too
        "qualitative_answers": len(qualitative),
        "undecided_answers": sum(r.label is None for r in qualitative),
        "quantitative_answers": len(quantitative),
        "band_excluded": sum(abs(r.question.truth_m) < MIN_BAND_TRUTH_M for r in quantitative),
        "failed_requests": sum(bool(r.error) for r in records),
    }
    by_type: dict[str, list[AnswerRecord]] = defaultdict(list)
    for r in qualitative + quantitative:
        by_type[r.question.question_type].append(r)
    per_type: dict[str, dict[str, Any]] = {}
    for name in sorted(by_type):
        rs = by_type[name]
        if rs[0].question.qualitative:
            per_type[name] = {"n": len(rs), "accuracy": _mean(r.correct for r in rs)}
        else:
            per_type[name] = {"n": len(rs), "number_rate": _mean(r.has_number for r in rs),
                              **{band: _band_share(rs, low, high) for band, low, high in BANDS}}
    metrics["per_type"] = per_type
    metrics["exact_gripper"] = {name: _quantity_summary([r for r in exact if r.question.question_type in names])
                                for name, names in (("all", ("gap", "distance")), ("gap", ("gap",)),
                                                    ("distance", ("distance",)))}
    near = [r for r in exact if r.question.question_type == "gap" and r.question.truth_m < NEAR_CONTACT_M]
    metrics["near_contact_gap_answers"] = len(near)
    metrics["near_contact_median_abs_error_m"] = _quantity_summary(near)["median_abs_error_m"]
    return metrics


def _quantity_summary(records: Sequence[AnswerRecord]) -> dict[str, Any]:
    """n, number rate, the bands and the median |error| (metres, answers with a number) of quantity answers."""
    errors = [abs(r.value_m - r.question.truth_m) for r in records if r.has_number]
    return {"n": len(records), "number_rate": _mean(r.has_number for r in records),
            **{band: _band_share(records, low, high) for band, low, high in BANDS},
            "median_abs_error_m": float(np.median(errors)) if errors else math.nan}


# ---------------------------------------------------------------------------------------------
# Approach trajectories: does the answer fall as the gripper closes in?
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrajectoryFrames:
    """One rendered approach: RGB frames and the exact distance behind each.

    Attributes:
        seed: the simulator seed (held out).
        pair: gripper and target, as the question names them.
        kind: which distance the truth is (gap or centre).
        images: (H, W, 3) uint8 RGB frames, in trajectory order.
        truth_m: the simulator's distance per frame, metres.
    """

    seed: int
    pair: Pair
    kind: DistanceKind
    images: tuple[np.ndarray, ...]
    truth_m: tuple[float, ...]


def approach_trajectories(count: int, n_frames: int, seed: int, kind: DistanceKind | str = DistanceKind.GAP,
                          width: int = 320, height: int = 240, split: str = "sim") -> Iterator[TrajectoryFrames]:
    """Render ``count`` scripted approaches of ``n_frames`` frames each, drawn like a split's scenes.

    Trajectory ``k`` is the simulator scene of seed ``seed + k``: a yellow gripper closing from a 30 cm
    to a 1 cm gap on a red can among distractors, the set-up of the paper's Fig. 5, with the camera rig,
    gripper model and look of a split (:func:`~spatialvlm_ros.sim.splits.split_scene`).

    Args:
        count: trajectories.
        n_frames: frames each (>= 2).
        seed: first simulator seed, held out (see :func:`check_held_out`).
        kind: the truth: surface gap or centre distance.
        width: image width, pixels.
        height: image height, pixels.
        split: one of :data:`~spatialvlm_ros.sim.splits.SPLITS`.

    Raises:
        ConfigError: a training seed, or bad image / trajectory sizes.
    """
    from spatialvlm_ros.sim import TabletopSim
    from spatialvlm_ros.sim.splits import split_scene
    kind = DistanceKind(kind)
    check_held_out(seed)
    for k in range(count):
        rng = np.random.default_rng([seed + k, 0x5A1F7 if split == "shift" else 0x5151])
        config, appearance = split_scene(
            split, SimConfig(seed=seed + k, width=width, height=height, randomise=True, n_frames=n_frames), rng)
        with TabletopSim(config, appearance=appearance) as sim:
            pair = Pair(sim.gripper_label, sim.target_label)
            steps = [sim.render(i) for i in range(n_frames)]
        distances = [(s.truth.gap_m if kind is DistanceKind.GAP else s.truth.centre_m)[pair.target] for s in steps]
        noise = np.random.default_rng([seed + k, 0x1D6])
        rgbs = [s.frame.rgb if appearance is None else appearance.sensor.apply(s.frame.rgb, noise) for s in steps]
        yield TrajectoryFrames(seed + k, pair, kind, tuple(rgbs), tuple(distances))


@dataclass(frozen=True)
class TrajectoryResult:
    """The VLM's answers along one approach.

    Attributes:
        seed: the simulator seed.
        question: the distance question asked on every frame.
        estimate_m: per frame, the mean of the parsed answers (NaN: none parsed, or the request failed).
        truth_m: per frame, the exact distance.
        metrics: :func:`~spatialvlm_ros.evaluation.metrics.distance_metrics` of the two.
    """

    seed: int
    question: str
    estimate_m: tuple[float, ...]
    truth_m: tuple[float, ...]
    metrics: dict[str, float]


def score_trajectory(vlm: SpatialVLM, trajectory: TrajectoryFrames, samples: int = 1,
                     mirror: bool = False) -> TrajectoryResult:
    """Ask the distance question on every frame (``samples`` times, one batch) and score the trace.

    ``mirror``: ask as often again on each frame's mirror image and average all the answers (what
    ``estimator.vlm.mirror`` does).
    """
    from spatialvlm_ros.evaluation.metrics import distance_metrics  # scipy: kept off `spatialvlm --help`
    question = distance_question(trajectory.pair, trajectory.kind)
    n = len(trajectory.images)
    estimates = [math.nan] * n
    per_frame = samples * (2 if mirror else 1)
    images = [view for img in trajectory.images
              for view in ([img, np.ascontiguousarray(img[:, ::-1])] if mirror else [img]) for _ in range(samples)]
    try:
        answers = vlm.ask_batch(images, [question] * len(images))
    except VLMError as err:
        logger.warning("trajectory %d unanswered: %s", trajectory.seed, err)
        answers = []
    for i in range(len(answers) // per_frame):
        values = [a.parsed.value_m for a in answers[i * per_frame:(i + 1) * per_frame] if a.parsed.valid]
        estimates[i] = float(np.mean(values)) if values else math.nan
    return TrajectoryResult(trajectory.seed, question, tuple(estimates), trajectory.truth_m,
                            distance_metrics(estimates, trajectory.truth_m))


# ---------------------------------------------------------------------------------------------
# The whole evaluation
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvaluationReport:
    """Everything one evaluation measured.

    Attributes:
        model: the model name.
        data: the dataset folder evaluated.
        answers: every scored answer.
        trajectories: every scored approach.
        metrics: :func:`answer_metrics` plus ``spearman`` (mean over trajectories) and ``trajectory_frames``.
    """

    model: str
    data: str
    answers: tuple[AnswerRecord, ...]
    trajectories: tuple[TrajectoryResult, ...]
    metrics: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """Metrics, per-type breakdown, per-trajectory figures and the paper's numbers, JSON-ready (NaN as null)."""
        trajectories = [{"seed": t.seed, "question": t.question, **t.metrics} for t in self.trajectories]
        return _json_safe({"model": self.model, "data": self.data, **self.metrics, "trajectories": trajectories,
                           "paper": PAPER_RESULTS})

    def write(self, out: Path) -> None:
        """Write ``metrics.json``, ``answers.csv`` (one row per answer) and ``trajectories.csv`` under ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(self.summary(), indent=1) + "\n")
        with open(out / "answers.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "image", "question_type", "family", "sample", "question", "answer", "truth_m",
                        "truth_label", "label", "correct", "value_m", "ratio", "latency_ms", "error"])
            for r in self.answers:
                q = r.question
                w.writerow([q.row_id, q.image.name, q.question_type, q.family, r.sample, q.question, r.text, q.truth_m,
                            q.truth_label or "", r.label or "", int(r.correct) if q.qualitative else "",
                            _csv_number(r.value_m), _csv_number(r.ratio), _csv_number(r.latency_ms), r.error])
        with open(out / "trajectories.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seed", "frame", "estimate_m", "truth_m"])
            for t in self.trajectories:
                for i, (est, truth) in enumerate(zip(t.estimate_m, t.truth_m)):
                    w.writerow([t.seed, i, _csv_number(est), truth])


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _json_safe(value: Any) -> Any:
    """Replace NaN by None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def per_family(records: Sequence[AnswerRecord]) -> dict[str, dict[str, Any]]:
    """:func:`answer_metrics`' headline figures per question family (predicate, choice, classify, quantity, ...).

    Over the data engine's sampled questions; the exact gripper rows are in ``exact_gripper``.
    """
    out: dict[str, dict[str, Any]] = {}
    records = [r for r in records if not r.question.exact_truth]
    for family in sorted({r.question.family for r in records}):
        m = answer_metrics([r for r in records if r.question.family == family])
        out[family] = {k: m[k] for k in ("qualitative_accuracy", "number_rate", "within_0.5_2x", "within_0.75_1.25x")
                       if k in m}
        out[family]["n"] = sum(r.question.family == family for r in records)
    return out


def evaluate_vlm(vlm: SpatialVLM, data: Path, *, model: str = "", samples: int = 1, batch_size: int = 32,
                 limit: int | None = None, default_unit: str | None = None, trajectories: int = 2,
                 frames: int = 20, seed: int = EVAL_SEED_OFFSET, kind: DistanceKind | str = DistanceKind.GAP,
                 size: tuple[int, int] = (320, 240), split: str = "sim", mirror: bool = False) -> EvaluationReport:
    """Ask ``vlm`` every question of the dataset ``data`` and along ``trajectories`` approaches; score it all.

    Args:
        vlm: the model.
        data: dataset folder from the data engine.
        model: its name, for the report.
        samples: answers per question and frame.
        batch_size: requests per ``ask_batch``.
        limit: evaluate only the first ``limit`` rows.
        default_unit: unit of a bare number in an answer (None: such answers state no distance).
        trajectories: approaches to render (0: none).
        frames: frames per approach.
        seed: first simulator seed of the approaches (held out).
        kind: distance asked along the approaches.
        size: (width, height) of the approach frames.
        split: the approaches' scene distribution (one of :data:`~spatialvlm_ros.sim.splits.SPLITS`, see
            :func:`approach_trajectories`); recorded in the metrics.
        mirror: along the approaches, also ask on each frame's mirror image and average (see
            :func:`score_trajectory`); recorded in the metrics. The dataset's questions are asked as they are.

    Raises:
        ConfigError: bad counts or a training seed.
        InputError: an unreadable dataset.
        VLMError: the model did not answer the first batch.
    """
    from spatialvlm_ros.sim.splits import SPLITS
    if samples < 1 or batch_size < 1 or trajectories < 0 or frames < 2:
        raise ConfigError("need samples >= 1, batch size >= 1, trajectories >= 0 and frames >= 2")
    if split not in SPLITS:
        raise ConfigError(f"split: {split!r} is not one of {list(SPLITS)}")
    if trajectories:
        check_held_out(seed)  # before the questions are asked, not after
    questions = load_questions(data, limit)
    logger.info("asking %d questions x %d samples from %s", len(questions), samples, data)
    records = ask_questions(vlm, questions, samples, batch_size, default_unit)
    scored = [score_trajectory(vlm, t, samples, mirror)
              for t in approach_trajectories(trajectories, frames, seed, kind, *size, split=split)]
    rhos = [t.metrics["spearman"] for t in scored if math.isfinite(t.metrics["spearman"])]
    near = [abs(e - t) for r in scored for e, t in zip(r.estimate_m, r.truth_m)
            if t < NEAR_CONTACT_M and math.isfinite(e)]
    metrics = {"split": split, "mirror": mirror, **answer_metrics(records),
               "spearman": float(np.mean(rhos)) if rhos else math.nan,
               "trajectory_frames": sum(len(t.truth_m) for t in scored),
               "near_contact_trajectory_frames": len(near),
               "near_contact_trajectory_median_abs_error_m": float(np.median(near)) if near else math.nan,
               "per_family": per_family(records)}
    return EvaluationReport(model, str(data), tuple(records), tuple(scored), metrics)


__all__ = ["BANDS", "EVAL_SEED_OFFSET", "MIN_BAND_TRUTH_M", "NEAR_CONTACT_M", "PAPER_RESULTS", "AnswerRecord",
           "EvalQuestion", "EvaluationReport", "TrajectoryFrames", "TrajectoryResult", "answer_metrics",
           "approach_trajectories", "ask_questions", "check_held_out", "decide_label", "evaluate_vlm",
           "held_out_seed", "load_questions", "per_family", "score_answer", "score_trajectory",
           "warn_if_training_data"]
