"""sensor_msgs <-> numpy conversion.

Duck-typed on purpose: it reads rclpy messages and rosbags messages alike (same field names) and
imports neither rclpy nor a ROS ``cv_bridge``, so the bag evaluator and the data engine use it without
a ROS install, and the nodes build their messages from the field dicts it returns.
A ROS 2 ``cv_bridge`` is not installable from the package index here (the one on PyPI is ROS 1
code and breaks on numpy 2), so the few encodings robots use are decoded by hand below.
"""

from __future__ import annotations

import array
from typing import Any

import cv2
import numpy as np

from spatialvlm_ros.errors import InputError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics

# encoding -> (dtype, channels)
_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4), "mono8": ("u1", 1),
    "16UC1": ("u2", 1), "mono16": ("u2", 1), "32FC1": ("f4", 1),
}
COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _image_array(msg: Any) -> np.ndarray:
    """Raw pixel array of a sensor_msgs/Image, honouring ``step`` padding and endianness."""
    dtype_code, channels = _ENCODINGS[msg.encoding]  # callers check the encoding first
    dtype = np.dtype(dtype_code).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = msg.width * channels * dtype.itemsize
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if msg.step < row_bytes or buf.size < msg.step * msg.height:
        raise InputError(f"image data too short: {buf.size} bytes for {msg.width}x{msg.height} "
                         f"{msg.encoding} with step {msg.step}")
    rows = buf[: msg.step * msg.height].reshape(msg.height, msg.step)
    if msg.step != row_bytes:
        rows = np.ascontiguousarray(rows[:, :row_bytes])   # drop row padding (copy only when padded)
    arr = rows.view(dtype).reshape(msg.height, msg.width, channels)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> (H, W, 3) uint8 RGB."""
    if msg.encoding not in COLOUR_ENCODINGS:
        raise InputError(f"colour image has encoding {msg.encoding!r}; expected one of {COLOUR_ENCODINGS}")
    arr = _image_array(msg)
    if msg.encoding == "rgb8":
        return arr
    code = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
            "mono8": cv2.COLOR_GRAY2RGB}[msg.encoding]
    return cv2.cvtColor(arr, code)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png colour) -> (H, W, 3) uint8 RGB."""
    bgr = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot decode compressed image (format {msg.format!r})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def depth_to_metres(msg: Any) -> np.ndarray:
    """sensor_msgs/Image depth -> (H, W) float32 metres; 16UC1/mono16 are millimetres (REP 118).

    Zero stays zero (no reading); downstream treats 0, NaN and inf as invalid.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise InputError(f"depth image has encoding {msg.encoding!r}; expected one of {DEPTH_ENCODINGS}")
    arr = _image_array(msg)[:, :, 0]
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * np.float32(0.001)
    return arr.astype(np.float32, copy=False)


def _byte_array(arr: np.ndarray) -> array.array:
    # rclpy takes array('B') as it is; ``bytes`` are checked element by element (~17 ms per 640x480 rgb8).
    return array.array("B", np.ascontiguousarray(arr).tobytes())


def rgb_to_image_fields(rgb: np.ndarray) -> dict[str, Any]:
    """Fields of an rgb8 sensor_msgs/Image for an (H, W, 3) uint8 array."""
    h, w = rgb.shape[:2]
    return {"height": h, "width": w, "encoding": "rgb8", "is_bigendian": 0, "step": w * 3,
            "data": _byte_array(rgb.astype(np.uint8, copy=False))}


def depth_to_image_fields(depth_m: np.ndarray, encoding: str = "16UC1") -> dict[str, Any]:
    """Fields of a depth sensor_msgs/Image: 16UC1 millimetres (as RealSense publishes) or 32FC1 metres."""
    h, w = depth_m.shape
    if encoding == "16UC1":
        finite = np.where(np.isfinite(depth_m), depth_m, 0.0)
        data = np.clip(np.rint(finite * 1000.0), 0, 65535).astype("<u2")
        step = w * 2
    elif encoding == "32FC1":
        data = depth_m.astype("<f4")
        step = w * 4
    else:
        raise InputError(f"depth encoding must be 16UC1 or 32FC1, got {encoding!r}")
    return {"height": h, "width": w, "encoding": encoding, "is_bigendian": 0, "step": step,
            "data": _byte_array(data)}


def camera_info_fields(intrinsics: CameraIntrinsics) -> dict[str, Any]:
    """Fields of a sensor_msgs/CameraInfo for an undistorted pinhole camera (plumb_bob, zero distortion)."""
    k = intrinsics.k
    return {"width": intrinsics.width, "height": intrinsics.height, "distortion_model": "plumb_bob",
            "d": [0.0] * 5, "k": k.reshape(-1).tolist(), "r": np.eye(3).reshape(-1).tolist(),
            "p": np.hstack([k, np.zeros((3, 1))]).reshape(-1).tolist()}


def frame_from_messages(image: Any, depth: Any | None, intrinsics: CameraIntrinsics) -> Frame:
    """Decode a colour message (Image or CompressedImage) and an optional registered depth Image into a Frame.

    Raises:
        InputError: an unsupported encoding, truncated data, or sizes that disagree with ``intrinsics``.
    """
    # CompressedImage has ``format`` where Image has ``encoding`` (true of rclpy and rosbags messages alike).
    rgb = compressed_to_rgb(image) if hasattr(image, "format") else image_to_rgb(image)
    return Frame(rgb=rgb, intrinsics=intrinsics, depth_m=depth_to_metres(depth) if depth is not None else None,
                 stamp_ns=stamp_to_ns(image.header.stamp),
                 frame_id=image.header.frame_id or "camera_color_optical_frame")
