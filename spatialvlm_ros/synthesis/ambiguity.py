"""Ambiguity removal (paper step 5): background regions out, near-duplicate captions told apart or dropped.

Captions are compared by the cosine of their text embeddings, from the
:class:`~spatialvlm_ros.perception.experts.TextEmbedder` that ``experts.embedder`` names. Captions
whose similarity reaches the threshold form a group (transitively): a lone caption is used as is, a
pair gets a clause saying where each lies in the image, larger groups are dropped entirely, since no
short clause tells three look-alikes apart reliably.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialvlm_ros.perception.experts import TextEmbedder

#: Clauses for the two members of a near-duplicate pair, by the image axis that separates them more.
CLAUSES = {"u": ("that's more to the left of the image", "that's more to the right of the image"),
           "v": ("that's more to the top of the image", "that's more to the bottom of the image")}


@dataclass(frozen=True)
class Disambiguation:
    """Result of :func:`disambiguate`.

    Attributes:
        references: per input caption, how questions name it (``"the red can"``), or None if dropped.
        dropped: indices of dropped captions (background or in a group of more than two).
    """

    references: tuple[str | None, ...]
    dropped: tuple[int, ...]


def is_background(caption: str, background: tuple[str, ...]) -> bool:
    """Whether the caption's head noun (its last word) names scenery such as sky or floor.

    Example:
        >>> is_background("blue sky", ("sky", "floor")), is_background("sky blue can", ("sky",))
        (True, False)
    """
    words = caption.lower().split()
    return bool(words) and words[-1] in background


def disambiguate(captions: list[str], pixel_centres: np.ndarray, embedder: TextEmbedder,
                 similarity_threshold: float, background: tuple[str, ...]) -> Disambiguation:
    """Name each caption unambiguously, or drop it.

    Args:
        captions: one per region, no article.
        pixel_centres: (N, 2) mean (u, v) pixel of each region's mask.
        embedder: caption embeddings.
        similarity_threshold: cosine at or above which two captions are near-duplicates.
        background: head nouns of scenery regions, always dropped.

    Returns:
        References and dropped indices.

    Example:
        >>> from spatialvlm_ros.perception.offline import CharNgramEmbedder
        >>> d = disambiguate(["can", "can", "red ball", "sky"], np.array([[50, 9], [10, 11], [0, 0], [5, 5]]),
        ...                  CharNgramEmbedder(), 0.75, ("sky",))
        >>> d.references
        ("the can that's more to the right of the image", "the can that's more to the left of the image", \
'the red ball', None)
    """
    keep = [i for i, c in enumerate(captions) if not is_background(c, background)]
    references: list[str | None] = [None] * len(captions)
    emb = embedder.embed([captions[i] for i in keep])
    similar = emb @ emb.T >= similarity_threshold
    # Connected components of the similarity graph (tiny: tens of captions per image).
    group = list(range(len(keep)))
    for i, j in zip(*np.nonzero(np.triu(similar, k=1))):
        gi, gj = group[i], group[j]
        group = [gi if g == gj else g for g in group]
    for g in set(group):
        members = [keep[k] for k, gk in enumerate(group) if gk == g]
        if len(members) == 1:
            references[members[0]] = f"the {captions[members[0]]}"
        elif len(members) == 2:
            a, b = members
            delta = np.asarray(pixel_centres[b], float) - np.asarray(pixel_centres[a], float)
            axis = 0 if abs(delta[0]) >= abs(delta[1]) else 1
            first, second = CLAUSES["uv"[axis]]
            low, high = (a, b) if delta[axis] > 0 else (b, a)
            references[low] = f"the {captions[low]} {first}"
            references[high] = f"the {captions[high]} {second}"
    return Disambiguation(references=tuple(references),
                          dropped=tuple(i for i, r in enumerate(references) if r is None))
