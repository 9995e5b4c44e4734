"""Spatial VLMs: ask an image "how far is A from B?" in free text and read the metres back.

* :mod:`~spatialvlm_ros.vlm.base`: the :class:`SpatialVLM` protocol, :class:`VLMAnswer` and errors;
* :mod:`~spatialvlm_ros.vlm.registry`: the backends by name (compact, openai, transformers), :func:`build_vlm`;
* :mod:`~spatialvlm_ros.vlm.parsing`: answer text -> :class:`ParsedDistance` (metres);
* :mod:`~spatialvlm_ros.vlm.prompts`: the distance questions, as data;
* :mod:`~spatialvlm_ros.vlm.server`: the OpenAI-compatible chat-completions backend.
"""

from spatialvlm_ros.vlm.base import SpatialVLM, VLMAnswer, VLMError, VLMTimeoutError
from spatialvlm_ros.vlm.parsing import METRES_PER_UNIT, ParsedDistance, parse_answer
from spatialvlm_ros.vlm.prompts import DISTANCE_QUESTIONS, distance_question
from spatialvlm_ros.vlm.registry import VLM_BACKENDS, build_vlm

__all__ = ["DISTANCE_QUESTIONS", "METRES_PER_UNIT", "VLM_BACKENDS", "ParsedDistance", "SpatialVLM", "VLMAnswer",
           "VLMError", "VLMTimeoutError", "build_vlm", "distance_question", "parse_answer"]
