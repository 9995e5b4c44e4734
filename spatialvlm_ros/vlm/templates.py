"""Question and answer phrasings of the 43 question types: data only, no logic.

The data engine (:mod:`spatialvlm_ros.synthesis.questions`) writes its questions and answers with
them; the VLM side asks in them (:mod:`~spatialvlm_ros.vlm.prompts`) and reads labels back with
their relation phrases. They live here, on the models floor, so that both import them downwards.

Placeholders: ``{A}`` / ``{B}`` the objects' references, ``{X}`` / ``{Y}`` the chosen and the other
object (choices), ``{rel}`` a relation phrase, ``{rels}`` an either-or phrase, ``{cmp}`` a comparative,
``{short}`` a one-word relation, ``{more}`` / ``{less}`` how much-more phrases, ``{value}`` a rounded
distance. Answer lists are ordered most concise first: :mod:`spatialvlm_ros.synthesis.questions`
draws them with weights that decay along the list (the paper's bias to concise answers).

Relation phrases are per relation; families combine them with shared frames, so every type has at
least 10 distinct question phrasings and 5 answer phrasings (checked by the tests).
"""

from __future__ import annotations

#: Per relation: predicate phrases ("Is A {rel} B?"), comparatives ("Which is {cmp}?"), a one-word form,
#: and "how much {more} is A than B" phrases (position relations only).
RELATION_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "left": {"rel": ("to the left of", "on the left side of", "left of"),
             "cmp": ("more to the left", "further to the left", "further left"), "short": ("left",),
             "more": ("more to the left", "further to the left")},
    "right": {"rel": ("to the right of", "on the right side of", "right of"),
              "cmp": ("more to the right", "further to the right", "further right"), "short": ("right",),
              "more": ("more to the right", "further to the right")},
    "above": {"rel": ("above", "higher than", "positioned higher than"),
              "cmp": ("higher", "higher up", "further up"), "short": ("above",),
              "more": ("higher", "further up")},
    "below": {"rel": ("below", "lower than", "positioned lower than"),
              "cmp": ("lower", "lower down", "further down"), "short": ("below",),
              "more": ("lower", "further down")},
    "behind": {"rel": ("behind", "further back than", "deeper in the scene than"),
               "cmp": ("further back", "more to the back", "deeper in the scene"), "short": ("behind",),
               "more": ("further back", "deeper into the scene")},
    "front": {"rel": ("in front of", "further to the front than", "closer to the viewer than"),
              "cmp": ("further to the front", "more to the front", "closer to the viewer"), "short": ("in front",),
              "more": ("further to the front", "closer to the viewer")},
    "tall": {"rel": ("taller than", "greater in height than", "of larger height than"),
             "cmp": ("taller", "greater in height", "of larger height"), "short": ("taller",)},
    "short": {"rel": ("shorter than", "smaller in height than", "of lesser height than"),
              "cmp": ("shorter", "smaller in height", "of lesser height"), "short": ("shorter",)},
    "wide": {"rel": ("wider than", "broader than", "larger in width than"),
             "cmp": ("wider", "broader", "larger in width"), "short": ("wider",)},
    "thin": {"rel": ("thinner than", "narrower than", "smaller in width than"),
             "cmp": ("thinner", "narrower", "smaller in width"), "short": ("thinner",)},
    "big": {"rel": ("bigger than", "larger than", "greater in size than"),
            "cmp": ("bigger", "larger", "greater in size"), "short": ("bigger",)},
    "small": {"rel": ("smaller than", "tinier than", "more compact than"),
              "cmp": ("smaller", "tinier", "more compact"), "short": ("smaller",)},
}

#: Either-or phrases of the six classify types ("Is A {rels} B?").
CLASSIFY_WORDS: dict[str, tuple[str, ...]] = {
    "left_right": ("to the left or to the right of", "on the left or on the right side of", "left or right of"),
    "above_below": ("above or below", "higher or lower than", "positioned higher or lower than"),
    "behind_front": ("behind or in front of", "further back or further to the front than",
                     "further from or closer to the viewer than"),
    "tall_short": ("taller or shorter than", "greater or smaller in height than", "of larger or lesser height than"),
    "wide_thin": ("wider or thinner than", "broader or narrower than", "larger or smaller in width than"),
    "big_small": ("bigger or smaller than", "larger or smaller than", "greater or lesser in size than"),
}

#: Question frames shared by every relation of a family (x 3 relation phrases = 15 phrasings a type).
QUESTION_FRAMES: dict[str, tuple[str, ...]] = {
    "predicate": ("Is {A} {rel} {B}?", "Would you say {A} is {rel} {B}?", "Is it true that {A} is {rel} {B}?",
                  "Can you confirm whether {A} is {rel} {B}?", "Looking at the image, is {A} {rel} {B}?"),
    "choice": ("Which is {cmp}, {A} or {B}?", "Between {A} and {B}, which one is {cmp}?",
               "Which of these two, {A} or {B}, is {cmp}?", "Who is {cmp}, {A} or {B}?",
               "Out of {A} and {B}, which is {cmp}?"),
    "classify": ("Is {A} {rels} {B}?", "Would you say {A} is {rels} {B}?", "Can you tell whether {A} is {rels} {B}?",
                 "Please tell me if {A} is {rels} {B}.", "Looking at the image, is {A} {rels} {B}?"),
    "difference": ("How much {more} is {A} than {B}?", "By how much is {A} {more} than {B}?",
                   "How far {more} is {A} compared with {B}?", "What is the difference: how much {more} is {A} "
                   "than {B}?", "Compared with {B}, how much {more} is {A}?"),
}

#: Answer frames of the qualitative families and the differences, most concise first.
ANSWER_FRAMES: dict[str, tuple[str, ...]] = {
    "predicate_yes": ("Yes.", "Yes, {A} is {rel} {B}.", "Correct, {A} is {rel} {B}.", "Indeed, {A} is {rel} {B}.",
                      "That's right: {A} is {rel} {B}."),
    "predicate_no": ("No.", "No, {A} is not {rel} {B}.", "No, {A} is {opp_rel} {B}.",
                     "Incorrect, {A} is not {rel} {B}.", "Not really: {A} is {opp_rel} {B}."),
    "choice": ("{X}.", "{X} is {cmp}.", "It is {X}.", "{X} is {cmp} than {Y}.", "Out of the two, {X} is {cmp}."),
    "classify": ("{short}.", "{A} is {rel} {B}.", "It is {rel} {B}.", "I'd say {A} is {rel} {B}.",
                 "From what I see, {A} is {rel} {B}."),
    "difference_more": ("{value}.", "{A} is {value} {more} than {B}.", "About {value}.", "By {value}.",
                        "{A} is {more} than {B} by {value}."),
    "difference_less": ("{A} is not {more} than {B}; it is {value} {less}.",
                        "Actually, {A} is {value} {less} than {B}.", "None: {A} is {value} {less} than {B}.",
                        "{A} is {less} than {B} by {value}.", "It isn't; {A} is {value} {less}."),
}

#: The seven quantity types: full question phrasings (>= 10) and answers (>= 5, most concise first).
QUANTITY_QUESTIONS: dict[str, tuple[str, ...]] = {
    "distance": ("What is the distance between {A} and {B}?", "How far apart are {A} and {B}?",
                 "How far is {A} from {B}?", "How far away is {B} from {A}?",
                 "What is the distance from {A} to {B}?", "Can you measure the distance between {A} and {B}?",
                 "How much distance is there between {A} and {B}?", "Estimate the distance between {A} and {B}.",
                 "Tell me how far {A} is from {B}.", "What is the centre-to-centre distance between {A} and {B}?"),
    "gap": ("What is the gap between {A} and {B}?", "How much space is there between {A} and {B}?",
            "How wide is the gap between {A} and {B}?", "What is the clearance between {A} and {B}?",
            "How close do {A} and {B} come to each other?",
            "What is the shortest distance between the surfaces of {A} and {B}?",
            "How much free space separates {A} from {B}?", "How big is the space between {A} and {B}?",
            "What is the distance between the nearest points of {A} and {B}?",
            "How far apart are the edges of {A} and {B}?"),
    "height": ("How tall is {A}?", "What is the height of {A}?", "How high is {A} from bottom to top?",
               "Measure the height of {A}.", "Tell me the height of {A}.", "What height does {A} have?",
               "How tall would you say {A} is?", "Can you estimate the height of {A}?",
               "How big is {A} vertically?", "What is the vertical size of {A}?"),
    "width": ("How wide is {A}?", "What is the width of {A}?", "How broad is {A}?", "Measure the width of {A}.",
              "Tell me the width of {A}.", "What width does {A} have?", "How wide would you say {A} is?",
              "Can you estimate the width of {A}?", "How big is {A} across?", "What is the horizontal size of {A}?"),
    "elevation": ("How high above the ground plane is {A}?", "What is the elevation of {A}?",
                  "How far above the supporting surface is {A}?", "How high off the floor or table is {A}?",
                  "At what height above the ground plane is {A}?", "How much higher than the supporting surface "
                  "is the bottom of {A}?", "Tell me how high {A} is above the floor or table.",
                  "What is the height of {A} above the ground plane?", "How elevated is {A}?",
                  "Can you estimate how high {A} is above the supporting surface?"),
    "vertical_distance": ("What is the vertical distance between {A} and {B}?",
                          "How far apart are {A} and {B} vertically?", "What is the height difference between "
                          "{A} and {B}?", "How much higher or lower is {A} than {B}?",
                          "Measure the vertical distance between {A} and {B}.",
                          "Tell me the vertical distance from {A} to {B}.",
                          "How far is {A} from {B} in the vertical direction?",
                          "By how much do the heights of {A} and {B} differ?",
                          "Can you estimate the vertical gap between the centres of {A} and {B}?",
                          "How big is the vertical offset between {A} and {B}?"),
    "horizontal_distance": ("What is the horizontal distance between {A} and {B}?",
                            "How far apart are {A} and {B} horizontally?",
                            "How far is {A} from {B} along the ground plane?",
                            "Measure the horizontal distance between {A} and {B}.",
                            "Tell me the horizontal distance from {A} to {B}.",
                            "How far is {A} from {B} in the horizontal direction?",
                            "Ignoring height, how far apart are {A} and {B}?",
                            "Can you estimate the horizontal distance between {A} and {B}?",
                            "What is the distance between {A} and {B} seen from above?",
                            "How big is the horizontal offset between {A} and {B}?"),
}

QUANTITY_ANSWERS: dict[str, tuple[str, ...]] = {
    "distance": ("{value}.", "{A} and {B} are {value} apart.", "About {value}.",
                 "The distance between {A} and {B} is {value}.", "{A} is {value} away from {B}."),
    "gap": ("{value}.", "The gap is {value}.", "About {value}.", "There is {value} of space between {A} and {B}.",
            "{A} and {B} are separated by a gap of {value}."),
    "height": ("{value}.", "{A} is {value} tall.", "About {value}.", "The height of {A} is {value}.",
               "It is {value} tall."),
    "width": ("{value}.", "{A} is {value} wide.", "About {value}.", "The width of {A} is {value}.",
              "It is {value} wide."),
    "elevation": ("{value}.", "{A} is {value} above the ground plane.", "About {value}.",
                  "The elevation of {A} is {value}.", "It sits {value} above the supporting surface."),
    "vertical_distance": ("{value}.", "{A} and {B} are {value} apart vertically.", "About {value}.",
                          "The vertical distance between {A} and {B} is {value}.",
                          "Their heights differ by {value}."),
    "horizontal_distance": ("{value}.", "{A} and {B} are {value} apart horizontally.", "About {value}.",
                            "The horizontal distance between {A} and {B} is {value}.",
                            "Seen from above, they are {value} apart."),
}
