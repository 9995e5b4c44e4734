"""MuJoCo tabletop scenes: a mocap gripper, objects on a table, an RGB-D camera, exact ground truth.

Importing this package defaults the OpenGL backend to OSMesa (CPU, works headless everywhere) unless
``MUJOCO_GL`` is already set; it must happen before :mod:`mujoco` is first imported, which is why it
is done here, ahead of the submodule imports.
"""

import os

_GL = os.environ.setdefault("MUJOCO_GL", "osmesa")
if _GL in ("osmesa", "egl"):
    # PyOpenGL must agree with MuJoCo's context type, or its GL calls fail at the first render.
    os.environ.setdefault("PYOPENGL_PLATFORM", _GL)

from spatialvlm_ros.sim.colours import ALL_KINDS, COLOURS, KINDS, MORE_KINDS, PALETTE, ObjectSpec  # noqa: E402
from spatialvlm_ros.sim.noise import apply_depth_noise  # noqa: E402
from spatialvlm_ros.sim.tabletop import GroundTruth, SimFrame, TabletopSim  # noqa: E402

__all__ = ["ALL_KINDS", "COLOURS", "KINDS", "MORE_KINDS", "PALETTE", "GroundTruth", "ObjectSpec", "SimFrame",
           "TabletopSim", "apply_depth_noise"]
