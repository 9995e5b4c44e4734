"""Depth sensor noise model (structured-light / active-stereo cameras such as the RealSense D435)."""

from __future__ import annotations

import numpy as np

from spatialvlm_ros.config import DepthNoiseConfig


def depth_edges(depth_m: np.ndarray, threshold_m: float) -> np.ndarray:
    """Boolean (H, W) mask of pixels whose depth differs from a 4-neighbour by more than ``threshold_m``.

    Both sides of a discontinuity are marked, as a stereo matcher loses both.
    """
    edges = np.zeros(depth_m.shape, dtype=bool)
    jump_x = np.abs(np.diff(depth_m, axis=1)) > threshold_m
    jump_y = np.abs(np.diff(depth_m, axis=0)) > threshold_m
    edges[:, 1:] |= jump_x
    edges[:, :-1] |= jump_x
    edges[1:, :] |= jump_y
    edges[:-1, :] |= jump_y
    return edges


def apply_depth_noise(depth_m: np.ndarray, cfg: DepthNoiseConfig, rng: np.random.Generator) -> np.ndarray:
    """Noisy copy of a clean z-depth image (metres); 0 marks "no reading".

    The model, in order: axial Gaussian noise with ``sigma(z) = sigma_at_1m_m * z**2`` (stereo depth error
    grows with the square of range); pixels on depth discontinuities (a neighbour jump above
    ``edge_threshold_m``, found on the clean image) drop out with probability ``edge_dropout``; readings
    outside ``[min_range_m, max_range_m]`` (after noise) become 0. Input zeros stay zero. Returns the
    input unchanged (as float32) when ``cfg.enabled`` is false.

    Example:
        >>> from spatialvlm_ros.config import DepthNoiseConfig
        >>> cfg = DepthNoiseConfig(enabled=True, sigma_at_1m_m=0.0, edge_dropout=0.0, max_range_m=2.0)
        >>> apply_depth_noise(np.array([[1.0, 3.0]]), cfg, np.random.default_rng(0)).tolist()
        [[1.0, 0.0]]
    """
    z = np.array(depth_m, dtype=np.float32)          # a copy: the caller's image is never modified
    if not cfg.enabled:
        return z
    # float32 draws: half the time of float64, and far finer than the sensor noise being modelled.
    noisy = z + rng.standard_normal(z.shape, dtype=np.float32) * (np.float32(cfg.sigma_at_1m_m) * z * z)
    if cfg.edge_dropout > 0:
        dropped = depth_edges(z, cfg.edge_threshold_m) & (rng.random(z.shape, dtype=np.float32) < cfg.edge_dropout)
        noisy[dropped] = 0.0
    noisy[(noisy < cfg.min_range_m) | (noisy > cfg.max_range_m) | (z <= 0) | ~np.isfinite(z)] = 0.0
    return noisy
