"""Human-like rounding of metric truths (paper step 7) and the parser that reads such answers back.

The decision tree, per answer (every branch drawn from the image's seeded generator):

1. unit system: imperial (feet / inches) with ``imperial_probability`` (the paper's 20%), else metric;
2. precision: coarse with ``coarse_probability`` (75%), else fine;
3. unit: the large unit (m, ft) when the value is at least one of it, or, when coarse, at least 0.75
   of it (so 0.86 m reads "1 m"); otherwise the small unit (cm, in);
4. rounding: coarse = whole units below 10, one significant figure from 10 up (23 m -> "20 m",
   86 cm -> "90 cm"); fine = two significant figures in the large unit ("1.3 m", "23 m"), whole units
   in the small one ("86 cm").

So 0.86 m reads "1 m" 75% of the time (metric, coarse), else "86 cm" / "3 feet" / "2.8 feet" /
"34 inches". One guard beyond the paper (``questions.max_coarse_error``, 20% by default): a coarse
rounding that lands further than that from the value (0.149 m -> "10 cm", 33% off) is said with the
fine precision instead ("15 cm"), so no answer is wrong by its rounding alone. The step of the
rounding used travels with the answer, so a consumer knows how exact the text is:
``|value_m - truth| <= step_m / 2`` always holds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

#: Unit symbol -> metres per unit.
METRES_PER_UNIT = {"m": 1.0, "cm": 0.01, "ft": 0.3048, "in": 0.0254}
#: Unit symbol -> (singular, plural) as written in answers.
UNIT_WORDS = {"m": ("meter", "meters"), "cm": ("centimeter", "centimeters"), "ft": ("foot", "feet"),
              "in": ("inch", "inches")}
_SYSTEMS = {"metric": ("m", "cm"), "imperial": ("ft", "in")}
# Every spelling the parser accepts, longest first so "centimeters" wins over "m".
_UNIT_ALIASES = {"m": ("meters", "meter", "metres", "metre", "m"),
                 "cm": ("centimeters", "centimeter", "centimetres", "centimetre", "cm"),
                 "ft": ("feet", "foot", "ft"), "in": ("inches", "inch", "in")}
_ALIAS_TO_UNIT = {alias: unit for unit, aliases in _UNIT_ALIASES.items() for alias in aliases}
_QUANTITY = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(" + "|".join(sorted(_ALIAS_TO_UNIT, key=len, reverse=True))
                       + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class SpokenDistance:
    """A rounded distance as an answer says it, with what it stands for.

    Attributes:
        value: the number written (e.g. 90.0).
        unit: its unit symbol, a key of :data:`METRES_PER_UNIT`.
        text: how it is written ("90 cm", "3 feet").
        value_m: ``value`` converted to metres.
        step_m: the rounding step used, metres (the text is within half of it of the truth).
    """

    value: float
    unit: str
    text: str
    value_m: float
    step_m: float


def _format_number(value: float, step: float) -> str:
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9)))
    return f"{value:.{decimals}f}"


def _round_to(value: float, step: float) -> float:
    # round-half-up on a decimal grid; the tiny epsilon keeps 2.5 from becoming 2 through binary fractions
    return math.floor(value / step + 0.5 + 1e-9) * step


def _rounded(value_m: float, large: str, small: str, coarse: bool) -> tuple[str, float, float]:
    """(unit, rounded value in that unit, step in that unit) of one branch of the decision tree."""
    in_large = value_m / METRES_PER_UNIT[large]
    if in_large >= (0.75 if coarse else 1.0):
        unit, x = large, in_large
        magnitude = 10.0 ** math.floor(math.log10(x))
        step = (1.0 if x < 10 else magnitude) if coarse else magnitude / 10
    else:
        unit, x = small, value_m / METRES_PER_UNIT[small]
        step = 10.0 ** math.floor(math.log10(x)) if coarse and x >= 10 else 1.0
    return unit, _round_to(x, step), step


def say_distance(value_m: float, rng: np.random.Generator, imperial_probability: float = 0.2,
                 coarse_probability: float = 0.75, max_coarse_error: float = math.inf) -> SpokenDistance:
    """Round a non-negative distance the way a person would say it (see the module docstring).

    Args:
        value_m: the exact distance, metres, >= 0.
        rng: draws the unit system and precision.
        imperial_probability: chance of feet / inches.
        coarse_probability: chance of the coarse precision.
        max_coarse_error: a coarse rounding further than this relative error from ``value_m`` (0.149 m
            said "10 cm" is 33% off) is said with the fine precision instead ("15 cm"); the default
            keeps the paper's tree as drawn.

    Returns:
        The spoken distance.

    Raises:
        ValueError: a negative or non-finite distance (a programming error: callers pass magnitudes).

    Example:
        >>> say_distance(0.86, np.random.default_rng(0), imperial_probability=0.0, coarse_probability=1.0).text
        '1 meter'
        >>> say_distance(23.0, np.random.default_rng(0), imperial_probability=0.0, coarse_probability=1.0).text
        '20 meters'
        >>> say_distance(0.86, np.random.default_rng(0), imperial_probability=1.0, coarse_probability=1.0).text
        '3 feet'
        >>> say_distance(0.86, np.random.default_rng(0), imperial_probability=0.0, coarse_probability=0.0).text
        '86 centimeters'
        >>> say_distance(0.149, np.random.default_rng(0), 0.0, 1.0, max_coarse_error=0.2).text
        '15 centimeters'
    """
    if not (math.isfinite(value_m) and value_m >= 0):
        raise ValueError(f"distance must be finite and >= 0, got {value_m}")
    imperial = rng.random() < imperial_probability
    coarse = rng.random() < coarse_probability
    large, small = _SYSTEMS["imperial" if imperial else "metric"]
    unit, value, step = _rounded(value_m, large, small, coarse)
    if coarse and abs(value * METRES_PER_UNIT[unit] - value_m) > max_coarse_error * value_m:
        unit, value, step = _rounded(value_m, large, small, False)
    # A value that rounds up to the next decade (9.7 -> 10) keeps the step it was rounded with.
    number = _format_number(value, step)
    singular, plural = UNIT_WORDS[unit]
    word = singular if number == "1" else plural
    return SpokenDistance(value=float(number), unit=unit, text=f"{number} {word}",
                          value_m=float(number) * METRES_PER_UNIT[unit], step_m=step * METRES_PER_UNIT[unit])


def parse_distance(text: str) -> float | None:
    """Read the first "<number> <unit>" of an answer back into metres; None when there is none.

    Handles the numbers and units :func:`say_distance` writes (digits; m, cm, ft, in, spelled out or
    abbreviated). A fuller parser (number words, ranges, "a foot and a half") belongs to the VLM side.

    Example:
        >>> parse_distance("The red can is about 90 centimeters from the box.")
        0.9
        >>> round(parse_distance("3 feet"), 4), parse_distance("no idea")
        (0.9144, None)
    """
    match = _QUANTITY.search(text)
    if match is None:
        return None
    return float(match.group(1)) * METRES_PER_UNIT[_ALIAS_TO_UNIT[match.group(2).lower()]]
