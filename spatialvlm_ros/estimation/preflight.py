"""Child process of :func:`~spatialvlm_ros.estimation.registry.preflight_estimator`: build, report, exit.

Reads a flat :class:`~spatialvlm_ros.config.EstimatorConfig` (JSON) on stdin; exits 0 when the estimator
builds, else prints why as JSON (``{"error": ...}``) on the last line of stdout and exits 1.
"""

from __future__ import annotations

import json
import sys

from spatialvlm_ros.config import EstimatorConfig
from spatialvlm_ros.config.schema import from_flat
from spatialvlm_ros.estimation.registry import build_error, build_estimator


def main() -> int:
    """Build the estimator stdin describes; 0 when it builds, 1 (the reason on stdout) when it does not."""
    try:
        build_estimator(from_flat(EstimatorConfig, json.loads(sys.stdin.read())))
    except Exception as err:   # noqa: BLE001 - any failure is the answer, reported to the parent
        print(json.dumps({"error": build_error(err)}))   # one line, whatever the message holds
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
