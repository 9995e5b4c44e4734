"""sensor_msgs <-> numpy conversion, on real message classes: rclpy's and rosbags' alike."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from spatialvlm_ros.errors import InputError
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.messages.conversions import (
    camera_info_fields, compressed_size, compressed_to_rgb, depth_to_image_fields, depth_to_metres, frame_from_messages,
    image_to_rgb, intrinsics_from_camera_info, rgb_to_image_fields,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)


def _image(arr: np.ndarray, encoding: str, *, pad: int = 0, bigendian: bool = False) -> Image:
    h, w = arr.shape[:2]
    dtype = arr.dtype.newbyteorder(">" if bigendian else "<")
    rows = arr.astype(dtype).reshape(h, -1).view(np.uint8)
    rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)  # step padding
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1],
                 data=rows.tobytes())


@pytest.mark.parametrize("encoding,convert", [
    ("rgb8", None), ("bgr8", cv2.COLOR_RGB2BGR), ("rgba8", cv2.COLOR_RGB2RGBA), ("bgra8", cv2.COLOR_RGB2BGRA)])
@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_decode_to_rgb(encoding: str, convert: int | None, pad: int) -> None:
    arr = RGB if convert is None else cv2.cvtColor(RGB, convert)
    np.testing.assert_array_equal(image_to_rgb(_image(arr, encoding, pad=pad)), RGB)


def test_rgb_round_trip_through_message_fields() -> None:
    np.testing.assert_array_equal(image_to_rgb(Image(**rgb_to_image_fields(RGB))), RGB)


@pytest.mark.parametrize("bigendian", [False, True])
def test_16uc1_depth_is_millimetres(bigendian: bool) -> None:
    mm = np.array([[0, 1000], [1234, 65535]], dtype=np.uint16)
    depth = depth_to_metres(_image(mm[..., None], "16UC1", bigendian=bigendian))
    np.testing.assert_allclose(depth, [[0.0, 1.0], [1.234, 65.535]], rtol=1e-6)
    assert depth.dtype == np.float32


def test_32fc1_depth_keeps_nan_and_round_trips() -> None:
    depth = np.array([[0.5, np.nan], [np.inf, 2.25]], dtype=np.float32)
    np.testing.assert_array_equal(depth_to_metres(Image(**depth_to_image_fields(depth, "32FC1"))), depth)
    # 16UC1 stores no NaN: "no reading" becomes 0, as a RealSense publishes it.
    mm = depth_to_metres(Image(**depth_to_image_fields(depth, "16UC1")))
    np.testing.assert_allclose(mm, [[0.5, 0.0], [0.0, 2.25]])


def test_compressed_colour_decodes() -> None:
    ok, png = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(compressed_to_rgb(CompressedImage(format="png", data=png.tobytes())), RGB)


@pytest.mark.parametrize("make,match", [
    (lambda: image_to_rgb(_image(RGB[..., 0], "mono16")), "colour image has encoding 'mono16'"),
    (lambda: depth_to_metres(_image(RGB, "rgb8")), "depth image has encoding 'rgb8'"),
    (lambda: image_to_rgb(Image(height=4, width=4, encoding="rgb8", step=12, data=b"\x00" * 10)), "too short"),
    (lambda: image_to_rgb(_image(RGB[..., 0], "bayer_rggb8")), "colour image has encoding 'bayer_rggb8'"),
    (lambda: compressed_to_rgb(CompressedImage(format="jpeg", data=b"not a jpeg")), "cannot decode"),
    (lambda: depth_to_image_fields(np.zeros((2, 2)), "8UC1"), "16UC1 or 32FC1"),
])
def test_bad_messages_raise_input_error(make, match: str) -> None:
    with pytest.raises(InputError, match=match):
        make()


def _rosbags(msg: object, msgtype: str) -> object:
    """``msg`` (an rclpy message) as rosbags deserialises it from a bag: CDR bytes through rosbags' type store."""
    from rclpy.serialization import serialize_message
    return get_typestore(Stores.LATEST).deserialize_cdr(serialize_message(msg), msgtype)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "compressed"])
def test_rclpy_and_rosbags_messages_give_the_same_frame(compressed: bool) -> None:
    intrinsics = CameraIntrinsics.from_fov(8, 6, 60.0)
    header = Header(stamp=Time(sec=12, nanosec=345), frame_id="cam")
    if compressed:
        _ok, png = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
        image, image_type = CompressedImage(header=header, format="png", data=png.tobytes()), "CompressedImage"
    else:
        image, image_type = Image(header=header, **rgb_to_image_fields(RGB)), "Image"
    depth = Image(header=header, **depth_to_image_fields(np.full((6, 8), 1.5, np.float32), "16UC1"))
    info = CameraInfo(header=header, **camera_info_fields(intrinsics))
    rclpy_frame = frame_from_messages(image, depth, CameraIntrinsics.from_camera_info(info))
    rosbags_frame = frame_from_messages(
        _rosbags(image, f"sensor_msgs/msg/{image_type}"), _rosbags(depth, "sensor_msgs/msg/Image"),
        CameraIntrinsics.from_camera_info(_rosbags(info, "sensor_msgs/msg/CameraInfo")))
    np.testing.assert_array_equal(rosbags_frame.rgb, RGB)
    np.testing.assert_array_equal(rosbags_frame.rgb, rclpy_frame.rgb)
    np.testing.assert_array_equal(rosbags_frame.depth_m, rclpy_frame.depth_m)
    np.testing.assert_array_equal(rosbags_frame.intrinsics.k, intrinsics.k)
    assert rosbags_frame.stamp_ns == rclpy_frame.stamp_ns == 12 * 10**9 + 345
    assert rosbags_frame.frame_id == rclpy_frame.frame_id == "cam"


# --- bad input of every kind is an InputError naming the problem, before anything large is allocated -----------

@pytest.mark.parametrize("ext, params", [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])])
def test_compressed_size_from_the_header(ext: str, params: list[int]) -> None:
    ok, data = cv2.imencode(ext, np.zeros((30, 50, 3), np.uint8), params)
    assert compressed_size(data.tobytes())[1:] == (50, 30)
    assert compressed_size(b"GIF89a...") is None
    with pytest.raises(InputError, match="truncated|frame header"):
        compressed_size(data.tobytes()[:12 if ext == ".png" else 20])


def test_empty_oversized_and_mismatched_images_are_refused_before_decoding() -> None:
    intr = CameraIntrinsics.from_fov(8, 6, 50.0)
    header = Header(stamp=Time(sec=1, nanosec=0))
    with pytest.raises(InputError, match="empty CompressedImage"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b""))
    # A PNG header claiming 20000 x 20000 is refused from the header alone (its pixel data is not even there).
    bomb = bytearray(cv2.imencode(".png", RGB)[1].tobytes())
    bomb[16:24] = (20000).to_bytes(4, "big") * 2
    with pytest.raises(InputError, match="PNG is 20000x20000 = 400000000 pixels, over topics.max_image_pixels"):
        frame_from_messages(CompressedImage(header=header, format="png", data=bytes(bomb)), None, intr, 10**6)
    big = cv2.imencode(".png", np.zeros((12, 16, 3), np.uint8))[1].tobytes()
    with pytest.raises(InputError, match="colour image is 16x12 but camera_info says 8x6"):
        frame_from_messages(CompressedImage(header=header, format="png", data=big), None, intr)
    with pytest.raises(InputError, match="rgb8 image is 8x6 = 48 pixels, over topics.max_image_pixels = 40"):
        image_to_rgb(_image(RGB, "rgb8"), max_pixels=40)
    with pytest.raises(InputError, match="cannot decode"):
        compressed_to_rgb(CompressedImage(format="png", data=big[:40]))


@pytest.mark.parametrize("index, value, match", [
    (2, float("inf"), r"k\[2\] \(cx\) = inf is not finite"), (5, float("nan"), r"k\[5\] \(cy\) = nan"),
    (0, 0.0, r"k\[0\] \(fx\) = 0.0 is not a finite positive"), (4, -1.0, r"k\[4\] \(fy\)"),
])
def test_camera_info_is_checked_in_full(index: int, value: float, match: str) -> None:
    fields = camera_info_fields(CameraIntrinsics.from_fov(8, 6, 50.0))
    fields["k"][index] = value
    with pytest.raises(InputError, match=match):
        intrinsics_from_camera_info(CameraInfo(**fields))
    with pytest.raises(InputError, match="size 0x0"):
        intrinsics_from_camera_info(CameraInfo(**{**fields, "k": camera_info_fields(
            CameraIntrinsics.from_fov(8, 6, 50.0))["k"], "width": 0, "height": 0}))
