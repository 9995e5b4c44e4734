"""spatialvlm_ros.bag: rosbag2 evaluation on bags written here with rosbags' own Writer.

Frames come from the MuJoCo tabletop (rendered once per module); bags are written in the layout a
RealSense driver records and in the one `spatialvlm demo` records, in both storage formats.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from spatialvlm_ros.bag import evaluate_bag, select_pair
from spatialvlm_ros.bag.truth import load_truth
from spatialvlm_ros.cli import main
from spatialvlm_ros.config import SimConfig, SpatialRewardConfig
from spatialvlm_ros.errors import BagError
from spatialvlm_ros.types import DistanceKind, Pair
from spatialvlm_ros.messages.conversions import depth_to_image_fields, rgb_to_image_fields
from spatialvlm_ros.messages.rosbag import open_bag
from spatialvlm_ros.sim import TabletopSim

TS = get_typestore(Stores.LATEST)
T = TS.types
T0_NS = 1_700_000_000 * 10**9
PERIOD_NS = 100_000_000  # 10 Hz
TARGET = "red can"


@dataclass(frozen=True)
class Layout:
    """Topic names and encodings of one kind of recording."""

    image: str
    depth: str
    info: str
    compressed: bool
    truth: str  # "float": Float32 distance, "diagnostic": the demo's ground_truth DiagnosticArray, "": none


REALSENSE = Layout("/camera/camera/color/image_raw/compressed", "/camera/camera/aligned_depth_to_color/image_raw",
                   "/camera/camera/color/camera_info", compressed=True, truth="float")
DEMO = Layout("camera/color/image_raw", "camera/aligned_depth_to_color/image_raw", "camera/color/camera_info",
              compressed=False, truth="diagnostic")
DEMO_NO_TRUTH = Layout(DEMO.image, DEMO.depth, DEMO.info, compressed=False, truth="")


@pytest.fixture(scope="module")
def sim_frames() -> list[Any]:
    with TabletopSim(SimConfig(width=320, height=240, n_frames=10)) as sim:
        return [sim.render(i) for i in range(sim.n_frames)]


def _header(stamp_ns: int) -> Any:
    sec, nanosec = divmod(stamp_ns, 10**9)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                    frame_id="camera_color_optical_frame")


def _camera_info(header: Any, intr: Any) -> Any:
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](
        header=header, height=intr.height, width=intr.width, distortion_model="plumb_bob", d=np.zeros(5),
        k=intr.k.reshape(-1), r=np.eye(3).reshape(-1),
        p=np.array([intr.fx, 0, intr.cx, 0, 0, intr.fy, intr.cy, 0, 0, 0, 1, 0], float),
        binning_x=0, binning_y=0, roi=roi)


def _truth_status(name: str, gap: float, centre: float, index: int) -> Any:
    kv = T["diagnostic_msgs/msg/KeyValue"]
    return T["diagnostic_msgs/msg/DiagnosticStatus"](
        level=0, name=name, message=f"frame {index}", hardware_id="",
        values=[kv(key="gap_m", value=repr(gap)), kv(key="centre_m", value=repr(centre)),
                kv(key="frame_index", value=str(index))])


def write_bag(path: Path, frames: list[Any], layout: Layout, storage: StoragePlugin = StoragePlugin.MCAP,
              empty_images: frozenset[int] = frozenset(), zstd: bool = False) -> Path:
    """Record ``frames`` as a camera driver (plus a truth publisher) would, bag time = frame stamp.

    ``empty_images``: frame indices whose CompressedImage is empty (0 bytes); ``zstd``: mcap chunks
    compressed with zstd, as `spatialvlm demo` records them.
    """
    writer = Writer(path, version=9, storage_plugin=storage)
    if zstd:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        topics = [("image", layout.image, "sensor_msgs/msg/" + ("CompressedImage" if layout.compressed else "Image")),
                  ("depth", layout.depth, "sensor_msgs/msg/Image"), ("info", layout.info, "sensor_msgs/msg/CameraInfo"),
                  # What the demo also records; the evaluation must not mix it with its own reward.
                  ("reward", "reward", "std_msgs/msg/Float32")]
        if layout.truth:
            topics.append(("truth", "/ground_truth/distance", "std_msgs/msg/Float32") if layout.truth == "float"
                          else ("truth", "ground_truth", "diagnostic_msgs/msg/DiagnosticArray"))
        conns = {name: writer.add_connection(topic, msgtype, typestore=TS) for name, topic, msgtype in topics}

        def put(name: str, stamp: int, msg: Any) -> None:
            writer.write(conns[name], stamp, TS.serialize_cdr(msg, msg.__msgtype__))

        for i, step in enumerate(frames):
            stamp, frame = T0_NS + i * PERIOD_NS, step.frame
            header = _header(stamp)
            if layout.compressed:
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR),
                                        [cv2.IMWRITE_JPEG_QUALITY, 95])
                assert ok
                data = np.zeros(0, np.uint8) if i in empty_images else jpeg.reshape(-1)
                put("image", stamp, T["sensor_msgs/msg/CompressedImage"](
                    header=header, format="rgb8; jpeg compressed bgr8", data=data))
            else:
                fields = rgb_to_image_fields(frame.rgb)
                put("image", stamp, T["sensor_msgs/msg/Image"](
                    header=header, **{**fields, "data": np.frombuffer(fields["data"], np.uint8)}))
            fields = depth_to_image_fields(frame.depth_m, "16UC1")
            put("depth", stamp, T["sensor_msgs/msg/Image"](header=header, **{**fields, "data": np.frombuffer(
                fields["data"], np.uint8)}))
            put("info", stamp, _camera_info(header, frame.intrinsics))
            if layout.truth == "float":
                put("truth", stamp, T["std_msgs/msg/Float32"](data=step.truth.gap_m[TARGET]))
            elif layout.truth == "diagnostic":
                put("truth", stamp, T["diagnostic_msgs/msg/DiagnosticArray"](header=header, status=[
                    _truth_status(name, step.truth.gap_m[name], step.truth.centre_m[name], i)
                    for name in step.truth.gap_m]))
            put("reward", stamp, T["std_msgs/msg/Float32"](data=0.0))
    return path


def _topic_counts(bag: Path) -> dict[str, int]:
    with AnyReader([bag]) as reader:
        return {t: info.msgcount for t, info in reader.topics.items()}


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3], ids=["mcap", "sqlite3"])
def test_realsense_layout_offline(sim_frames: list[Any], tmp_path: Path, storage: StoragePlugin) -> None:
    bag = write_bag(tmp_path / "realsense", sim_frames, REALSENSE, storage)
    ev = evaluate_bag(bag, SpatialRewardConfig(), out=tmp_path / "out")
    m = ev.metrics
    assert m["topics"]["image"] == REALSENSE.image and m["topics"]["compressed"]
    assert m["topics"]["truth"] == ["/ground_truth/distance"]
    assert m["frames"] == len(sim_frames) and m["invalid_rate"] == 0.0
    assert m["median_abs_error_m"] < 0.02 and m["spearman"] > 0.9 and m["within_0.5_2x"] >= 0.8
    assert all(math.isfinite(r.reward) and r.truth_m == pytest.approx(s.truth.gap_m[TARGET], abs=1e-6)
               for r, s in zip(ev.result.records, sim_frames))
    for name in ("frames.csv", "metrics.json", "trace.png", "errors.png"):
        assert (ev.out / name).stat().st_size > 0
    counts = _topic_counts(ev.out / "annotated_bag")
    # The bag's own `reward` is kept; the evaluation's goes under eval/.
    assert counts["eval/reward"] == counts["distance/red_can"] == len(sim_frames)
    assert counts[REALSENSE.image] == counts["reward"] == len(sim_frames)


def test_demo_layout_centre_distance(sim_frames: list[Any], tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "demo", sim_frames, DEMO)
    ev = evaluate_bag(bag, select_pair(SpatialRewardConfig(), distance="centre"), out=tmp_path / "out")
    assert ev.metrics["topics"]["truth"] == ["ground_truth"] and not ev.metrics["topics"]["compressed"]
    assert [r.truth_m for r in ev.result.records] == pytest.approx([s.truth.centre_m[TARGET] for s in sim_frames])
    assert ev.metrics["median_rel_error"] < 0.25 and ev.metrics["spearman"] > 0.9


def test_bare_mcap_without_truth_reports_rates_and_null_metrics(sim_frames: list[Any], tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "demo", sim_frames[:4], DEMO_NO_TRUTH)
    (bag / "metadata.yaml").unlink()  # a bare .mcap file is self-describing
    ev = evaluate_bag(next(bag.glob("*.mcap")), SpatialRewardConfig(), out=tmp_path / "out")
    m = ev.metrics
    assert m["topics"]["truth"] == [] and m["frames"] == 4 and m["invalid_rate"] == 0.0 and m["frames_per_s"] > 0
    assert m["mae_m"] is None and m["spearman"] is None and m["within_0.5_2x"] is None
    assert (ev.out / "trace.png").exists() and not (ev.out / "errors.png").exists()


@pytest.mark.parametrize("damage, match", [
    ("missing", "no bag at"),
    ("mcap_half", "truncated"),
    ("no_metadata", "no metadata.yaml"),
    ("garbled_metadata", "cannot read bag .*YAML"),
    ("sqlite_garbage", "cannot read bag .*not a database"),
    ("no_such_topic", r"colour image topic '/nope' \(--image-topic\) is not in the bag; it has: .*camera/color"),
    ("no_images", "cannot tell which topic is the colour image"),
])
def test_bad_bags_raise_bag_error(sim_frames: list[Any], tmp_path: Path, damage: str, match: str) -> None:
    storage = StoragePlugin.SQLITE3 if damage == "sqlite_garbage" else StoragePlugin.MCAP
    bag = write_bag(tmp_path / "bag", sim_frames[:2], DEMO, storage)
    storage_file = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    kwargs: dict[str, Any] = {}
    if damage == "missing":
        bag = tmp_path / "nothing_here"
    elif damage == "mcap_half":
        storage_file.write_bytes(storage_file.read_bytes()[: storage_file.stat().st_size // 2])
    elif damage == "no_metadata":
        (bag / "metadata.yaml").unlink()
    elif damage == "garbled_metadata":
        (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [[\n: :")
    elif damage == "sqlite_garbage":
        storage_file.write_bytes(b"not sqlite at all " * 100)
    elif damage == "no_such_topic":
        kwargs["image_topic"] = "/nope"
    elif damage == "no_images":
        shutil.rmtree(bag)
        with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            writer.write(writer.add_connection("/chatter", "std_msgs/msg/Float32", typestore=TS), 1,
                         TS.serialize_cdr(T["std_msgs/msg/Float32"](data=1.0), "std_msgs/msg/Float32"))
    with pytest.raises(BagError, match=match):
        evaluate_bag(bag, SpatialRewardConfig(), out=tmp_path / "out", **kwargs)


def test_a_bad_frame_is_a_flagged_row_and_the_run_goes_on(sim_frames: list[Any], tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "realsense", sim_frames * 4, REALSENSE, empty_images=frozenset({17}))
    ev = evaluate_bag(bag, SpatialRewardConfig(), out=tmp_path / "out")
    reasons = [r.reason for r in ev.result.records]
    assert len(reasons) == 40 and reasons[17] == "bad_input" and reasons.count("") == 39
    assert ev.metrics["invalid_rate"] == pytest.approx(1 / 40) and ev.metrics["complete"]


def test_a_corrupt_chunk_stops_with_exit_2_naming_the_offset(sim_frames: list[Any], tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from rosbags.rosbag2.storage_mcap import McapReader
    bag = write_bag(tmp_path / "demo", sim_frames * 4, DEMO, zstd=True)
    storage = next(bag.glob("*.mcap"))
    reader = McapReader(storage)
    reader.open()
    chunks = list(reader.chunks)
    reader.close()
    assert len(chunks) >= 3
    bad = chunks[len(chunks) // 2]
    data = bytearray(storage.read_bytes())
    # The chunk record: opcode, length, start and end time, sizes, CRC, compression name; then zstd's frame.
    frame_start = bad.chunk_start_offset + 9 + 8 + 8 + 8 + 4 + 4 + len(bad.compression) + 8
    assert data[frame_start:frame_start + 4] == b"\x28\xb5\x2f\xfd"   # the zstd magic number
    data[frame_start:frame_start + 16] = b"\x00" * 16
    storage.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert main(["eval-bag", str(bag), "--out", str(out)]) == 2
    assert f"byte offset {bad.chunk_start_offset} of {storage.name}" in caplog.text and str(bag) in caplog.text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] is False and "byte offset" in metrics["error"]
    assert 0 < metrics["frames"] < 40 and (out / "frames.csv").exists()


def test_pose_pair_truth_is_the_centre_distance(tmp_path: Path) -> None:
    pose, point = T["geometry_msgs/msg/PoseStamped"], T["geometry_msgs/msg/Point"]
    quat = T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)
    with Writer(tmp_path / "poses", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = [writer.add_connection(t, "geometry_msgs/msg/PoseStamped", typestore=TS) for t in ("/gripper", "/can")]
        for i in range(3):
            for conn, x in zip(conns, (0.0, 0.1 * (i + 1))):
                msg = pose(header=_header(T0_NS + i * PERIOD_NS),
                           pose=T["geometry_msgs/msg/Pose"](position=point(x=x, y=0.0, z=1.0), orientation=quat))
                writer.write(conn, T0_NS + i * PERIOD_NS, TS.serialize_cdr(msg, msg.__msgtype__))
    with open_bag(tmp_path / "poses") as reader:
        truth = load_truth(reader, ("/gripper", "/can"), Pair.parse("yellow gripper -> red can"), DistanceKind.CENTRE,
                           tolerance_ns=PERIOD_NS // 2)
    assert truth is not None and truth.distance_m.tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert truth.at(T0_NS + PERIOD_NS + 1000, 0) == pytest.approx(0.2) and math.isnan(truth.at(0, 0))


def test_live_replay_through_the_node(sim_frames: list[Any], tmp_path: Path, ros_env: dict[str, str]) -> None:
    bag = write_bag(tmp_path / "demo", sim_frames, DEMO)
    from spatialvlm_ros.ros.bag_replay import live_replay   # imports rclpy
    ev = evaluate_bag(bag, SpatialRewardConfig(), out=tmp_path / "out",
                      live=live_replay(rate=2.0, domain_id=int(ros_env["ROS_DOMAIN_ID"])))
    answered = [r for r in ev.result.records if r.reason != "no_output"]
    assert len(ev.result.records) == len(sim_frames)
    assert len(answered) >= 0.9 * len(sim_frames), (tmp_path / "out" / "spatial_reward_node.log").read_text()
    assert ev.metrics["mode"] == "live" and ev.metrics["median_abs_error_m"] < 0.02
    assert all(r.valid and r.latency_ms > 0 for r in answered), ev.result.records


def test_cli_prints_json_last(sim_frames: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag = write_bag(tmp_path / "realsense", sim_frames[:5], REALSENSE)
    assert main(["eval-bag", str(bag), "--out", str(tmp_path / "out"), "--truth-topic", "/ground_truth/distance"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"mae_m", "spearman", "within_0.5_2x", "within_0.75_1.25x", "invalid_rate", "frames_per_s"} <= set(result)
    assert result["frames"] == 5 and result["mae_m"] < 0.02
    assert main(["eval-bag", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2


def test_cli_live_goes_through_the_ros_side(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # --live is dispatched to ros/bag_replay.py, which checks the replay rate before the bag is opened;
    # offline has no replay rate to check, and finds no bag.
    assert main(["eval-bag", str(tmp_path / "missing"), "--live", "--rate", "0"]) == 2
    assert "--rate must be > 0" in caplog.text
    caplog.clear()
    assert main(["eval-bag", str(tmp_path / "missing"), "--rate", "0"]) == 2
    assert "no bag at" in caplog.text and "--rate" not in caplog.text
