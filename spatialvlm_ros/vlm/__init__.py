"""Spatial VLMs: ask an image "how far is A from B?" in free text and read the metres back.

Models and backends only; their training is :mod:`spatialvlm_ros.training`, their evaluation
:mod:`spatialvlm_ros.evaluation.vlm_benchmark`, their commands :mod:`spatialvlm_ros.cli.vlm`.

* :mod:`~spatialvlm_ros.vlm.parsing`: answer text -> :class:`ParsedDistance` (metres);
* :mod:`~spatialvlm_ros.vlm.labels`: qualitative answer text -> yes / no, which object, which relation;
* :mod:`~spatialvlm_ros.vlm.templates`: the question and answer phrasings (the data engine's too), as data;
* :mod:`~spatialvlm_ros.vlm.prompts`: the distance questions, as data;
* :mod:`~spatialvlm_ros.vlm.base`: the :class:`SpatialVLM` protocol, :class:`VLMConfig`, the backend
  registry and :class:`VLMDistanceEstimator` (the estimator backend ``"vlm"``);
* :mod:`~spatialvlm_ros.vlm.server`: the OpenAI-compatible chat-completions backend ``"openai"``;
* :mod:`~spatialvlm_ros.vlm.transformers_backend`: a local transformers checkpoint, backend ``"transformers"``;
* :mod:`~spatialvlm_ros.vlm.compact`: the compact in-house model, backend ``"compact"``.
"""

from spatialvlm_ros.vlm.base import (
    VLM_BACKENDS, SpatialVLM, VLMAnswer, VLMConfig, VLMDistanceEstimator, VLMError, VLMTimeoutError, build_vlm,
    register_vlm,
)
from spatialvlm_ros.vlm.parsing import METRES_PER_UNIT, ParsedDistance, parse_answer
from spatialvlm_ros.vlm.prompts import DISTANCE_QUESTIONS, distance_question

__all__ = ["DISTANCE_QUESTIONS", "METRES_PER_UNIT", "VLM_BACKENDS", "ParsedDistance", "SpatialVLM", "VLMAnswer",
           "VLMConfig", "VLMDistanceEstimator", "VLMError", "VLMTimeoutError", "build_vlm", "distance_question",
           "parse_answer", "register_vlm"]
