"""Spatial VLMs: ask an image "how far is A from B?" in free text and read the metres back.

Models and backends only; their training is :mod:`spatialvlm_ros.training`, their evaluation
:mod:`spatialvlm_ros.evaluation.vlm_benchmark`, their commands :mod:`spatialvlm_ros.cli.vlm`, and the
estimator that turns any of them into distances :mod:`spatialvlm_ros.estimation.vlm`.

* :mod:`~spatialvlm_ros.vlm.base`: the :class:`SpatialVLM` protocol, :class:`VLMAnswer` and errors;
* :mod:`~spatialvlm_ros.vlm.registry`: the backends by name, :func:`build_vlm`;
* :mod:`~spatialvlm_ros.vlm.parsing`, :mod:`~spatialvlm_ros.vlm.labels`: answer text -> metres, yes/no and choices;
* :mod:`~spatialvlm_ros.vlm.prompts`, :mod:`~spatialvlm_ros.vlm.templates`: the questions and answers, as data;
* :mod:`~spatialvlm_ros.vlm.server`: an OpenAI-compatible chat-completions server, backend ``"openai"``;
* :mod:`~spatialvlm_ros.vlm.transformers_backend`: a local transformers checkpoint, backend ``"transformers"``;
* :mod:`~spatialvlm_ros.vlm.compact`: the compact in-house model, backend ``"compact"``.
"""

from spatialvlm_ros.vlm.base import SpatialVLM, VLMAnswer, VLMError, VLMTimeoutError
from spatialvlm_ros.vlm.parsing import METRES_PER_UNIT, ParsedDistance, parse_answer
from spatialvlm_ros.vlm.prompts import DISTANCE_QUESTIONS, distance_question
from spatialvlm_ros.vlm.registry import VLM_BACKENDS, build_vlm

__all__ = ["DISTANCE_QUESTIONS", "METRES_PER_UNIT", "VLM_BACKENDS", "ParsedDistance", "SpatialVLM", "VLMAnswer",
           "VLMError", "VLMTimeoutError", "build_vlm", "distance_question", "parse_answer"]
