r"""Free-text distance answers -> metres: read back what a spatial VLM (or the data engine) says.

The rules, in the order they apply:

1. **Where the answer is.** The text inside the last ``<answer>...</answer>`` (an unclosed tag runs
   to the end); else the text after the last ``</think>``; else, when a ``<think>`` was never closed,
   nothing (the reasoning was cut off, e.g. by ``max_tokens``: its intermediate numbers are not the
   answer); else the text after the last ``Answer:`` / ``Final answer:``; else the whole text.
2. **Clean-up.** Markdown (``**``, backticks, ``__``) and LaTeX wrappers (``\boxed{}``, ``\text{}``)
   are dropped; dashes, primes, curly quotes and vulgar fractions (``½``) become ASCII.
3. **Number words** become digits: "twenty-three", "one hundred and twenty", "one point five",
   "two and a half", "a meter and a half", "half a meter", "three quarters of a meter", "a couple of
   feet", "a foot" (= 1 foot).
4. **Quantities**: a number (``12``, ``1.5``, ``.5``, ``1/2``, ``1 1/2``, ``1,000`` with a thousands
   comma, ``1,5`` with a decimal comma) followed by a unit: mm, cm, m, km, in, ft, yd in symbols,
   words, plurals and British spellings, ``'`` (feet) and ``"`` / ``''`` (inches) right after the
   number. "in" counts as inches only where the next word cannot start a phrase ("2 in the box" is
   not a length). Combined forms:

   * ranges "2-3 feet", "2 to 3 m", "2 or 3 m", "between 20 and 30 cm", "from 1 m to 150 cm":
     the midpoint, with ``spread_m`` = half the range;
   * "1.2 m ± 10 cm", "1.2 +/- 0.1 m": the value, with the stated spread;
   * compounds "3 feet 4 inches", ``3'4"``, ``5'10``, "5 ft 2 in", "1 m 20 cm": the sum.

5. **Which quantity.** The first quantity *with a unit* in the answer text (the one nearest its
   start): a VLM states its estimate first and explains after ("1.2 m, about 4 feet"). Hedges
   ("about", "roughly", "~", "nearly", "just under") are read but do not move the value.
6. **No quantity with a unit.** A statement of contact ("they are touching", "in contact", "no
   gap"), not negated ("not touching"), reads as 0 m: for a gap that is the right answer, and it is
   what the data engine's truths say when boxes touch. Otherwise the first bare number is used in
   ``default_unit`` when one is given; otherwise the answer is invalid.
7. **Invalid**: an empty answer, no number, a number without a unit (and no default unit), a
   negative distance (a distance question answered with a sign is a confused answer, not a small
   distance), or reasoning cut off before its answer. ``reason`` says which.

Zero with a unit ("0 cm") is a valid 0 m. A single value has ``spread_m`` 0.0 (the text states no
range); an invalid answer has NaN value and spread.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from spatialvlm_ros.errors import ConfigError

#: Unit symbol -> metres per unit.
METRES_PER_UNIT: dict[str, float] = {"mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254,
                                     "ft": 0.3048, "yd": 0.9144}
#: Unit symbol -> every word or abbreviation read as that unit (besides the ' and " marks).
UNIT_ALIASES: dict[str, tuple[str, ...]] = {
    "mm": ("millimeters", "millimeter", "millimetres", "millimetre", "mm"),
    "cm": ("centimeters", "centimeter", "centimetres", "centimetre", "cms", "cm"),
    "m": ("meters", "meter", "metres", "metre", "mtrs", "mtr", "m"),
    "km": ("kilometers", "kilometer", "kilometres", "kilometre", "km"),
    "in": ("inches", "inch", "in"),
    "ft": ("feet", "foot", "ft"),
    "yd": ("yards", "yard", "yds", "yd"),
}
_ALIAS_TO_UNIT = {alias: unit for unit, aliases in UNIT_ALIASES.items() for alias in aliases}
#: Two units written one after the other that add up ("3 feet 4 inches"), larger first.
_COMPOUNDS = {("ft", "in"), ("yd", "ft"), ("yd", "in"), ("m", "cm"), ("m", "mm"), ("cm", "mm"), ("km", "m")}

# --- clean-up -----------------------------------------------------------------------------------
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_THINK_END = re.compile(r"</think>", re.IGNORECASE)
_THINK_START = re.compile(r"<think>", re.IGNORECASE)
_ANSWER_MARKER = re.compile(r"\b(?:final\s+)?answer\s*(?:is\s*)?:", re.IGNORECASE)
_ASCII = {"\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-", "\u2032": "'", "\u2019": "'",
          "\u2018": "'", "\u2033": '"', "\u201c": '"', "\u201d": '"', "\u00bd": " 1/2", "\u00bc": " 1/4",
          "\u00be": " 3/4", "\u00b1": "+/-"}
_ASCII_RE = re.compile("|".join(map(re.escape, _ASCII)))
_MARKUP = re.compile(r"\*+|`+|__+|\$|\\(?:boxed|text|mathrm|textrm|mbox)\s*\{|[{}]|\\[,;!]")
_LATEX_APPROX = re.compile(r"\\(?:approx|sim)\b")

# --- number words -------------------------------------------------------------------------------
_SMALL = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_WORD = re.compile(r"[A-Za-z]+")
_JOINER = re.compile(r"\s+|\s*-\s*")
_A_SCALE = re.compile(r"\ban?\s+(hundred|thousand)\b", re.IGNORECASE)

# --- idioms (after number words became digits) ----------------------------------------------------
_UNIT_WORD = (r"(?:millimet(?:er|re)s?|centimet(?:er|re)s?|kilomet(?:er|re)s?|met(?:er|re)s?|feet|foot|inch(?:es)?"
              r"|yards?)")
_UNIT_WORD_ONE = r"(?:millimet(?:er|re)|centimet(?:er|re)|kilomet(?:er|re)|met(?:er|re)|foot|inch|yard)"
_NUM = r"(?<![\w.])(\d+(?:\.\d+)?)"
_FRACTIONS = {"half": 0.5, "quarter": 0.25, "quarters": 0.75}
_IDIOMS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), repl) for pattern, repl in (
        # "a meter and a half", "1 foot and a half"
        (r"\b(?:an?|1)\s+(" + _UNIT_WORD_ONE + r")\s+and\s+(?:a|1)\s+half\b", lambda m: f"1.5 {m[1]}"),
        (_NUM + r"\s+(" + _UNIT_WORD + r")\s+and\s+(?:a|1)\s+half\b",
         lambda m: f"{_fmt(float(m[1]) + 0.5)} {m[2]}"),
        # "2 and a half", "2 and a quarter", "2 and 3 quarters"
        (_NUM + r"\s+and\s+(?:(?:a|1)\s+(half|quarter)|3\s+(quarters))\b",
         lambda m: _fmt(float(m[1]) + _FRACTIONS[(m[2] or m[3]).lower()])),
        # "3 quarters of a meter"
        (_NUM + r"\s+quarters\s+(?:of\s+)?(?:an?|1)\s+(" + _UNIT_WORD + r")",
         lambda m: f"{_fmt(float(m[1]) / 4)} {m[2]}"),
        # "half a meter", "a quarter of a meter", "half meter"
        (r"\b(?:(?:a|1)\s+)?(half|quarter)\s+(?:of\s+)?(?:(?:an?|1)\s+)?(" + _UNIT_WORD + r")",
         lambda m: f"{_FRACTIONS[m[1].lower()]} {m[2]}"),
        # "3/4 of a meter", "0.5 of a meter"
        (r"(?<![\w.])(\d+(?:\.\d+)?(?:/\d+)?)\s+of\s+(?:an?|1)\s+(" + _UNIT_WORD + r")", lambda m: f"{m[1]} {m[2]}"),
        (r"\ba\s+couple\s+(?:of\s+)?(" + _UNIT_WORD + r")", lambda m: f"2 {m[1]}"),
        # "about a foot": the article is the number
        (r"\ban?\s+(" + _UNIT_WORD_ONE + r")\b", lambda m: f"1 {m[1]}"),
    ))

# --- quantities -----------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?<![\w.,/])(?P<sign>-(?=\.?\d))?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:[.,]\d+)?|\.\d+)"
                     r"(?:\s+(?P<fn>\d+)/(?P<fd>\d+)|/(?P<den>\d+))?(?![\d/]|[.,]\d)")
_UNIT = re.compile(r"\s*(?:-\s*)?(?P<unit>" + "|".join(sorted(_ALIAS_TO_UNIT, key=len, reverse=True))
                   + r")(?![a-z])", re.IGNORECASE)
# After "2 in", words that make it a length; anything else ("2 in the box") is not.
_INCH_FOLLOW = re.compile(r"\s*(?:$|[.,;:!?)\]/\"']|(?:apart|away|from|of|and|or|to|long|wide|tall|high|deep|between|"
                          r"gap|thick|across)\b)", re.IGNORECASE)
_FEET_MARK = re.compile(r"'(?![a-z'])", re.IGNORECASE)
_INCH_MARK = re.compile(r"(?:''|\")(?![a-z0-9])", re.IGNORECASE)
_RANGE_SEP = re.compile(r"\s*(?:-|to|or)\s*", re.IGNORECASE)
_AND_SEP = re.compile(r"\s*and\s*", re.IGNORECASE)
_BETWEEN = re.compile(r"\b(?:between|from)\s*$", re.IGNORECASE)
_PLUS_MINUS = re.compile(r"\s*(?:\+/-|\+-)\s*")
_COMPOUND_SEP = re.compile(r"\.?\s*,?\s*(?:and\s+)?", re.IGNORECASE)
_CONTACT = re.compile(r"\b(?:touch(?:ing|es)?|in\s+(?:direct\s+)?contact|no\s+(?:gap|space|distance|clearance)"
                      r"|(?:0|zero)\s+(?:gap|distance|space|clearance)|flush\s+against)\b", re.IGNORECASE)
_NEGATED = re.compile(r"(?:\bnot|n't|\bno\s+longer|\bnever)\s+(?:\w+\s+)?$", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedDistance:
    """A distance read from answer text.

    Attributes:
        value_m: the distance, metres (a range's midpoint); NaN when invalid.
        spread_m: half the stated range ("2-3 m": 0.5) or the stated ± , metres; 0.0 for a single
            value; NaN when invalid.
        valid: whether ``value_m`` can be used.
        reason: why not, when invalid (None when valid).
        matched_text: the part of the original text the value was read from ("" when invalid).
        unit: the unit it was stated in (a key of :data:`METRES_PER_UNIT`; the larger unit of a
            compound); None for a statement of contact.
    """

    value_m: float
    spread_m: float
    valid: bool
    reason: str | None = None
    matched_text: str = ""
    unit: str | None = None

    @classmethod
    def invalid(cls, reason: str, matched_text: str = "") -> "ParsedDistance":
        """An answer without a usable distance, with the reason."""
        return cls(value_m=math.nan, spread_m=math.nan, valid=False, reason=reason, matched_text=matched_text)


class _Text:
    """A rewritten string that remembers, per character, the span of the original it came from.

    Rewrites (number words -> digits, markup removal) must not lose where a quantity was in the
    answer, so ``matched_text`` can quote the model's own words.
    """

    def __init__(self, original: str, start: int, end: int) -> None:
        self.original = original
        self.s = original[start:end]
        self.starts = list(range(start, end))
        self.ends = list(range(start + 1, end + 1))

    def replace(self, spans: list[tuple[int, int, str]]) -> None:
        """Replace non-overlapping ``(start, end, new)`` spans (ascending) of the current text."""
        s, starts, ends, pos = [], [], [], 0
        for a, b, new in spans:
            s.append(self.s[pos:a])
            starts += self.starts[pos:a]
            ends += self.ends[pos:a]
            s.append(new)
            starts += [self.starts[a]] * len(new)
            ends += [self.ends[b - 1]] * len(new)
            pos = b
        s.append(self.s[pos:])
        self.s = "".join(s)
        self.starts = starts + self.starts[pos:]
        self.ends = ends + self.ends[pos:]

    def sub(self, pattern: re.Pattern[str], repl: Callable[[re.Match[str]], str]) -> None:
        """Substitute every match of ``pattern`` by ``repl(match)``, keeping the origin of every character."""
        self.replace([(m.start(), m.end(), repl(m)) for m in pattern.finditer(self.s) if m.end() > m.start()])

    def quote(self, start: int, end: int) -> str:
        """The original text behind ``[start, end)`` of the current text."""
        return self.original[self.starts[start]:self.ends[end - 1]].strip()


@dataclass(frozen=True)
class _Atom:
    """A number and, when stated, its unit."""

    start: int
    end: int
    value: float
    unit: str | None
    feet_mark: bool      # unit given as ' (so 5'10 is 5 ft 10 in)


@dataclass(frozen=True)
class _Quantity:
    """A candidate answer: metres when ``unit`` is set, a bare number otherwise."""

    start: int
    end: int
    value: float
    spread: float
    unit: str | None
    negative: bool


def _fmt(value: float) -> str:
    return format(value, ".12g")


def answer_span(text: str) -> tuple[int, int] | None:
    """Where the answer is (rule 1); None when reasoning was cut off before it."""
    tags = list(_ANSWER_TAG.finditer(text))
    if tags:
        return tags[-1].start(1), tags[-1].end(1)
    ends = list(_THINK_END.finditer(text))
    if ends:
        return ends[-1].end(), len(text)
    if _THINK_START.search(text):
        return None
    markers = list(_ANSWER_MARKER.finditer(text))
    return (markers[-1].end(), len(text)) if markers else (0, len(text))


def _read_number_words(s: str, words: list[re.Match[str]], i: int) -> tuple[float, int]:
    """Value of the number-word run starting at ``words[i]`` and the index after its last word."""
    total, current, decimals = 0, 0, ""
    prev: str | None = None
    j = i
    while j < len(words):
        if j > i and not _JOINER.fullmatch(s[words[j - 1].end():words[j].start()]):
            break
        w = words[j].group().lower()
        nxt = words[j + 1].group().lower() if j + 1 < len(words) else ""
        if w in _SMALL and prev not in ("small", "teen") and not (prev == "tens" and not 0 < _SMALL[w] < 10):
            current += _SMALL[w]
            prev = "teen" if _SMALL[w] >= 10 else "small"
        elif w in _TENS and prev not in ("small", "teen", "tens"):
            current += _TENS[w]
            prev = "tens"
        elif w == "hundred" and prev in ("small", "teen"):
            current *= 100
            prev = "hundred"
        elif w == "thousand" and prev not in (None, "thousand", "and"):
            total, current, prev = total + current * 1000, 0, "thousand"
        elif w == "and" and prev in ("hundred", "thousand") and (nxt in _TENS or _SMALL.get(nxt, 0) > 0):
            prev = "and"
        elif w == "point" and prev not in (None, "and") and _SMALL.get(nxt, 10) < 10:
            while j + 1 < len(words) and _SMALL.get(words[j + 1].group().lower(), 10) < 10:
                j += 1
                decimals += str(_SMALL[words[j].group().lower()])
            j += 1
            break
        else:
            break
        j += 1
    if prev == "and":  # "hundred and" with nothing after: leave the "and" to the text
        j -= 1
    return total + current + (float("0." + decimals) if decimals else 0.0), j


def _number_words_to_digits(text: _Text) -> None:
    text.sub(_A_SCALE, lambda m: f"one {m[1]}")
    words = list(_WORD.finditer(text.s))
    spans, i = [], 0
    while i < len(words):
        if words[i].group().lower() in _SMALL or words[i].group().lower() in _TENS:
            value, j = _read_number_words(text.s, words, i)
            spans.append((words[i].start(), words[j - 1].end(), _fmt(value)))
            i = j
        else:
            i += 1
    text.replace(spans)


def _atoms(s: str) -> list[_Atom]:
    atoms = []
    for m in _NUMBER.finditer(s):
        raw = m["num"]
        if "," in raw:
            thousands = re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", raw)
            raw = raw.replace(",", "") if thousands else raw.replace(",", ".")
        value = float(raw)
        if m["den"] or m["fd"]:
            den = float(m["den"] or m["fd"])
            if den == 0:
                continue
            value = value / den if m["den"] else value + float(m["fn"]) / den
        if m["sign"]:
            value = -value
        # A number in quotes ("2") has no inch mark after it; the ' of 3'4" is a feet mark, not a quote.
        before = s[max(0, m.start() - 2):m.start()]
        quoted = before[-1:] == '"' or (before[-1:] == "'" and not before[:1].isdigit())
        unit, end, feet_mark = None, m.end(), False
        if not quoted and (mark := _FEET_MARK.match(s, end)):
            unit, end, feet_mark = "ft", mark.end(), True
        elif not quoted and (mark := _INCH_MARK.match(s, end)):
            unit, end = "in", mark.end()
        elif (u := _UNIT.match(s, end)) and (u["unit"].lower() != "in" or _INCH_FOLLOW.match(s, u.end())):
            unit, end = _ALIAS_TO_UNIT[u["unit"].lower()], u.end()
        atoms.append(_Atom(m.start(), end, value, unit, feet_mark))
    return atoms


def _quantities(s: str, atoms: list[_Atom]) -> list[_Quantity]:
    """Group atoms into ranges, ± values, compounds and single values (rule 4), in text order."""
    out, i = [], 0
    while i < len(atoms):
        a = atoms[i]
        b = atoms[i + 1] if i + 1 < len(atoms) else None
        gap = s[a.end:b.start] if b is not None else ""
        negative = a.value < 0 or (b is not None and b.value < 0)
        if b is not None and (b.unit is not None or a.unit is None) and (
                _RANGE_SEP.fullmatch(gap) or (_AND_SEP.fullmatch(gap) and _BETWEEN.search(s[:a.start]))):
            scale_a = METRES_PER_UNIT[a.unit or b.unit] if b.unit else 1.0
            scale_b = METRES_PER_UNIT[b.unit] if b.unit else 1.0
            lo, hi = a.value * scale_a, b.value * scale_b
            out.append(_Quantity(a.start, b.end, (lo + hi) / 2, abs(hi - lo) / 2, b.unit, negative))
            i += 2
        elif b is not None and _PLUS_MINUS.fullmatch(gap) and (b.unit is not None or a.unit is None):
            scale_a = METRES_PER_UNIT[a.unit or b.unit] if b.unit else 1.0
            scale_b = METRES_PER_UNIT[b.unit] if b.unit else 1.0
            out.append(_Quantity(a.start, b.end, a.value * scale_a, abs(b.value) * scale_b, a.unit or b.unit,
                                 a.value < 0))
            i += 2
        elif b is not None and a.unit is not None and _COMPOUND_SEP.fullmatch(gap) and (
                (a.unit, b.unit) in _COMPOUNDS or (a.feet_mark and b.unit is None and gap == "")):
            value = a.value * METRES_PER_UNIT[a.unit] + b.value * METRES_PER_UNIT[b.unit or "in"]
            out.append(_Quantity(a.start, b.end, value, 0.0, a.unit, negative))
            i += 2
        else:
            scale = METRES_PER_UNIT[a.unit] if a.unit else 1.0
            out.append(_Quantity(a.start, a.end, a.value * scale, 0.0, a.unit, a.value < 0))
            i += 1
    return out


def _contact(s: str) -> re.Match[str] | None:
    for m in _CONTACT.finditer(s):
        if not _NEGATED.search(s[:m.start()]):
            return m
    return None


def parse_answer(text: str, default_unit: str | None = None) -> ParsedDistance:
    """Read the distance an answer states, in metres (the rules are in the module docstring).

    Args:
        text: the answer, as the model wrote it (reasoning tags and markdown included).
        default_unit: unit of a bare number ("1.2"), a key of :data:`METRES_PER_UNIT`; None rejects
            bare numbers.

    Returns:
        The parsed distance; invalid, with a reason, when the text states none.

    Raises:
        ConfigError: ``default_unit`` is not a known unit.

    Example:
        >>> parse_answer("<think>The can is 10 cm wide...</think><answer>About **1.2 meters**.</answer>")
        ParsedDistance(value_m=1.2, spread_m=0.0, valid=True, reason=None, matched_text='1.2 meters', unit='m')
        >>> p = parse_answer("between two and three feet")
        >>> round(p.value_m, 3), round(p.spread_m, 3), p.matched_text
        (0.762, 0.152, 'two and three feet')
        >>> parse_answer("They are touching.").value_m
        0.0
        >>> parse_answer("0.5").reason
        'a number but no unit (and no default unit)'
        >>> parse_answer("0.5", default_unit="m").value_m
        0.5
    """
    if default_unit is not None and default_unit not in METRES_PER_UNIT:
        raise ConfigError(f"default unit {default_unit!r} is not one of {list(METRES_PER_UNIT)}")
    span = answer_span(text)
    if span is None:
        return ParsedDistance.invalid("reasoning cut off before the answer (<think> never closed)")
    t = _Text(text, *span)
    t.sub(_ASCII_RE, lambda m: _ASCII[m[0]])
    t.sub(_LATEX_APPROX, lambda m: "~")
    t.sub(_MARKUP, lambda m: " " if m[0].startswith("\\") or m[0] in "{}" else "")
    if not t.s.strip():
        return ParsedDistance.invalid("empty answer")
    _number_words_to_digits(t)
    for pattern, repl in _IDIOMS:
        t.sub(pattern, repl)
    quantities = _quantities(t.s, _atoms(t.s))
    chosen = next((q for q in quantities if q.unit is not None), None)
    if chosen is None:
        contact = _contact(t.s)
        if contact is not None:
            return ParsedDistance(0.0, 0.0, True, None, t.quote(contact.start(), contact.end()), None)
        if not quantities:
            return ParsedDistance.invalid("no number in the answer")
        if default_unit is None:
            return ParsedDistance.invalid("a number but no unit (and no default unit)",
                                          t.quote(quantities[0].start, quantities[0].end))
        bare = quantities[0]
        scale = METRES_PER_UNIT[default_unit]
        chosen = _Quantity(bare.start, bare.end, bare.value * scale, bare.spread * scale, default_unit, bare.negative)
    matched = t.quote(chosen.start, chosen.end)
    if chosen.negative:
        return ParsedDistance.invalid(f"negative distance ({matched})", matched)
    return ParsedDistance(value_m=chosen.value, spread_m=chosen.spread, valid=True, reason=None,
                          matched_text=matched, unit=chosen.unit)
