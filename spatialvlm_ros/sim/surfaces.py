"""Ground-truth masks of the scenery surfaces, which the segmentation labels -1 together with the background.

The renderer labels only the gripper and the objects; the table, floor and walls all read -1. The
data engine needs the tabletop pixels alone (the support plane of the canonical frame), so they are
recovered here exactly from geometry: scenery pixels whose 3D point lies on the table top.
"""

from __future__ import annotations

import numpy as np

from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.pointcloud import backproject
from spatialvlm_ros.sim.scene import TABLE_CENTRE_XY, TABLE_HALF, TABLE_TOP_Z


def table_top_mask(frame: Frame, camera_pose_world: np.ndarray, tolerance_m: float = 0.01) -> np.ndarray:
    """(H, W) bool: the pixels that see the top face of the table.

    Args:
        frame: a simulator frame (depth and segmentation required).
        camera_pose_world: (4, 4) pose of the optical frame in the world (``GroundTruth.camera_pose_world``).
        tolerance_m: how far from the table-top plane a point may be (covers depth noise).

    Returns:
        True where a scenery pixel (segmentation -1) has a depth reading on the table top.

    Example:
        >>> from spatialvlm_ros.config import SimConfig
        >>> from spatialvlm_ros.sim import TabletopSim
        >>> with TabletopSim(SimConfig(width=64, height=48, n_frames=2)) as sim:
        ...     step = sim.render(0)
        >>> mask = table_top_mask(step.frame, step.truth.camera_pose_world)
        >>> bool(mask.any()), bool((step.frame.segmentation[mask] == -1).all())
        (True, True)
    """
    if frame.depth_m is None or frame.segmentation is None:
        raise ValueError("table_top_mask needs a simulator frame with depth and segmentation")
    # Only pixels with a reading: then backproject keeps every one of them, in flat order.
    scenery = (frame.segmentation == -1) & (frame.depth_m > 0) & np.isfinite(frame.depth_m)
    points = backproject(frame.depth_m, scenery, frame.intrinsics)
    rotation, eye = camera_pose_world[:3, :3], camera_pose_world[:3, 3]
    # World height first (one dot product per point); x and y only for the few points at table height.
    near = np.flatnonzero(np.abs(points @ rotation[2] + eye[2] - TABLE_TOP_Z) <= tolerance_m)
    xy = points[near] @ rotation[:2].T + eye[:2]
    inside = np.all(np.abs(xy - np.array(TABLE_CENTRE_XY)) <= np.array(TABLE_HALF), axis=1)
    on_top = near[inside]
    mask = np.zeros(scenery.size, dtype=bool)
    mask[np.flatnonzero(scenery)[on_top]] = True
    return mask.reshape(scenery.shape)
