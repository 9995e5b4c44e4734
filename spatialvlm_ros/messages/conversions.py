"""sensor_msgs <-> numpy conversion.

Duck-typed on purpose: it reads rclpy messages and rosbags messages alike (same field names) and
imports neither rclpy nor a ROS ``cv_bridge``, so the bag evaluator and the data engine use it without
a ROS install, and the nodes build their messages from the field dicts it returns.
A ROS 2 ``cv_bridge`` is not installable from the package index here (the one on PyPI is ROS 1
code and breaks on numpy 2), so the few encodings robots use are decoded by hand below.
"""

from __future__ import annotations

import array
import math
import struct
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


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Refuse an image of more than ``max_pixels`` pixels (None = no cap), before anything is allocated.

    Raises:
        InputError: the size is not positive, or too large.

    Example:
        >>> check_pixels(20000, 20000, 16_777_216, "PNG")
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.InputError: PNG is 20000x20000 = 400000000 pixels, over topics.max_image_pixels ...
    """
    if width <= 0 or height <= 0:
        raise InputError(f"{what} has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(f"{what} is {width}x{height} = {width * height} pixels, over topics.max_image_pixels "
                         f"= {max_pixels}")


def _image_array(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """Raw pixel array of a sensor_msgs/Image, honouring ``step`` padding and endianness."""
    check_pixels(int(msg.width), int(msg.height), max_pixels, f"{msg.encoding} image")
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


def image_to_rgb(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> (H, W, 3) uint8 RGB; over ``max_pixels``: InputError."""
    if msg.encoding not in COLOUR_ENCODINGS:
        raise InputError(f"colour image has encoding {msg.encoding!r}; expected one of {COLOUR_ENCODINGS}")
    arr = _image_array(msg, max_pixels)
    if msg.encoding == "rgb8":
        return arr
    code = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
            "mono8": cv2.COLOR_GRAY2RGB}[msg.encoding]
    return cv2.cvtColor(arr, code)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT (C4), JPG (C8), DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def compressed_size(data: bytes | memoryview) -> tuple[str, int, int] | None:
    """(format, width, height) read from a PNG or JPEG header without decoding; None for other formats.

    Raises:
        InputError: a PNG or JPEG whose header is truncated or malformed.

    Example:
        >>> ok, png = cv2.imencode(".png", np.zeros((3, 5, 3), np.uint8))
        >>> compressed_size(png.tobytes())
        ('png', 5, 3)
    """
    data = memoryview(data).cast("B")
    if bytes(data[:8]) == _PNG_SIGNATURE:
        if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
            raise InputError("PNG without its IHDR header (truncated)")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if bytes(data[:2]) != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise InputError(f"JPEG header broken at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:                       # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):   # standalone markers carry no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return "jpeg", width, height
        if marker in (0xD9, 0xDA) or length < 2:   # end of image / start of scan before any frame header
            break
        i += 2 + length
    raise InputError("JPEG without a frame header (SOF) before its image data")


def compressed_to_rgb(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png colour) -> (H, W, 3) uint8 RGB.

    A PNG or JPEG is sized from its header first, and refused as a whole when over ``max_pixels`` (None =
    no cap): a 1 MB PNG can decode to gigabytes. Other formats are decoded, then checked.

    Raises:
        InputError: empty, undecodable, or over ``max_pixels``.
    """
    data = msg.data
    if len(data) == 0:
        raise InputError(f"empty CompressedImage (format {msg.format!r}, 0 bytes)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    size = compressed_size(buffer.data)
    if size is not None:
        check_pixels(size[1], size[2], max_pixels, size[0].upper())
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise InputError(f"cannot decode compressed image (format {msg.format!r}): {err}") from err
    if bgr is None:
        raise InputError(f"cannot decode compressed image (format {msg.format!r}, {len(data)} bytes)")
    if size is None:
        check_pixels(bgr.shape[1], bgr.shape[0], max_pixels, f"{msg.format!r} image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def depth_to_metres(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image depth -> (H, W) float32 metres; 16UC1/mono16 are millimetres (REP 118).

    Zero stays zero (no reading); downstream treats 0, NaN and inf as invalid.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise InputError(f"depth image has encoding {msg.encoding!r}; expected one of {DEPTH_ENCODINGS}")
    arr = _image_array(msg, max_pixels)[:, :, 0]
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


def intrinsics_from_camera_info(info: Any) -> CameraIntrinsics:
    """Check a sensor_msgs/CameraInfo in full and return its intrinsics.

    Raises:
        InputError: naming the field: a size that is not positive, a K without 9 entries, a focal length that
            is not finite and positive, or a principal point that is not finite.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> intrinsics_from_camera_info(NS(width=4, height=3, k=[2.0, 0, float("inf"), 0, 2.0, 1.0, 0, 0, 1]))
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.InputError: camera_info: k[2] (cx) = inf is not finite
    """
    try:
        width, height, k = int(info.width), int(info.height), [float(v) for v in info.k]
    except (AttributeError, TypeError, ValueError) as err:
        raise InputError(f"camera_info: not a CameraInfo ({err})") from err
    if width <= 0 or height <= 0:
        raise InputError(f"camera_info: image size {width}x{height} is not positive")
    if len(k) != 9:
        raise InputError(f"camera_info: k has {len(k)} entries, not 9")
    for index, name in ((0, "fx"), (4, "fy")):
        if not (math.isfinite(k[index]) and k[index] > 0):
            raise InputError(f"camera_info: k[{index}] ({name}) = {k[index]} is not a finite positive focal length")
    for index, name in ((2, "cx"), (5, "cy")):
        if not math.isfinite(k[index]):
            raise InputError(f"camera_info: k[{index}] ({name}) = {k[index]} is not finite")
    return CameraIntrinsics.from_k(k, width, height)


def frame_from_messages(image: Any, depth: Any | None, intrinsics: CameraIntrinsics,
                        max_pixels: int | None = None) -> Frame:
    """Decode a colour message (Image or CompressedImage) and an optional registered depth Image into a Frame.

    Args:
        image: sensor_msgs/Image or CompressedImage (colour).
        depth: registered depth sensor_msgs/Image, or None.
        intrinsics: the colour camera's (see :func:`intrinsics_from_camera_info`).
        max_pixels: larger images are refused before decoding (None = no cap).

    Raises:
        InputError: an unsupported encoding, empty or truncated data, an image over ``max_pixels``, or sizes
            that disagree with ``intrinsics``.
    """
    # CompressedImage has ``format`` where Image has ``encoding`` (true of rclpy and rosbags messages alike).
    compressed = hasattr(image, "format")
    # Sizes are checked from the headers first: an image that cannot match the camera is never decoded.
    declared = compressed_size(np.frombuffer(image.data, np.uint8).data) if compressed and len(image.data) else None
    colour_size = declared[1:] if declared else None if compressed else (int(image.width), int(image.height))
    for what, size in (("colour image", colour_size),
                       ("depth image", None if depth is None else (int(depth.width), int(depth.height)))):
        if size is None:
            continue
        check_pixels(size[0], size[1], max_pixels, declared[0].upper() if what == "colour image" and declared
                     else what)
        if size != (intrinsics.width, intrinsics.height):
            raise InputError(f"{what} is {size[0]}x{size[1]} but camera_info says "
                             f"{intrinsics.width}x{intrinsics.height}")
    rgb = compressed_to_rgb(image, max_pixels) if compressed else image_to_rgb(image, max_pixels)
    return Frame(rgb=rgb, intrinsics=intrinsics,
                 depth_m=depth_to_metres(depth, max_pixels) if depth is not None else None,
                 stamp_ns=stamp_to_ns(image.header.stamp),
                 frame_id=image.header.frame_id or "camera_color_optical_frame")
