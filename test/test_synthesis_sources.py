"""Data-engine sources: image folders and rosbag2 recordings built in tmp_path from tabletop renders."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from spatialvlm_ros.config import SimConfig
from spatialvlm_ros.errors import BagError, InputError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.messages.conversions import camera_info_fields, depth_to_image_fields, rgb_to_image_fields
from spatialvlm_ros.perception.experts import Detection, Detections, Sample
from spatialvlm_ros.perception.registry import OBJECT_EXPERTS
from spatialvlm_ros.sim import TabletopSim
from spatialvlm_ros.synthesis.config import ExpertsConfig, JudgeConfig, SynthesisConfig
from spatialvlm_ros.synthesis.engine import run_local
from spatialvlm_ros.synthesis.sources import BagSource, FolderSource, open_source

TS = get_typestore(Stores.LATEST)
T = TS.types
T0_NS = 1_700_000_000 * 10**9
PERIOD_NS = 100_000_000
FOVY = 53.0
REAL = SynthesisConfig(experts=ExpertsConfig(objects="open_vocab", depth="monocular"))


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    with TabletopSim(SimConfig(width=96, height=72, n_frames=4)) as sim:
        return [sim.render(i).frame for i in range(sim.n_frames)]


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)


def _depth_mm(depth_m: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.nan_to_num(depth_m) * 1000), 0, 65535).astype(np.uint16)


def _intrinsics_json(cam: CameraIntrinsics) -> str:
    return json.dumps({"fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy, "width": cam.width,
                       "height": cam.height})


@pytest.fixture
def folder(tmp_path: Path, frames: list[Frame]) -> Path:
    """``a.png`` + 16-bit depth, ``b.png`` + .npy depth, ``sub/c.png`` without depth; one intrinsics.json."""
    root = tmp_path / "photos"
    _write_png(root / "a.png", frames[0].rgb)
    _write_png(root / "a.depth.png", _depth_mm(frames[0].depth_m))
    _write_png(root / "b.png", frames[1].rgb)
    np.save(root / "b.depth.npy", frames[1].depth_m)
    _write_png(root / "sub" / "c.png", frames[2].rgb)
    (root / "intrinsics.json").write_text(_intrinsics_json(frames[0].intrinsics))
    (root / ".hidden.png").write_bytes(b"editor junk")
    return root


def test_folder_round_trips_rgb_depth_and_intrinsics(folder: Path, frames: list[Frame]) -> None:
    source = FolderSource(folder, fallback_fovy_deg=FOVY)
    assert source.image_ids == ("a", "b", "sub__c")
    for image_id, frame in zip(source.image_ids, frames):
        sample = source.load(image_id)
        assert sample.image_id == image_id and sample.frame.segmentation is None
        np.testing.assert_array_equal(sample.frame.rgb, frame.rgb)
        assert sample.frame.intrinsics == frame.intrinsics   # the sub folder inherits intrinsics.json
    np.testing.assert_allclose(source.load("a").frame.depth_m, frames[0].depth_m, atol=5e-4)   # whole millimetres
    np.testing.assert_array_equal(source.load("b").frame.depth_m, frames[1].depth_m)
    assert source.load("sub__c").frame.depth_m is None
    assert FolderSource(folder, fallback_fovy_deg=FOVY).image_ids == source.image_ids


def test_folder_intrinsics_per_image_then_folder_then_fallback(tmp_path: Path, frames: list[Frame]) -> None:
    for name in ("own", "fov", "none"):
        _write_png(tmp_path / name / "im.jpg", frames[0].rgb)
    (tmp_path / "own" / "im.intrinsics.json").write_text(_intrinsics_json(frames[0].intrinsics))
    (tmp_path / "own" / "intrinsics.json").write_text('{"fovy_deg": 90}')   # the image's own file wins
    (tmp_path / "fov" / "intrinsics.json").write_text('{"fovy_deg": 40}')
    source = FolderSource(tmp_path, fallback_fovy_deg=FOVY)
    intrinsics = {image_id: source.load(image_id).frame.intrinsics for image_id in source.image_ids}
    assert intrinsics == {"fov__im": CameraIntrinsics.from_fov(96, 72, 40.0), "none__im":
                          CameraIntrinsics.from_fov(96, 72, FOVY), "own__im": frames[0].intrinsics}
    jpeg = source.load("own__im").frame.rgb.astype(float)
    assert np.abs(jpeg - frames[0].rgb).mean() < 6   # lossy, but the same picture


@pytest.mark.parametrize("damage, match", [
    ("empty", r"no images \(\*\.png, \*\.jpg, \*\.jpeg\)"),
    ("same_id", "a.jpg and a.png both give image id 'a'; rename one"),
    ("garbage_image", r"b\.png: cannot decode the image"),
    ("depth_size", r"a\.depth\.png: depth is 48x36 but a\.png is 96x72; depth must be registered"),
    ("depth_8bit", "depth PNG must be single-channel 16-bit millimetres, got uint8"),
    ("depth_npy_int", r"depth \.npy must be an \(H, W\) float array of metres"),
    ("both_depths", "both a.depth.png and a.depth.npy exist"),
    ("json_syntax", r"intrinsics\.json: not readable JSON"),
    ("json_missing", r"missing \['cy'\]; give fx, fy, cx, cy \(pixels\) or fovy_deg"),
    ("json_unknown", r"unknown keys \['fov'\]"),
    ("json_both", "either fx, fy, cx, cy or fovy_deg, not both"),
    ("json_size", "intrinsics are for 640x480 images, the image is 96x72"),
    ("json_focal", "focal lengths must be positive"),
])
def test_folder_errors_name_the_file_and_the_fix(folder: Path, damage: str, match: str) -> None:
    intrinsics = folder / "intrinsics.json"
    if damage == "empty":
        folder = folder.parent / "empty"
        folder.mkdir()
        (folder / "notes.txt").write_text("no pictures")
    elif damage == "same_id":
        (folder / "a.jpg").write_bytes((folder / "a.png").read_bytes())
    elif damage == "garbage_image":
        (folder / "b.png").write_bytes(b"\x89PNG but not really")
    elif damage == "depth_size":
        _write_png(folder / "a.depth.png", np.zeros((36, 48), np.uint16))
    elif damage == "depth_8bit":
        _write_png(folder / "a.depth.png", np.zeros((72, 96), np.uint8))
    elif damage == "depth_npy_int":
        (folder / "a.depth.png").unlink()
        np.save(folder / "a.depth.npy", np.zeros((72, 96), np.uint16))
    elif damage == "both_depths":
        np.save(folder / "a.depth.npy", np.zeros((72, 96), np.float32))
    elif damage == "json_syntax":
        intrinsics.write_text('{"fx": 100,')
    elif damage == "json_missing":
        intrinsics.write_text('{"fx": 100, "fy": 100, "cx": 47.5}')
    elif damage == "json_unknown":
        intrinsics.write_text('{"fov": 60}')
    elif damage == "json_both":
        intrinsics.write_text('{"fx": 100, "fy": 100, "cx": 47.5, "cy": 35.5, "fovy_deg": 60}')
    elif damage == "json_size":
        intrinsics.write_text('{"fovy_deg": 60, "width": 640, "height": 480}')
    elif damage == "json_focal":
        intrinsics.write_text('{"fx": -1, "fy": 100, "cx": 47.5, "cy": 35.5}')
    with pytest.raises(InputError, match=match):
        source = FolderSource(folder, fallback_fovy_deg=FOVY)
        for image_id in source.image_ids:
            source.load(image_id)


def test_open_source_picks_the_source_and_checks_the_experts(folder: Path, tmp_path: Path) -> None:
    assert isinstance(open_source(str(folder), REAL), FolderSource)
    with pytest.raises(InputError, match="objects expert sim_oracle needs simulator frames; "
                                         "use experts.objects: open_vocab"):
        open_source(str(folder), SynthesisConfig())
    rgbd_only = SynthesisConfig(experts=ExpertsConfig(objects="open_vocab", depth="sensor"))
    with pytest.raises(InputError, match=r"1 of 3 images have no depth \(e\.g\. sub__c\); depth expert sensor needs "
                                         "RGB-D input; use experts.depth: monocular"):
        open_source(str(folder), rgbd_only)
    with pytest.raises(InputError, match="no such file or folder; expected sim:N"):
        open_source(str(tmp_path / "nothing"), REAL)
    with pytest.raises(InputError, match="not a folder, .mcap or .db3 file"):
        open_source(str(folder / "intrinsics.json"), REAL)
    with pytest.raises(InputError, match="expected sim:N"):
        open_source("sim:many", REAL)


def test_engine_says_the_sim_oracle_needs_simulator_frames(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="sim_oracle.*simulat"):
        run_local(FolderSource(folder, fallback_fovy_deg=FOVY), tmp_path / "out", SynthesisConfig())


class _Halves:
    """A stand-in objects expert for real images: the left and right image halves, the bottom rows as support."""

    def detect(self, sample: Sample, rng: np.random.Generator) -> Detections:
        h, w = sample.frame.rgb.shape[:2]
        left, right, support = (np.zeros((h, w), bool) for _ in range(3))
        left[h // 3:, : w // 2] = right[h // 3:, w // 2:] = support[2 * h // 3:] = True
        return Detections(objects=(Detection(0, "left", "left thing", left), Detection(1, "right", "right box", right)),
                          support_mask=support)


@pytest.mark.parametrize("kind", ["folder", "bag"])
def test_sources_run_through_the_engine_and_resume(folder: Path, frames: list[Frame], tmp_path: Path,
                                                   monkeypatch: Any, kind: str) -> None:
    monkeypatch.setitem(OBJECT_EXPERTS._items, "halves", lambda models: _Halves())
    (folder / "sub" / "c.png").unlink()    # the sensor depth source needs depth on every image
    spec = folder if kind == "folder" else write_camera_bag(tmp_path / "run", frames[:2])
    ids = ["a", "b"] if kind == "folder" else [f"run-{T0_NS}", f"run-{T0_NS + PERIOD_NS}"]
    # The halves are no objects (cut by the border, several things each): the judge would rightly drop them all.
    cfg = SynthesisConfig(experts=ExpertsConfig(objects="halves"), judge=JudgeConfig(enabled=False))
    first = run_local(open_source(str(spec), cfg), tmp_path / "out", cfg)
    assert (first.processed, first.skipped, first.images) == (2, 0, 2) and first.rows > 0
    assert sorted(p.stem for p in (tmp_path / "out" / "images").iterdir()) == ids
    again = run_local(open_source(str(spec), cfg), tmp_path / "out", cfg)
    assert (again.processed, again.skipped, again.rows) == (0, 2, first.rows)


def _header(stamp_ns: int) -> Any:
    sec, nanosec = divmod(stamp_ns, 10**9)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                    frame_id="camera_color_optical_frame")


def _image(stamp_ns: int, fields: dict[str, Any]) -> Any:
    return T["sensor_msgs/msg/Image"](header=_header(stamp_ns),
                                      **{**fields, "data": np.frombuffer(fields["data"], np.uint8)})


def _camera_info(stamp_ns: int, cam: CameraIntrinsics) -> Any:
    fields = {key: np.asarray(value, float) if key in ("d", "k", "r", "p") else value
              for key, value in camera_info_fields(cam).items()}
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](header=_header(stamp_ns), binning_x=0, binning_y=0, roi=roi, **fields)


def write_camera_bag(path: Path, frames: list[Frame], *, depth: bool = True) -> Path:
    """Record ``frames`` as the demo records them (raw colour, 16UC1 depth, camera_info), bag time = stamp."""
    topics = {"image": ("camera/color/image_raw", "sensor_msgs/msg/Image"),
              "info": ("camera/color/camera_info", "sensor_msgs/msg/CameraInfo")}
    if depth:
        topics["depth"] = ("camera/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image")
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {name: writer.add_connection(topic, msgtype, typestore=TS) for name, (topic, msgtype) in topics.items()}
        for i, frame in enumerate(frames):
            stamp = T0_NS + i * PERIOD_NS
            messages = {"image": _image(stamp, rgb_to_image_fields(frame.rgb)),
                        "info": _camera_info(stamp, frame.intrinsics)}
            if depth:
                messages["depth"] = _image(stamp, depth_to_image_fields(frame.depth_m, "16UC1"))
            for name, msg in messages.items():
                writer.write(conns[name], stamp, TS.serialize_cdr(msg, msg.__msgtype__))
    return path


def test_bag_frames_in_order_with_stamps_depth_and_intrinsics(frames: list[Frame], tmp_path: Path) -> None:
    bag = write_camera_bag(tmp_path / "run 1", frames)
    source = open_source(str(bag), REAL)
    assert isinstance(source, BagSource) and source.topics.depth == "camera/aligned_depth_to_color/image_raw"
    assert source.image_ids == tuple(f"run_1-{T0_NS + i * PERIOD_NS}" for i in range(len(frames)))
    for i, (image_id, frame) in enumerate(zip(source.image_ids, frames)):
        sample = source.load(image_id)
        assert sample.frame.stamp_ns == T0_NS + i * PERIOD_NS and sample.frame.intrinsics == frame.intrinsics
        np.testing.assert_array_equal(sample.frame.rgb, frame.rgb)
        np.testing.assert_allclose(sample.frame.depth_m, frame.depth_m, atol=5e-4)


def test_bag_every_nth_frame_any_load_order_and_pickles(frames: list[Frame], tmp_path: Path) -> None:
    bag = write_camera_bag(tmp_path / "run", frames)
    source = BagSource(bag / "run.mcap", every_n=3)   # the bare storage file: the same ids as its folder
    assert source.image_ids == (f"run-{T0_NS}", f"run-{T0_NS + 3 * PERIOD_NS}")
    later, first = (source.load(image_id) for image_id in reversed(source.image_ids))   # restarts the stream
    np.testing.assert_array_equal(later.frame.rgb, frames[3].rgb)
    np.testing.assert_array_equal(first.frame.rgb, frames[0].rgb)
    copy = pickle.loads(pickle.dumps(source))    # as Ray ships it to a worker, mid-stream
    np.testing.assert_array_equal(copy.load(source.image_ids[1]).frame.rgb, frames[3].rgb)
    with pytest.raises(InputError, match="every_n must be >= 1"):
        BagSource(bag, every_n=0)


def test_monocular_bag_needs_a_depth_expert(frames: list[Frame], tmp_path: Path) -> None:
    bag = write_camera_bag(tmp_path / "mono", frames[:2], depth=False)
    source = open_source(str(bag), REAL)
    assert isinstance(source, BagSource) and source.topics.depth is None
    assert source.load(source.image_ids[1]).frame.depth_m is None
    with pytest.raises(InputError, match="2 of 2 images have no depth.*use experts.depth: monocular"):
        open_source(str(bag), SynthesisConfig(experts=ExpertsConfig(objects="open_vocab", depth="sensor")))
    with pytest.raises(BagError, match="no bag at"):
        BagSource(tmp_path / "missing.mcap")
