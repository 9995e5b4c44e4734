"""The compact VLM's tokenizer and the text conventions of its answers: references and numbers as placeholders.

:class:`WordTokenizer` is deterministic and word-level. A text is split into pieces of the form ``" ?word"``,
``" ?number"``, ``" ?<special>"`` or ``" ?symbol"`` (the leading space belongs to the piece, as in GPT-2), so
``decode(encode(text)) == text`` for any text made of known pieces separated by single spaces. The vocabulary
is every piece of the training questions and answers (numbers in answers become ``<num>``) plus the distance
questions of :mod:`~spatialvlm_ros.vlm.prompts`; unknown pieces become ``<unk>``.

The decoder writes an answer's number as ``<num>`` (:func:`mask_numbers`; decoding spells the value head's
estimate in with :func:`fill_numbers`) and the question's two object references as ``<a>`` and ``<b>``
(:func:`mask_references`; :func:`reference_spans` gives the span heads' training targets, decoding copies the
words back with :func:`fill_references`). :func:`prompt_ids` frames a question for the decoder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.perception.colours import SYNONYMS as COLOUR_SYNONYMS
from spatialvlm_ros.perception.offline import NOUN_SYNONYMS
from spatialvlm_ros.vlm.parsing import METRES_PER_UNIT, UNIT_ALIASES

#: Special tokens, always the first ids in this order: padding, unknown, the prompt's frame, the number
#: placeholder, the two referent slots and the relation slot.
SPECIALS = PAD, UNK, BOS, SEP, EOS, NUM, REF_A, REF_B, REL = (
    "<pad>", "<unk>", "<bos>", "<sep>", "<eos>", "<num>", "<a>", "<b>", "<r>")
PAD_ID, UNK_ID, BOS_ID, SEP_ID, EOS_ID, NUM_ID, REF_A_ID, REF_B_ID, REL_ID = range(len(SPECIALS))

_PIECE = re.compile(r" ?(?:<[a-z]+>|[A-Za-z]+|\d+(?:\.\d+)?|[^\sA-Za-z\d])")
_SPACES = re.compile(r"\s+")
_ANSWER_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)")
_UNIT_OF_WORD = {alias: unit for unit, aliases in UNIT_ALIASES.items() for alias in aliases}


@dataclass(frozen=True)
class WordTokenizer:
    """Word-level tokenizer with a fixed vocabulary (see the module docstring for the rules).

    Attributes:
        tokens: the vocabulary in id order, starting with :data:`SPECIALS`.

    Example:
        >>> tok = WordTokenizer.build(["How far is the red can?", "About 20 centimeters."])
        >>> ids = tok.encode("About 20 centimeters.")
        >>> tok.decode(ids)
        'About 20 centimeters.'
        >>> tok.decode(tok.encode("How far is the blue can?"))
        'How far is the<unk> can?'
        >>> tok.decode(tok.encode(mask_numbers("About 20 centimeters.")))
        'About <num> centimeters.'
    """

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokens[:len(SPECIALS)] != SPECIALS or len(set(self.tokens)) != len(self.tokens):
            raise ConfigError(f"tokenizer: the vocabulary must start with {list(SPECIALS)} and have no duplicates")
        # A frozen dataclass: the lookup table is derived, not a field.
        object.__setattr__(self, "_ids", {t: i for i, t in enumerate(self.tokens)})

    @staticmethod
    def pieces(text: str) -> list[str]:
        """Split ``text`` (whitespace runs collapsed to one space, ends stripped) into pieces."""
        return _PIECE.findall(_SPACES.sub(" ", text.strip()))

    @classmethod
    def build(cls, texts: Iterable[str]) -> "WordTokenizer":
        """The vocabulary of every piece in ``texts``, sorted, after the special tokens."""
        found = {p for text in texts for p in cls.pieces(text) if p.strip() not in SPECIALS}
        return cls(SPECIALS + tuple(sorted(found)))

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        """Id of ``token`` (``<unk>``'s when unknown)."""
        return self._ids.get(token, UNK_ID)  # type: ignore[attr-defined]

    def spelling(self, piece: str) -> str:
        """``piece`` as the vocabulary spells it: itself, else lower-cased, else its synonym's spelling.

        A question may say "Red", "gray" or "cube" where the data engine said "red", "grey" and "box" (colour
        synonyms from :mod:`~spatialvlm_ros.perception.colours`, nouns from
        :data:`~spatialvlm_ros.perception.offline.NOUN_SYNONYMS`); each would otherwise read as ``<unk>``.
        Each form is tried with the piece's own leading space first, then the other (a question's first word
        has none, where the engine had it mid-sentence). A piece the vocabulary has none of these for is
        returned unchanged.

        Example:
            >>> tok = WordTokenizer.build(["Is the grey box left of the red can?"])
            >>> tok.spelling(" gray"), tok.spelling(" Red"), tok.spelling("Gray"), tok.spelling(" cube")
            (' grey', ' red', ' grey', ' box')
            >>> tok.spelling(" zebra")
            ' zebra'
        """
        if piece in self._ids:  # type: ignore[attr-defined]
            return piece
        word = piece.strip()
        spaces = (" ", "") if piece.startswith(" ") else ("", " ")
        lower = word.lower()
        # Every form with the piece's own space before any with the other: mid-sentence " Can" is the object
        # " can", not the question's first word "Can".
        for space in spaces:
            for candidate in (word, lower, COLOUR_SYNONYMS.get(lower, lower), NOUN_SYNONYMS.get(lower, lower)):
                if space + candidate in self._ids:  # type: ignore[attr-defined]
                    return space + candidate
        return piece

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (each piece read as :meth:`spelling` gives it), without special tokens."""
        # A special token is one id with or without the space before it.
        return [self.id(p.strip() if p.strip() in SPECIALS else self.spelling(p)) for p in self.pieces(text)]

    def unknown_words(self, text: str) -> list[str]:
        """The pieces of ``text`` the vocabulary has no spelling of (special tokens excepted)."""
        return [p for p in self.pieces(text)
                if p.strip() not in SPECIALS and self.spelling(p) not in self._ids]  # type: ignore[attr-defined]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special tokens are dropped except ``<unk>`` and the placeholders ``<num> <a> <b>``."""
        skip = set(range(len(SPECIALS))) - {UNK_ID, NUM_ID, REF_A_ID, REF_B_ID}
        text = "".join(self.tokens[i] for i in ids if i not in skip)
        # A placeholder is written as a word of its own (a number or a reference replaces it).
        return re.sub(r"(?<=\S)(<num>|<a>|<b>)", r" \1", text).strip()

    def extended(self, words: Iterable[str]) -> "WordTokenizer":
        """This vocabulary with ``words`` it lacks appended (sorted): every old id keeps its token.

        Example:
            >>> tok = WordTokenizer.build(["How far?"])
            >>> bigger = tok.extended([" near", " far"])
            >>> bigger.tokens[:len(tok)] == tok.tokens, bigger.tokens[len(tok):]
            (True, (' near',))
        """
        return WordTokenizer(self.tokens + tuple(sorted(set(words) - set(self.tokens))))

    def save(self, path: Path) -> None:
        """Write the vocabulary as JSON (``{"tokens": [...]}``, id order)."""
        Path(path).write_text(json.dumps({"tokens": list(self.tokens)}, ensure_ascii=False, indent=0) + "\n")

    @classmethod
    def load(cls, path: Path) -> "WordTokenizer":
        """Read a vocabulary written by :meth:`save`.

        Raises:
            ConfigError: unreadable or malformed file.
        """
        try:
            return cls(tuple(json.loads(Path(path).read_text())["tokens"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"compact VLM tokenizer {str(path)!r}: {err}") from err


def mask_numbers(answer: str) -> str:
    """The answer with each number replaced by ``<num>`` (how the decoder writes numbers).

    Example:
        >>> mask_numbers("The red can is 1.5 meters tall.")
        'The red can is <num> meters tall.'
    """
    return _ANSWER_NUMBER.sub(NUM, answer)


def spell_number(value_m: float, unit_word: str | None) -> str:
    """``value_m`` written as a number in the unit ``unit_word`` names (metres when it names none).

    Two significant figures from 1 up to 10 units, whole units above, two decimals below 1 unit.

    Example:
        >>> spell_number(0.234, "centimeters"), spell_number(0.234, "meters"), spell_number(0.9144, "feet")
        ('23', '0.23', '3.0')
    """
    unit = _UNIT_OF_WORD.get((unit_word or "").lower(), "m")
    x = value_m / METRES_PER_UNIT[unit]
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def fill_numbers(text: str, values_m: Sequence[float]) -> str:
    """Replace the ``<num>`` placeholders of a decoded answer by ``values_m``, each in the unit after it.

    A placeholder without a value (none predicted) stays, so the answer parses as "no estimate".

    Example:
        >>> fill_numbers("About <num> centimeters.", [0.2])
        'About 20 centimeters.'
    """
    values = iter(values_m)

    def spell(match: re.Match[str]) -> str:
        value, word = next(values, None), match.group(1)
        if value is None:
            return match.group(0)
        if word and word.lower() in _UNIT_OF_WORD:
            return f"{spell_number(value, word)} {word}"
        return f"{spell_number(value, None)} meters" + (f" {word}" if word else "")

    return re.sub(r"<num>(?: ([A-Za-z]+))?", spell, text)


def mask_references(answer: str, references: Sequence[str], copyable: Sequence[bool] = (True, True)) -> str:
    """The answer with the question's first and second object reference replaced by ``<a>`` and ``<b>``.

    The decoder writes a reference as one placeholder token and decoding copies the words from the
    question (:func:`fill_references`): "which of the two" then costs one token choice instead of copying a
    reference of up to a dozen words token by token. The longer reference is replaced first, so one that
    contains the other is not cut; the first letter matches in either case (a sentence may start with it).
    A reference that is not ``copyable`` (the question lacks it) stays spelled out, whole.

    Example:
        >>> mask_references("The red can is closer than the can on the left.", ["the can on the left", "the red can"])
        '<b> is closer than <a>.'
        >>> mask_references("The can on the left is closer than the can.", ["the can", "the can on the left"],
        ...                 copyable=(True, False))
        'The can on the left is closer than <a>.'
    """
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:   # protected from the shorter reference, restored at the end
        kept.append(match.group(0))
        return f"\0{len(kept) - 1}\0"

    for i in sorted(range(min(2, len(references))), key=lambda j: -len(references[j])):
        ref = references[i].strip()
        if ref:
            pattern = rf"(?<![\w<])[{re.escape(ref[0].upper())}{re.escape(ref[0].lower())}]{re.escape(ref[1:])}(?!\w)"
            answer = re.sub(pattern, (REF_A, REF_B)[i] if copyable[i] else keep, answer)
    return re.sub(r"\0(\d+)\0", lambda m: kept[int(m.group(1))], answer)


def reference_spans(pieces: Sequence[str], references: Sequence[str]) -> list[tuple[int, int] | None]:
    """Where each reference occurs in a question's :meth:`WordTokenizer.pieces`: (first, last) piece index.

    Pieces compare without their space and case. Each reference takes its first occurrence that does not
    overlap one the other reference took (the longer reference picks first); None where it does not occur.

    Example:
        >>> q = WordTokenizer.pieces("Which is closer, the can or the red can?")
        >>> reference_spans(q, ["the red can", "the can"])
        [(7, 9), (4, 5)]
    """
    words = [p.strip().lower() for p in pieces]
    spans: list[tuple[int, int] | None] = [None] * len(references)
    taken: set[int] = set()
    for i in sorted(range(len(references)), key=lambda j: -len(references[j])):
        ref = [p.strip().lower() for p in WordTokenizer.pieces(references[i])]
        for start in range(len(words) - len(ref) + 1) if ref else ():
            span = range(start, start + len(ref))
            if words[start:start + len(ref)] == ref and not taken.intersection(span):
                spans[i] = (start, start + len(ref) - 1)
                taken.update(span)
                break
    return spans


def fill_references(text: str, pieces: Sequence[str], spans: Sequence[tuple[int, int] | None]) -> str:
    """Replace the ``<a>``/``<b>`` placeholders of a decoded answer by the question's words at ``spans``.

    ``pieces`` are the question's :meth:`WordTokenizer.pieces` (so words the vocabulary lacks are copied
    too); the answer's first letter is capitalised. A placeholder without a span stays as it is.

    Example:
        >>> q = WordTokenizer.pieces("Which is closer, the can or the red can?")
        >>> fill_references("<b> is closer than <a>.", q, [(4, 5), (7, 9)])
        'The red can is closer than the can.'
    """
    def copy(match: re.Match[str]) -> str:
        span = spans[0 if match.group(0) == REF_A else 1] if len(spans) >= 2 else None
        return "".join(pieces[span[0]:span[1] + 1]).strip() if span else match.group(0)

    text = re.sub(r"<a>|<b>", copy, text)
    return text[:1].upper() + text[1:]


def prompt_ids(tokenizer: WordTokenizer, question: str) -> list[int]:
    """``[BOS] question [SEP] <a> <b> <r>``: what the decoder reads before the answer.

    A special token typed into the question ("<r>") is read as ``<unk>``: only the frame places specials.

    Example:
        >>> tok = WordTokenizer.build(["How far?"])
        >>> prompt_ids(tok, "How far <r>?") == [BOS_ID, tok.id("How"), tok.id(" far"), UNK_ID, tok.id("?"),
        ...                                     SEP_ID, REF_A_ID, REF_B_ID, REL_ID]
        True
    """
    question_ids = [i if i >= len(SPECIALS) else UNK_ID for i in tokenizer.encode(question)]
    return [BOS_ID, *question_ids, SEP_ID, REF_A_ID, REF_B_ID, REL_ID]
