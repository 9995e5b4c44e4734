"""Answer text -> metres: phrasings people and spatial VLMs write, and every answer the data engine writes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.synthesis import rounding
from spatialvlm_ros.vlm.templates import ANSWER_FRAMES, QUANTITY_ANSWERS, RELATION_WORDS
from spatialvlm_ros.vlm.parsing import METRES_PER_UNIT, UNIT_ALIASES, parse_answer

FT, IN, YD = 0.3048, 0.0254, 0.9144

# (answer, metres, spread in metres)
VALID = [
    # plain numbers and units, spellings and plurals
    ("1.2 m", 1.2, 0.0),
    ("1.2m", 1.2, 0.0),
    ("1 meter", 1.0, 0.0),
    ("3 meters", 3.0, 0.0),
    ("1 metre", 1.0, 0.0),
    ("2.5 metres", 2.5, 0.0),
    ("45 cm", 0.45, 0.0),
    ("45cm.", 0.45, 0.0),
    ("45 cm.", 0.45, 0.0),
    ("1 centimeter", 0.01, 0.0),
    ("86 centimeters", 0.86, 0.0),
    ("86 centimetres", 0.86, 0.0),
    ("350 mm", 0.35, 0.0),
    ("350 millimeters", 0.35, 0.0),
    ("0.002 km", 2.0, 0.0),
    ("3 kilometres", 3000.0, 0.0),
    ("10 in", 10 * IN, 0.0),
    ("10 in.", 10 * IN, 0.0),
    ("1 inch", IN, 0.0),
    ("12 inches", 12 * IN, 0.0),
    ('12"', 12 * IN, 0.0),
    ("12''", 12 * IN, 0.0),
    ("3 ft", 3 * FT, 0.0),
    ("3 ft.", 3 * FT, 0.0),
    ("1 foot", FT, 0.0),
    ("3 feet", 3 * FT, 0.0),
    ("3'", 3 * FT, 0.0),
    ("2 yd", 2 * YD, 0.0),
    ("1 yard", YD, 0.0),
    ("2 yards", 2 * YD, 0.0),
    ("1.5-meter gap", 1.5, 0.0),
    ("0 cm", 0.0, 0.0),
    ("0.0 meters", 0.0, 0.0),
    (".5 m", 0.5, 0.0),
    ("1,5 m", 1.5, 0.0),
    ("1,000 mm", 1.0, 0.0),
    # fractions
    ("1/2 m", 0.5, 0.0),
    ("3/4 of a meter", 0.75, 0.0),
    ("1 1/2 feet", 1.5 * FT, 0.0),
    ("\u00bd m", 0.5, 0.0),
    ("1\u00bd ft", 1.5 * FT, 0.0),
    # number words
    ("two meters", 2.0, 0.0),
    ("twenty-three centimeters", 0.23, 0.0),
    ("twenty three centimeters", 0.23, 0.0),
    ("fifteen cm", 0.15, 0.0),
    ("one hundred and twenty centimeters", 1.2, 0.0),
    ("a hundred centimeters", 1.0, 0.0),
    ("two thousand millimeters", 2.0, 0.0),
    ("one point five meters", 1.5, 0.0),
    ("zero point two five meters", 0.25, 0.0),
    ("two and a half meters", 2.5, 0.0),
    ("one and a half feet", 1.5 * FT, 0.0),
    ("2 and a half feet", 2.5 * FT, 0.0),
    ("three and a quarter inches", 3.25 * IN, 0.0),
    ("a meter and a half", 1.5, 0.0),
    ("a foot and a half", 1.5 * FT, 0.0),
    ("two metres and a half", 2.5, 0.0),
    ("half a meter", 0.5, 0.0),
    ("half of a metre", 0.5, 0.0),
    ("a quarter of a meter", 0.25, 0.0),
    ("three quarters of a meter", 0.75, 0.0),
    ("about a foot", FT, 0.0),
    ("an inch", IN, 0.0),
    ("a couple of feet", 2 * FT, 0.0),
    ("Twelve Inches", 12 * IN, 0.0),
    # ranges: midpoint, half-range spread
    ("2-3 feet", 2.5 * FT, 0.5 * FT),
    ("2 - 3 m", 2.5, 0.5),
    ("2\u20133 m", 2.5, 0.5),
    ("2 to 3 m", 2.5, 0.5),
    ("2 or 3 m", 2.5, 0.5),
    ("between 20 and 30 cm", 0.25, 0.05),
    ("between 20cm and 30cm", 0.25, 0.05),
    ("from 1 m to 150 cm", 1.25, 0.25),
    ("between two and three feet", 2.5 * FT, 0.5 * FT),
    ("ten or fifteen centimeters", 0.125, 0.025),
    ("somewhere in the 40-50 cm range", 0.45, 0.05),
    ("1.2 \u00b1 0.1 m", 1.2, 0.1),
    ("1.2 m +/- 10 cm", 1.2, 0.1),
    # compounds
    ("3 feet 4 inches", 3 * FT + 4 * IN, 0.0),
    ("3 feet and 4 inches", 3 * FT + 4 * IN, 0.0),
    ("3 feet, 4 inches", 3 * FT + 4 * IN, 0.0),
    ("3'4\"", 3 * FT + 4 * IN, 0.0),
    ("3' 4\"", 3 * FT + 4 * IN, 0.0),
    ("5'10", 5 * FT + 10 * IN, 0.0),
    ("5 ft 2 in", 5 * FT + 2 * IN, 0.0),
    ("3 ft. 4 in.", 3 * FT + 4 * IN, 0.0),
    ("1 m 20 cm", 1.2, 0.0),
    ("2 m and 30 cm", 2.3, 0.0),
    # hedges do not move the value
    ("about 40 cm", 0.4, 0.0),
    ("roughly 40 cm", 0.4, 0.0),
    ("approximately 40 cm", 0.4, 0.0),
    ("approx. 40 cm", 0.4, 0.0),
    ("~40cm", 0.4, 0.0),
    ("around 40 cm", 0.4, 0.0),
    ("nearly 40 cm", 0.4, 0.0),
    ("just under 40 cm", 0.4, 0.0),
    ("a little over 2 yards", 2 * YD, 0.0),
    ("less than a centimeter", 0.01, 0.0),
    ("\u2248 40 cm", 0.4, 0.0),
    # several numbers: the first one with a unit
    ("1.2 meters (about 4 feet)", 1.2, 0.0),
    ("There are 2 objects; the can is 30 cm from the gripper.", 0.3, 0.0),
    ("The can is 0.3 m from the gripper and the box is 0.5 m away.", 0.3, 0.0),
    ("The one on the left is 25 cm away.", 0.25, 0.0),
    ("They are 2 in apart", 2 * IN, 0.0),
    # contact
    ("They are touching.", 0.0, 0.0),
    ("The gripper touches the can.", 0.0, 0.0),
    ("The gripper is in contact with the red can.", 0.0, 0.0),
    ("There is no gap between them.", 0.0, 0.0),
    ("They are almost touching, about 2 cm apart.", 0.02, 0.0),
    # how spatial VLMs (SpaceQwen, SpaceThinker, Qwen2.5-VL, SpaceLLaVA) answer
    ("<think>The gripper is above the table, the can is about 12 cm tall, so the gap looks like three can heights."
     "</think>\n<answer>The distance is approximately 0.36 meters.</answer>", 0.36, 0.0),
    ("<think>\nThe can is 10 cm wide.\n</think>\n<answer>\n1.2 meters\n</answer>", 1.2, 0.0),
    ("<think>Reasoning with 5 cm and 8 cm.</think> The gap is about 45 cm.", 0.45, 0.0),
    ("<answer>About 1.5 m", 1.5, 0.0),
    ("**0.5 m**", 0.5, 0.0),
    ("The distance is **0.5 meters**.", 0.5, 0.0),
    ("`0.5 m`", 0.5, 0.0),
    ("The distance is approximately 45 centimeters.", 0.45, 0.0),
    ("I'd estimate around 2 feet", 2 * FT, 0.0),
    ("It's roughly 1.5m away", 1.5, 0.0),
    ("The yellow gripper is about 30 centimeters away from the red can.", 0.3, 0.0),
    ("The red can is 1.2 meters from the yellow gripper.", 1.2, 0.0),
    ("The distance between the yellow gripper and the red can is about 15 cm.", 0.15, 0.0),
    ("Approximately 2.5 feet (76 cm).", 2.5 * FT, 0.0),
    ("The yellow gripper is approximately 2 feet 6 inches from the red can.", 2 * FT + 6 * IN, 0.0),
    ('{"distance": "0.45 m"}', 0.45, 0.0),
    ("Let me look. The can is 10 cm wide and 12 cm tall.\nFinal answer: 30 cm", 0.3, 0.0),
    ("**Answer:** 0.8 m", 0.8, 0.0),
    ("\\boxed{1.2 \\text{ m}}", 1.2, 0.0),
    ("The gripper is \u2013 I would say \u2013 about 20 cm from the can.", 0.2, 0.0),
    ("In Qwen2.5-VL terms, about 3 m.", 3.0, 0.0),
]

# (answer, words of the reason)
INVALID = [
    ("", "empty answer"),
    ("   ", "empty answer"),
    ("**  **", "empty answer"),
    ("No idea.", "no number"),
    ("I'm sorry, I can't determine distances from a single image.", "no number"),
    ("The red can is to the right of the yellow gripper.", "no number"),
    ("They are not touching.", "no number"),
    ("The gripper isn't touching the can.", "no number"),
    ("a few centimeters", "no number"),
    ("0.5", "no unit"),
    ("There are 2 objects in the image.", "no unit"),
    ("There are 2 in the box", "no unit"),
    ("The can is 3 times farther than the box.", "no unit"),
    ('The answer is "2"', "no unit"),
    ("-0.2 m", "negative distance"),
    ("The gap is -5 cm.", "negative distance"),
    ("<think>The can is 12 cm tall and the gripper is", "cut off"),
    ("<answer></answer>", "empty answer"),
]


@pytest.mark.parametrize("text, metres, spread", VALID)
def test_valid_phrasings(text: str, metres: float, spread: float) -> None:
    parsed = parse_answer(text)
    assert parsed.valid, parsed.reason
    assert parsed.reason is None
    assert parsed.value_m == pytest.approx(metres, rel=1e-9, abs=1e-12)
    assert parsed.spread_m == pytest.approx(spread, rel=1e-9, abs=1e-12)
    assert parsed.matched_text and parsed.matched_text in text


@pytest.mark.parametrize("text, reason", INVALID)
def test_invalid_phrasings_say_why(text: str, reason: str) -> None:
    parsed = parse_answer(text)
    assert not parsed.valid
    assert reason in parsed.reason
    assert math.isnan(parsed.value_m) and math.isnan(parsed.spread_m)


def test_enough_phrasings() -> None:
    assert len(VALID) + len(INVALID) >= 100


@pytest.mark.parametrize("text, unit, metres", [
    ("0.5", "m", 0.5), ("45", "cm", 0.45), ("2-3", "ft", 2.5 * FT), ("About 12.", "in", 12 * IN),
    ("30 cm", "m", 0.3),   # a stated unit wins over the default
])
def test_default_unit_reads_bare_numbers(text: str, unit: str, metres: float) -> None:
    parsed = parse_answer(text, default_unit=unit)
    assert parsed.valid and parsed.value_m == pytest.approx(metres)


def test_unknown_default_unit() -> None:
    with pytest.raises(ConfigError, match="default unit 'parsec'"):
        parse_answer("1", default_unit="parsec")


@pytest.mark.parametrize("text, matched, unit", [
    ("The distance is **two and a half meters** from the can.", "two and a half meters", "m"),
    ("between 20 and 30 cm", "20 and 30 cm", "cm"),
    ("It's roughly 1.5m away", "1.5m", "m"),
    ("5 ft 2 in", "5 ft 2 in", "ft"),
    ("They are touching.", "touching", None),
])
def test_matched_text_quotes_the_original(text: str, matched: str, unit: str | None) -> None:
    parsed = parse_answer(text)
    assert (parsed.matched_text, parsed.unit) == (matched, unit)


def test_units_agree_with_the_data_engine() -> None:
    for unit, metres in rounding.METRES_PER_UNIT.items():
        assert METRES_PER_UNIT[unit] == metres
        singular, plural = rounding.UNIT_WORDS[unit]
        assert {singular, plural} <= set(UNIT_ALIASES[unit])


# --- every answer the data engine writes parses back within its rounding step -------------------------------

ENGINE_TEMPLATES = sorted({t for answers in QUANTITY_ANSWERS.values() for t in answers}
                          | set(ANSWER_FRAMES["difference_more"]) | set(ANSWER_FRAMES["difference_less"]))
TRUTHS_M = (0.004, 0.03, 0.086, 0.3, 0.86, 1.0, 2.345, 9.7, 23.0)
#: (imperial_probability, coarse_probability): each branch of the rounding, forced.
BRANCHES = ((0.0, 1.0), (0.0, 0.0), (1.0, 1.0), (1.0, 0.0))
MORE = [w for rel in ("left", "right", "above", "below", "behind", "front") for w in RELATION_WORDS[rel]["more"]]


@pytest.mark.parametrize("template", ENGINE_TEMPLATES)
def test_every_engine_answer_parses_back(template: str) -> None:
    rng = np.random.default_rng(0)
    for i, (truth, (imperial, coarse)) in enumerate((t, b) for t in TRUTHS_M for b in BRANCHES):
        spoken = rounding.say_distance(truth, rng, imperial, coarse)
        text = template.format(A="the red can", B="the blue box on the left", value=spoken.text,
                               more=MORE[i % len(MORE)], less=MORE[(i + 1) % len(MORE)])
        text = text[:1].upper() + text[1:]
        parsed = parse_answer(text)
        assert parsed.valid, (text, parsed.reason)
        assert parsed.value_m == pytest.approx(spoken.value_m, abs=1e-12), text
        assert abs(parsed.value_m - truth) <= spoken.step_m / 2 + 1e-9, text
        assert parsed.unit == spoken.unit, text
