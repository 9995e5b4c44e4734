"""Qualitative answers -> labels: yes / no, which of two objects, which of two opposite relations.

The companion of :mod:`~spatialvlm_ros.vlm.parsing`, which reads distances: both read only the part of
the text that is the answer (:func:`~spatialvlm_ros.vlm.parsing.answer_span`, here :func:`final_answer`),
so a label and a number are read from the same span. The objects' references are blanked out first
(their words, like "the left cup", are not answers). Relation phrases are the data engine's
(:data:`~spatialvlm_ros.vlm.templates.RELATION_WORDS`) plus one-word forms a model may use. An answer
that hedges ("I don't know", "can't tell") gives no label (:func:`hedges`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

from spatialvlm_ros.vlm.parsing import answer_span
from spatialvlm_ros.vlm.templates import RELATION_WORDS

_YES = r"yes|yeah|yep|correct|indeed|true|affirmative|that'?s right|that is right"
_NO = r"no|nope|not|incorrect|false|wrong|\w+n't"
_YES_NO = re.compile(rf"\b(?:(?P<yes>{_YES})|(?P<no>{_NO}))\b")
_NEGATED = re.compile(r"(?:\bnot|n't)\s+$")
#: Hedges: an answer that says it cannot tell gives no label, whatever else it says ("I don't know" is no "no").
_JUDGE = r"(?:tell|say|determine|judge|estimate|know|measure|see)"
_UNSURE = re.compile(
    r"\b(?:(?:do|does|did)n'?t know|(?:do|does|did) not know|not (?:sure|certain)|unsure|uncertain|unclear|no idea|"
    rf"(?:can(?:no|')?t|can not|could ?n'?t|could not|(?:am |is |are )?(?:unable|not able) to) "
    rf"(?:really |reliably )?{_JUDGE}|"
    r"cannot be (?:determined|told|estimated|measured)|can't be (?:determined|told|estimated|measured)|"
    rf"(?:impossible|not possible|hard|difficult) to {_JUDGE}|no way to {_JUDGE})\b")
_DETERMINER = re.compile(r"^(?:the|a|an)\s+")
#: Words that tell two object references apart no better than chance.
_FILLER = frozenset({"the", "a", "an", "that", "that's", "is", "more", "to", "of", "image", "in", "on", "one", "and"})
#: One-word forms a model may use beside the templates' phrases (the data engine's own phrasings come from
#: :data:`~spatialvlm_ros.vlm.templates.RELATION_WORDS`).
_EXTRA_WORDS = {"left": ("left",), "right": ("right",), "above": ("above", "higher", "over", "on top of"),
                "below": ("below", "lower", "under", "beneath", "underneath"), "behind": ("behind", "back", "farther"),
                "front": ("front", "closer", "nearer"), "tall": ("taller",), "short": ("shorter",),
                "wide": ("wider", "broader"), "thin": ("thinner", "narrower"), "big": ("bigger", "larger"),
                "small": ("smaller",)}


def _normalise(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").lower()
    return " ".join(re.sub(r"[*_`]", "", text).split())


def final_answer(text: str) -> str:
    """The part of ``text`` that is the answer (parse_answer's rule 1), normalised; "" when reasoning was cut off.

    Example:
        >>> final_answer("<think>Left? No, it is right.</think> **Yes**, it is.")
        'yes, it is.'
    """
    span = answer_span(text)
    return "" if span is None else _normalise(text[span[0]:span[1]])


def hedges(text: str) -> bool:
    """Whether the answer says it cannot tell ("I don't know" is no "no"): then it gives no label.

    Recognised: "don't know", "not sure", "unsure", "uncertain", "unclear", "no idea"; "can't / cannot /
    unable to / not able to" + tell, say, determine, judge, estimate, know, measure or see; "cannot be
    determined"; "impossible / not possible / hard / difficult / no way to" + the same verbs. Only the
    answer's own span is read (:func:`final_answer`): a hedge inside ``<think>`` does not count.

    Example:
        >>> hedges("I can't tell from this image."), hedges("No, it is not.")
        (True, False)
        >>> [hedges(t) for t in ("It is impossible to say.", "I'm unable to determine the distance.",
        ...                      "It cannot be determined from this image.", "About 30 cm.")]
        [True, True, True, False]
    """
    return _UNSURE.search(final_answer(text)) is not None


def _core(reference: str) -> str:
    return _DETERMINER.sub("", _normalise(reference))


def _blank_references(text: str, references: Sequence[str]) -> str:
    """``text`` with the object references blanked out: their words ("the small ball") are not answers."""
    for core in sorted({_core(r) for r in references if _core(r)}, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(core)}\b", " ", text)
    return text


def yes_no(text: str, references: Sequence[str] = ()) -> str | None:
    """``"yes"`` or ``"no"``: the earlier of an affirmation and a negation in the answer; None if neither.

    Args:
        text: the model's answer.
        references: the objects' references, blanked out first.

    Example:
        >>> [yes_no(t) for t in ("Yes.", "No, it is not.", "Incorrect.", "That's right: it is.", "Maybe.")]
        ['yes', 'no', 'no', 'yes', None]
    """
    m = _YES_NO.search(_blank_references(final_answer(text), references))
    if m is None:
        return None
    return "yes" if m["yes"] else "no"


@lru_cache(maxsize=None)
def _relation_pattern(relations: tuple[str, ...]) -> tuple[re.Pattern[str], dict[str, str]]:
    phrase_to_relation = {}
    for relation in relations:
        words = RELATION_WORDS[relation]
        template_phrases = [p for key in ("rel", "cmp", "short", "more") for p in words.get(key, ())]
        for phrase in (*_EXTRA_WORDS[relation], *template_phrases):
            phrase_to_relation[phrase] = relation
    # Longest first: at one position the alternation takes the first alternative that matches.
    alternatives = sorted(phrase_to_relation, key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(p) for p in alternatives) + r")\b"), phrase_to_relation


def which_relation(text: str, relations: tuple[str, str], references: Sequence[str] = ()) -> str | None:
    """Which of two opposite relations the answer states: the first relation phrase after the references are blanked.

    A phrase right after "not" / "n't" states the other relation ("not taller" = shorter).

    Args:
        text: the model's answer.
        relations: the two candidates, e.g. ``("left", "right")``.
        references: the objects' references (their words, like "the left cup", are not answers).

    Example:
        >>> which_relation("In front.", ("behind", "front"))
        'front'
        >>> which_relation("The can on the left is not taller than the cup.", ("tall", "short"),
        ...                ["the can on the left", "the cup"])
        'short'
    """
    pattern, phrase_to_relation = _relation_pattern(tuple(relations))
    answer = _blank_references(final_answer(text), references)
    m = pattern.search(answer)
    if m is None:
        return None
    relation = phrase_to_relation[m[1]]
    if _NEGATED.search(answer[:m.start()]):
        return relations[1] if relation == relations[0] else relations[0]
    return relation


def which_object(text: str, references: Sequence[str]) -> int | None:
    """Index of the reference the answer names first; None when it names none or they cannot be told apart.

    References are matched without their article, longest first (so "the red can" is not also a
    mention of "the can"). Failing that, the first word that occurs in only one reference decides
    ("the ball" for "the red ball" vs "the blue box").

    Example:
        >>> refs = ["the tin can that's more to the left of the image", "the little red tin can"]
        >>> which_object("It is the little red tin can.", refs), which_object("The tin can on the left.", refs)
        (1, 0)
    """
    answer = final_answer(text)
    cores = [_core(r) for r in references]
    if len(set(cores)) < len(cores):
        return None
    claimed: list[tuple[int, int, int]] = []
    for i in sorted(range(len(cores)), key=lambda j: len(cores[j]), reverse=True):
        for m in re.finditer(rf"\b{re.escape(cores[i])}\b", answer):
            if all(m.end() <= s or m.start() >= e for s, e, _ in claimed):
                claimed.append((m.start(), m.end(), i))
    if claimed:
        return min(claimed)[2]
    word_sets = [set(c.split()) - _FILLER for c in cores]
    unique = {w: i for i, words in enumerate(word_sets) for w in words
              if not any(w in other for j, other in enumerate(word_sets) if j != i)}
    if not unique:
        return None
    m = re.search(r"\b(" + "|".join(re.escape(w) for w in sorted(unique, key=len, reverse=True)) + r")\b", answer)
    return unique[m[1]] if m else None
