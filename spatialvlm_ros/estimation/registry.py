"""The estimator backends by name (``estimator.backend``): the one place they are registered.

A plug-in backend registers with ``@ESTIMATORS.register("name")`` on a factory taking the
:class:`~spatialvlm_ros.config.EstimatorConfig`.
"""

from __future__ import annotations

import json
import subprocess
import sys

from spatialvlm_ros.config import EstimatorConfig
from spatialvlm_ros.config.schema import to_flat
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.estimation.base import DistanceEstimator, EstimatorFactory
from spatialvlm_ros.estimation.geometric import GeometricEstimator
from spatialvlm_ros.estimation.vlm import VLMDistanceEstimator
from spatialvlm_ros.registry import Registry

ESTIMATORS: Registry[EstimatorFactory] = Registry("estimator.backend")
ESTIMATORS.register("geometric")(GeometricEstimator)
ESTIMATORS.register("vlm")(VLMDistanceEstimator.from_estimator_config)

#: What import torch / transformers and load weights: a build of these is tried in a child process first
#: (:func:`preflight_estimator`). Plug-in backends are built in-process only.
MODEL_GROUNDINGS = frozenset({"open_vocab"})
MODEL_VLM_BACKENDS = frozenset({"compact", "transformers"})
PREFLIGHT_TIMEOUT_S = 600.0     # a first download of a large checkpoint can take minutes


def build_estimator(config: EstimatorConfig) -> DistanceEstimator:
    """Build the backend ``config.backend`` names.

    Example:
        >>> build_estimator(EstimatorConfig()).name
        'geometric'
        >>> build_estimator(EstimatorConfig(backend="magic"))
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: estimator.backend: unknown 'magic'; registered: geometric, vlm
    """
    return ESTIMATORS.create(config.backend, config)


def loads_models(config: EstimatorConfig) -> bool:
    """Whether building ``config`` imports torch / transformers and loads model weights (seconds, hundreds of MB).

    Example:
        >>> loads_models(EstimatorConfig()), loads_models(EstimatorConfig(grounding="open_vocab"))
        (False, True)
    """
    if config.backend == "geometric":
        return config.grounding in MODEL_GROUNDINGS or config.monocular_depth
    if config.backend == "vlm":
        return config.vlm.backend in MODEL_VLM_BACKENDS
    return False


def build_error(err: Exception) -> str:
    """Why a build failed, as a swap refusal says it: a config error's own words, else the exception's type too."""
    return str(err) if isinstance(err, ConfigError) else f"{type(err).__name__}: {err}"


def preflight_estimator(config: EstimatorConfig, timeout_s: float = PREFLIGHT_TIMEOUT_S) -> str:
    """Build ``config``'s estimator in a child process and drop it: "" when it builds, else why it does not.

    A running node tries a model-loading swap here first: a build that cannot succeed (no checkpoint offline,
    a bad weights file) then never imports torch into the serving process, whose imports hold the GIL for
    whole seconds (frames dropped) and whose libraries stay resident after the refusal.
    """
    command = [sys.executable, "-m", "spatialvlm_ros.estimation.preflight"]
    try:
        done = subprocess.run(command, input=json.dumps(to_flat(config)), capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return f"TimeoutError: the estimator did not build within {timeout_s:.0f} s (tried in a child process)"
    except OSError as err:
        return f"{type(err).__name__}: cannot start the build check {command}: {err}"
    if done.returncode == 0:
        return ""
    lines = done.stdout.strip().splitlines()
    try:
        return str(json.loads(lines[-1])["error"])
    except (IndexError, ValueError, KeyError, TypeError):     # it died before it could say why (a crash, a kill)
        return f"the build check exited with {done.returncode}: {done.stderr.strip()[-500:]}"
