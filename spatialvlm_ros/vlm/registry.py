"""The spatial-VLM backends by name (``estimator.vlm.backend``): the one place they are registered.

Each factory takes the whole :class:`~spatialvlm_ros.config.VLMConfig` and hands its backend that
backend's own section. A backend's module (and torch, for the in-process ones) is imported only when
that backend is built. A plug-in backend registers with ``@VLM_BACKENDS.register("name")``.
"""

from __future__ import annotations

from typing import Callable

from spatialvlm_ros.config import VLMConfig
from spatialvlm_ros.registry import Registry
from spatialvlm_ros.vlm.base import SpatialVLM

VLMFactory = Callable[[VLMConfig], SpatialVLM]
VLM_BACKENDS: Registry[VLMFactory] = Registry("estimator.vlm.backend")


@VLM_BACKENDS.register("compact")
def _compact(config: VLMConfig) -> SpatialVLM:
    from spatialvlm_ros.vlm.compact.backend import CompactVLM
    return CompactVLM.from_config(config.compact)


@VLM_BACKENDS.register("openai")
def _openai(config: VLMConfig) -> SpatialVLM:
    from spatialvlm_ros.vlm.server import OpenAIChatVLM
    return OpenAIChatVLM(config.openai)


@VLM_BACKENDS.register("transformers")
def _transformers(config: VLMConfig) -> SpatialVLM:
    from spatialvlm_ros.vlm.transformers_backend import TransformersVLM
    return TransformersVLM.from_config(config.transformers)


def build_vlm(config: VLMConfig) -> SpatialVLM:
    """Build the backend ``config.backend`` names.

    Example:
        >>> build_vlm(VLMConfig(backend="openai"))
        OpenAIChatVLM(model='remyxai/SpaceQwen2.5-VL-3B-Instruct', endpoint='http://127.0.0.1:8000/v1/chat/completions')
        >>> build_vlm(VLMConfig(backend="gpt"))
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: estimator.vlm.backend: unknown 'gpt'; registered: compact, openai, ...
    """
    return VLM_BACKENDS.create(config.backend, config)
