"""Distance questions put to a spatial VLM: templates as data, drawn with a seeded generator.

The templates are the data engine's own distance and gap questions
(:data:`spatialvlm_ros.vlm.templates.QUANTITY_QUESTIONS`, which the data engine phrases with too): a
model fine-tuned on this package's synthetic data is asked in the phrasings it was trained on, and
there is one list to maintain. The first template of each kind is the paper's robot question (Fig. 5: "What is the
distance between the yellow gripper and the coke can?") for centres, "What is the gap between A and
B?" for surfaces; it is the one asked when no generator is given.
"""

from __future__ import annotations

import re

import numpy as np

from spatialvlm_ros.types import DistanceKind, Pair
from spatialvlm_ros.vlm.templates import QUANTITY_QUESTIONS

#: Question templates per distance kind; ``{A}`` is the gripper's reference, ``{B}`` the target's.
DISTANCE_QUESTIONS: dict[DistanceKind, tuple[str, ...]] = {
    DistanceKind.CENTRE: QUANTITY_QUESTIONS["distance"],
    DistanceKind.GAP: QUANTITY_QUESTIONS["gap"],
}

_DETERMINER = re.compile(r"^(?:the|a|an|this|that|my|your|its|our)\s", re.IGNORECASE)


def reference(phrase: str) -> str:
    """How a question names an object: ``"red can"`` -> ``"the red can"``; a phrase with a determiner stays.

    Example:
        >>> reference("yellow gripper"), reference("the left cup"), reference("  a  bowl ")
        ('the yellow gripper', 'the left cup', 'a bowl')
    """
    phrase = " ".join(phrase.split())
    return phrase if _DETERMINER.match(phrase) else f"the {phrase}"


def distance_question(pair: Pair, kind: DistanceKind | str, rng: np.random.Generator | None = None) -> str:
    """The question asking for ``kind`` distance between the pair's gripper and target.

    Args:
        pair: the gripper (``{A}``) and the target (``{B}``).
        kind: gap (surface to surface) or centre distance.
        rng: draws the phrasing uniformly from :data:`DISTANCE_QUESTIONS`; None asks the first one.

    Returns:
        The question text.

    Example:
        >>> pair = Pair("yellow gripper", "red can")
        >>> distance_question(pair, DistanceKind.CENTRE)
        'What is the distance between the yellow gripper and the red can?'
        >>> distance_question(pair, "gap")
        'What is the gap between the yellow gripper and the red can?'
        >>> rng = np.random.default_rng(3)
        >>> distance_question(pair, "gap", rng) in {t.format(A="the yellow gripper", B="the red can")
        ...                                         for t in DISTANCE_QUESTIONS[DistanceKind.GAP]}
        True
    """
    templates = DISTANCE_QUESTIONS[DistanceKind(kind)]
    template = templates[0] if rng is None else templates[int(rng.integers(len(templates)))]
    return template.format(A=reference(pair.gripper), B=reference(pair.target))
