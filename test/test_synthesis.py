"""Question synthesis on analytic scenes: every one of the 43 types against a known truth, no rendering."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from spatialvlm_ros.config import ModelsConfig
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.perception.offline import CAPTION_WORDS, CharNgramEmbedder, sample_caption
from spatialvlm_ros.perception.registry import OBJECT_EXPERTS
from spatialvlm_ros.synthesis.ambiguity import disambiguate
from spatialvlm_ros.synthesis.config import QuestionsConfig, SynthesisConfig, load_synthesis_config
from spatialvlm_ros.synthesis.questions import (CLASSIFY_PAIRS, OPPOSITE, QUESTION_TYPES, TYPES_BY_NAME, make_qa,
                                                synthesize_qa)
from spatialvlm_ros.synthesis.records import Box3D, SceneObject, SceneRecord
from spatialvlm_ros.synthesis.rounding import parse_distance, say_distance
from spatialvlm_ros.vlm.templates import (ANSWER_FRAMES, CLASSIFY_WORDS, QUANTITY_ANSWERS, QUANTITY_QUESTIONS,
                                          QUESTION_FRAMES, RELATION_WORDS)

# A is left of, above, in front of, taller, wider and bigger than B (scene frame: x forward, y left, z up).
BOX_A = Box3D(centre_m=(1.0, 0.3, 0.30), depth_m=0.1, width_m=0.2, height_m=0.3)
BOX_B = Box3D(centre_m=(1.5, -0.2, 0.05), depth_m=0.1, width_m=0.1, height_m=0.1)
A = SceneObject(object_id=1, name="red box", caption="big box", reference="the big box", box=BOX_A,
                pixel_centre=(10.0, 10.0), n_points=100)
B = SceneObject(object_id=2, name="blue ball", caption="small ball", reference="the small ball", box=BOX_B,
                pixel_centre=(30.0, 20.0), n_points=100)

PREDICATE = {"left": True, "right": False, "above": True, "below": False, "behind": False, "front": True,
             "tall": True, "short": False, "wide": True, "thin": False, "big": True, "small": False}
CLASSIFY = {"left_right": "left", "above_below": "above", "behind_front": "front", "tall_short": "tall",
            "wide_thin": "wide", "big_small": "big"}
QUANTITY = {"distance": 0.75, "gap": math.sqrt(0.4 ** 2 + 0.35 ** 2 + 0.05 ** 2), "height": 0.3, "width": 0.2,
            "elevation": 0.15, "vertical_distance": 0.25, "horizontal_distance": math.sqrt(0.5)}
DIFFERENCE = {"above": 0.25, "below": -0.25, "behind": -0.5, "front": 0.5, "left": 0.5, "right": -0.5}
CFG = QuestionsConfig()


def scene(objects: tuple[SceneObject, ...], canonicalised: bool = True) -> SceneRecord:
    return SceneRecord(image_id="analytic", width=64, height=48, canonicalised=canonicalised,
                       camera_to_scene=tuple(tuple(r) for r in np.eye(4)),
                       camera_height_m=0.5 if canonicalised else None, objects=objects)


def test_there_are_43_types_in_five_families() -> None:
    families = [t.family for t in QUESTION_TYPES]
    assert len(QUESTION_TYPES) == 43 == len(TYPES_BY_NAME)
    counts = [families.count(f) for f in ("predicate", "choice", "classify", "quantity", "difference")]
    assert counts == [12, 12, 6, 7, 6]


@pytest.mark.parametrize("qtype", QUESTION_TYPES, ids=lambda t: t.name)
def test_every_type_is_answered_correctly_on_an_analytic_scene(qtype) -> None:
    for seed in range(40):                               # many draws: every phrasing and rounding branch
        pair = make_qa(qtype, A, B, np.random.default_rng(seed), CFG)
        assert pair is not None and pair.question and pair.answer
        assert pair.object_ids == ((1,) if qtype.arity == 1 else (1, 2))
        if qtype.family == "predicate":
            holds = PREDICATE[qtype.relation]
            assert pair.truth_label == ("yes" if holds else "no")
            assert (pair.truth_m > 0) == holds
            assert pair.answer.startswith(("Yes", "Correct", "Indeed", "That's right") if holds
                                          else ("No", "Incorrect", "Not really"))
        elif qtype.family == "choice":
            chosen = A if PREDICATE[qtype.relation] else B
            assert pair.truth_label == str(chosen.object_id)
            positions = {o.reference: pair.answer.lower().find(o.reference) for o in (A, B)}
            first = min((p, ref) for ref, p in positions.items() if p >= 0)[1]
            assert first == chosen.reference
        elif qtype.family == "classify":
            held = CLASSIFY[qtype.relation]
            assert pair.truth_label == held
            phrases = RELATION_WORDS[held]["rel"] + RELATION_WORDS[held]["short"]
            assert any(phrase in pair.answer.lower() for phrase in phrases)
        else:
            truth = QUANTITY[qtype.relation] if qtype.family == "quantity" else DIFFERENCE[qtype.relation]
            assert pair.truth_m == pytest.approx(truth, abs=1e-9)
            assert pair.truth_unit == "m"
            # The text says the rounded magnitude; it parses back to the number recorded beside it.
            assert parse_distance(pair.answer) == pytest.approx(abs(pair.answer_value_m), abs=1e-12)
            assert abs(abs(pair.answer_value_m) - abs(truth)) <= pair.rounding_step_m / 2 + 1e-9
            assert math.copysign(1, pair.answer_value_m) == math.copysign(1, truth)


@pytest.mark.parametrize("qtype", [t for t in QUESTION_TYPES if t.arity == 2], ids=lambda t: t.name)
def test_swapping_a_and_b_gives_consistent_answers(qtype) -> None:
    ab = make_qa(qtype, A, B, np.random.default_rng(1), CFG)
    ba = make_qa(qtype, B, A, np.random.default_rng(2), CFG)
    if qtype.family == "predicate":
        assert {ab.truth_label, ba.truth_label} == {"yes", "no"}
        opposite = make_qa(TYPES_BY_NAME[f"predicate_{OPPOSITE[qtype.relation]}"], B, A, np.random.default_rng(3), CFG)
        assert opposite.truth_label == ab.truth_label
    elif qtype.family == "choice":
        assert ab.truth_label == ba.truth_label
    elif qtype.family == "classify":
        first, second = CLASSIFY_PAIRS[qtype.relation]
        assert {ab.truth_label, ba.truth_label} == {first, second}
    elif qtype.family == "quantity":
        assert ab.truth_m == pytest.approx(ba.truth_m)
    else:
        assert ab.truth_m == pytest.approx(-ba.truth_m)
        mirrored = make_qa(TYPES_BY_NAME[f"difference_{OPPOSITE[qtype.relation]}"], B, A, np.random.default_rng(4), CFG)
        assert mirrored.truth_m == pytest.approx(ab.truth_m)


def test_ties_give_no_qualitative_question() -> None:
    same = Box3D(centre_m=(1.0, 0.31, 0.3), depth_m=0.1, width_m=0.2, height_m=0.3)
    twin = SceneObject(**{**A.__dict__, "object_id": 3, "box": same})
    assert make_qa(TYPES_BY_NAME["predicate_left"], A, twin, np.random.default_rng(0), CFG) is None
    assert make_qa(TYPES_BY_NAME["choice_tall"], A, twin, np.random.default_rng(0), CFG) is None
    assert make_qa(TYPES_BY_NAME["distance"], A, twin, np.random.default_rng(0), CFG) is not None


def test_height_is_measured_along_up_not_the_width() -> None:
    # VQASynth's "height" read the x extent; here a flat, wide box is 0.05 m tall.
    flat = SceneObject(**{**A.__dict__, "box": Box3D(centre_m=(1.0, 0.0, 0.025), depth_m=0.4, width_m=0.6,
                                                     height_m=0.05)})
    pair = make_qa(TYPES_BY_NAME["height"], flat, None, np.random.default_rng(0), CFG)
    assert pair.truth_m == pytest.approx(0.05)


def test_non_canonical_scenes_get_no_elevation_dependent_questions() -> None:
    pairs = synthesize_qa(scene((A, B), canonicalised=False), np.random.default_rng(0),
                          QuestionsConfig(per_image=2000))
    asked = {p.question_type for p in pairs}
    assert not any(TYPES_BY_NAME[t].needs_up for t in asked)
    assert {"elevation", "height", "vertical_distance", "predicate_above", "difference_below"}.isdisjoint(asked)
    assert {"distance", "predicate_left", "difference_front"} <= asked


def test_sampling_is_half_qualitative_and_covers_every_type() -> None:
    pairs = synthesize_qa(scene((A, B)), np.random.default_rng(0), QuestionsConfig(per_image=4000))
    assert len(pairs) == 4000
    assert sum(p.qualitative for p in pairs) / len(pairs) == pytest.approx(0.5, abs=0.03)
    assert {p.question_type for p in pairs} == set(TYPES_BY_NAME)


def test_answers_are_biased_to_concise_ones() -> None:
    pairs = synthesize_qa(scene((A, B)), np.random.default_rng(0), QuestionsConfig(per_image=3000))
    distance = [p.answer for p in pairs if p.question_type == "distance"]
    bare = sum(1 for a in distance if a.count(" ") <= 1)          # "{value}." e.g. "80 centimeters."
    assert bare / len(distance) > 0.3
    assert np.mean([len(a) for a in distance]) < np.mean([len(t) for t in QUANTITY_ANSWERS["distance"]]) + 10


def test_synthesis_is_deterministic_for_a_seed() -> None:
    first = synthesize_qa(scene((A, B)), np.random.default_rng(7), CFG)
    again = synthesize_qa(scene((A, B)), np.random.default_rng(7), CFG)
    other = synthesize_qa(scene((A, B)), np.random.default_rng(8), CFG)
    assert first == again != other


def phrasings(qtype) -> tuple[int, int]:
    """Distinct question and answer phrasings a type can produce."""
    if qtype.family == "quantity":
        return len(set(QUANTITY_QUESTIONS[qtype.relation])), len(set(QUANTITY_ANSWERS[qtype.relation]))
    if qtype.family == "classify":
        return len(QUESTION_FRAMES["classify"]) * len(CLASSIFY_WORDS[qtype.relation]), len(ANSWER_FRAMES["classify"])
    if qtype.family == "difference":
        return (len(QUESTION_FRAMES["difference"]) * len(RELATION_WORDS[qtype.relation]["more"]),
                min(len(ANSWER_FRAMES["difference_more"]), len(ANSWER_FRAMES["difference_less"])))
    words = RELATION_WORDS[qtype.relation]["rel" if qtype.family == "predicate" else "cmp"]
    answers = (min(len(ANSWER_FRAMES["predicate_yes"]), len(ANSWER_FRAMES["predicate_no"]))
               if qtype.family == "predicate" else len(ANSWER_FRAMES["choice"]))
    return len(QUESTION_FRAMES[qtype.family]) * len(set(words)), answers


@pytest.mark.parametrize("qtype", QUESTION_TYPES, ids=lambda t: t.name)
def test_each_type_has_10_questions_and_5_answers(qtype) -> None:
    n_questions, n_answers = phrasings(qtype)
    assert n_questions >= 10 and n_answers >= 5
    seen = {make_qa(qtype, A, B, np.random.default_rng(s), CFG).question for s in range(400)}
    assert len(seen) >= 10


@pytest.mark.parametrize("value_m", [0.0, 0.004, 0.05, 0.0951, 0.3, 0.74, 0.86, 1.49, 2.6, 9.7, 23.0, 140.0])
def test_rounding_round_trips_within_its_step(value_m: float) -> None:
    for seed in range(50):
        spoken = say_distance(value_m, np.random.default_rng(seed))
        assert parse_distance(spoken.text) == pytest.approx(spoken.value_m, abs=1e-12)
        assert abs(spoken.value_m - value_m) <= spoken.step_m / 2 + 1e-9


def test_rounding_matches_the_paper_examples_and_imperial_share() -> None:
    texts = [say_distance(0.86, np.random.default_rng(s)).text for s in range(2000)]
    assert texts.count("1 meter") / len(texts) == pytest.approx(0.8 * 0.75, abs=0.04)
    assert {"1 meter", "3 feet", "86 centimeters"} <= set(texts)
    imperial = sum(t.endswith(("feet", "foot", "inches", "inch")) for t in texts)
    assert imperial / len(texts) == pytest.approx(0.2, abs=0.03)
    coarse = say_distance(23.0, np.random.default_rng(0), imperial_probability=0.0, coarse_probability=1.0)
    assert coarse.text == "20 meters"


def test_no_scaling_of_distances() -> None:
    # VQASynth multiplied distances by 10 before rounding; here 0.75 m reads as 0.75 m within the rounding.
    pair = make_qa(TYPES_BY_NAME["distance"], A, B, np.random.default_rng(0), CFG)
    assert 0.5 <= parse_distance(pair.answer) <= 1.0


def test_near_duplicate_captions_get_a_clause_and_triples_are_dropped() -> None:
    result = disambiguate(["can", "red can", "ball", "small ball", "green ball", "blue sky", "box"],
                          np.array([[5, 5], [40, 6], [1, 1], [2, 2], [3, 3], [0, 0], [9, 9]]),
                          CharNgramEmbedder(), 0.75, SynthesisConfig().ambiguity.background)
    assert result.references[:2] == ("the can that's more to the left of the image",
                                     "the red can that's more to the right of the image")
    assert result.references[6] == "the box"
    assert result.dropped == (2, 3, 4, 5)


def test_unknown_expert_and_bad_config_are_reported_by_name() -> None:
    with pytest.raises(ConfigError, match="experts.objects: unknown 'owlv2'; registered: sim_oracle, open_vocab"):
        OBJECT_EXPERTS.create("owlv2", ModelsConfig())
    with pytest.raises(ConfigError, match="questions.qualitative_fraction"):
        load_synthesis_config(overrides={"questions": {"qualitative_fraction": 2.0}})


def test_shipped_yaml_matches_the_dataclass_defaults() -> None:
    assert load_synthesis_config() == SynthesisConfig()


def test_captions_pairs_with_different_kinds_never_collide() -> None:
    kinds = list(CAPTION_WORDS)
    emb = CharNgramEmbedder()
    for (k1, k2), seed in itertools.product(itertools.combinations(kinds, 2), range(10)):
        rng = np.random.default_rng(seed)
        a, b = sample_caption("red", k1, rng), sample_caption("red", k2, rng)
        vec = emb.embed([a, b])
        assert vec[0] @ vec[1] < 0.75, (a, b)
