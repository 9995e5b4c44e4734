"""The gripper from the robot's pose: shape models, stamp pairing, the estimator, eval-bag, the sim camera node."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spatialvlm_ros.config import EstimatorConfig, GripperConfig, SimConfig, SpatialRewardConfig, ViewpointConfig
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.estimation import build_estimator
from spatialvlm_ros.geometry.gripper import (
    PRESETS, GripperModel, Part, PosedGripper, matrix_quaternion, model_from_config, parse_parts, quaternion_matrix,
    transform,
)
from spatialvlm_ros.messages.gripper_pose import GripperPoses, StampBuffer, matrix_to_pose_fields
from spatialvlm_ros.sim import TabletopSim
from spatialvlm_ros.types import DistanceKind, NoEstimateReason, Pair

POSE = EstimatorConfig(gripper=GripperConfig(source="pose", model="sim"))


# ------------------------------------------------------------------ shapes

def _brute(part: Part, points: np.ndarray) -> np.ndarray:
    """Unsigned distance to a densely sampled surface."""
    surface = part.surface_samples(0.0005)
    return np.min(np.linalg.norm(points[:, None] - surface[None], axis=2), axis=1)


@pytest.mark.parametrize("part", [
    Part("box", (0.01, -0.02, 0.03), (0.02, 0.01, 0.015)),
    Part("capsule", (0.0, 0.0, 0.0), (0.01,), end=(0.03, 0.01, -0.02)),
    Part("cylinder", (0.0, 0.01, 0.0), (0.015, 0.02)),
], ids=["box", "capsule", "cylinder"])
def test_part_distance_matches_brute_force(part: Part) -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.06, 0.07, size=(300, 3))
    signed, nearest = part.distance(points)
    brute = _brute(part, points)
    np.testing.assert_allclose(np.abs(signed), brute, atol=6e-4)
    np.testing.assert_allclose(np.linalg.norm(points - nearest, axis=1), np.abs(signed), atol=1e-9)
    # Nearest points lie on the surface.
    np.testing.assert_allclose(part.distance(nearest)[0], 0.0, atol=1e-9)


def test_presets_dimensions_and_opening() -> None:
    franka = model_from_config(GripperConfig(model="franka_hand"))
    body, finger = PRESETS["franka_hand"][0]
    assert np.allclose(2 * np.array(body.size), (0.062, 0.204, 0.058))
    assert np.allclose(2 * np.array(finger.size), (0.021, 0.021, 0.053))
    assert franka.max_opening_m == 0.08 and PRESETS["robotiq_2f85"][1] == 0.085
    assert np.isclose(body.centre[2] - body.size[2], -0.1034)          # the flange, 0.1034 m behind the grasp point
    a, b = [p for p in franka.solids(0.05) if p.kind == "box"][1:]
    assert np.isclose(a.centre[1] - a.size[1], 0.025) and np.isclose(b.centre[1] + b.size[1], -0.025)
    widest = [p for p in franka.solids(1.0)][1]
    assert np.isclose(widest.centre[1] - widest.size[1], 0.04)           # clamped to the widest opening
    # The sim model is the simulator's gripper: pads 0.044 apart.
    sim = model_from_config(GripperConfig(model="sim")).solids()
    assert np.isclose(sim[0].centre[1] - sim[0].size[1], 0.022)


def test_offset_maps_the_flange_onto_the_grasp_point() -> None:
    model = model_from_config(GripperConfig(model="franka_hand", offset_xyz=(0.0, 0.0, 0.1034),
                                            offset_rpy=(0.0, 0.0, -np.pi / 4)))
    flange = transform((0.1, 0.0, 0.5), (np.pi, 0.0, 0.0))
    grasp = model.grasp_pose(flange)
    np.testing.assert_allclose(grasp[:3, 3], (0.1, 0.0, 0.5 - 0.1034), atol=1e-12)
    np.testing.assert_allclose(grasp[:3, 2], (0.0, 0.0, -1.0), atol=1e-12)
    posed = PosedGripper(model, flange, 0.0)
    np.testing.assert_allclose(posed.grasp_point, grasp[:3, 3])


def test_custom_parts_and_errors() -> None:
    parts = parse_parts("box 0.03 0.1 0.03 0 0 -0.07; finger box 0.01 0.005 0.02 0 0 -0.01; "
                        "capsule 0.02 0 0 -0.1 0 0 -0.2"
                        "; cylinder 0.02 0.03 0 0 -0.15")
    assert [p.kind for p in parts] == ["box", "box", "capsule", "cylinder"] and parts[1].finger
    model = GripperModel("custom", parts, 0.06)
    assert len(model.solids(0.02)) == 5
    with pytest.raises(ConfigError, match="custom_parts"):
        parse_parts("sphere 0.1")
    with pytest.raises(ConfigError, match="custom_parts"):
        GripperConfig(model="custom")


def test_quaternions_round_trip() -> None:
    rot = transform((0, 0, 0), (0.3, -1.2, 2.5))[:3, :3]
    np.testing.assert_allclose(quaternion_matrix(*matrix_quaternion(rot)), rot, atol=1e-12)


# ------------------------------------------------------------------ pairing

def test_stamp_pairing_and_extrinsic() -> None:
    cfg = GripperConfig(source="pose", pose_tolerance_s=0.01, camera_from_pose_frame_xyz=(0.0, 0.0, 1.0))
    poses = GripperPoses(cfg, capacity=3)
    for k in range(5):
        poses.add_pose(k * 20_000_000, transform((k, 0, 0), (0, 0, 0)))
    assert len(poses.poses) == 3
    from spatialvlm_ros.frame import Frame
    from spatialvlm_ros.geometry.camera import CameraIntrinsics
    intr = CameraIntrinsics(fx=10.0, fy=10.0, cx=1.5, cy=1.5, width=4, height=4)
    frame = Frame(rgb=np.zeros((4, 4, 3), np.uint8), intrinsics=intr, stamp_ns=61_000_000)
    attached = poses.attach(frame)
    np.testing.assert_allclose(attached.gripper_pose[:3, 3], (3.0, 0.0, 1.0))   # pose frame -> camera: z + 1
    assert poses.attach(dataclasses.replace(frame, stamp_ns=130_000_000)).gripper_pose is None   # stale
    assert poses.attach(dataclasses.replace(frame, stamp_ns=0)).gripper_pose is None            # dropped (capacity)
    buf: StampBuffer[int] = StampBuffer(5)
    buf.add(10, 1)
    buf.add(10, 2)
    assert len(buf) == 1 and buf.nearest(10, 0) == 2


# ------------------------------------------------------------------ estimator

@pytest.fixture(scope="module")
def near_contact() -> list[Any]:
    """Last frames of random-viewpoint approaches (training seeds), from behind the target too."""
    steps = []
    for seed in (3, 7, 11):
        cfg = SimConfig(seed=seed, width=320, height=240, n_frames=8, randomise=True, start_gap_m=0.04,
                        end_gap_m=0.003, viewpoint=ViewpointConfig(random=True))
        with TabletopSim(cfg) as sim:
            steps += [(Pair(sim.gripper_label, sim.target_label), sim.render(i)) for i in range(sim.n_frames)]
    return steps


def test_pose_mode_is_exact_near_contact_where_vision_errs(near_contact: list[Any]) -> None:
    errors = {}
    for name, cfg in (("pose", POSE), ("vision", EstimatorConfig())):
        estimator = build_estimator(cfg)
        out = []
        for pair, step in near_contact:
            [e] = estimator.estimate(step.frame, [pair], DistanceKind.GAP)
            out.append(abs(e.distance_m - step.truth.gap_m[pair.target]) if e.valid else np.inf)
        errors[name] = np.array(out)
    assert np.median(errors["pose"]) < 0.002 and np.percentile(errors["pose"], 95) < 0.006
    assert errors["pose"].max() <= errors["vision"].max()
    assert np.median(errors["pose"]) < np.median(errors["vision"])


def test_pose_mode_points_sigma_and_centre(near_contact: list[Any]) -> None:
    pair, step = near_contact[0]
    estimator = build_estimator(POSE)
    [gap] = estimator.estimate(step.frame, [pair], DistanceKind.GAP)
    assert gap.valid and gap.uncertainty_m >= POSE.gripper.pose_sigma_m and "pose" in gap.detail
    assert np.isclose(np.linalg.norm(np.subtract(gap.target_point, gap.gripper_point)), gap.distance_m, atol=1e-9)
    [centre] = estimator.estimate(step.frame, [pair], DistanceKind.CENTRE)
    np.testing.assert_allclose(centre.gripper_point, step.truth.gripper_position_cam, atol=1e-9)
    assert abs(centre.distance_m - step.truth.centre_m[pair.target]) < 0.01


def test_missing_pose_is_flagged_never_guessed(near_contact: list[Any]) -> None:
    pair, step = near_contact[0]
    frame = dataclasses.replace(step.frame, gripper_pose=None)
    [e] = build_estimator(POSE).estimate(frame, [pair], DistanceKind.GAP)
    assert not e.valid and e.reason is NoEstimateReason.NO_GRIPPER_POSE and np.isnan(e.distance_m)
    # A stale pose is not attached, so the same.
    poses = GripperPoses(POSE.gripper)
    poses.add_pose(frame.stamp_ns - 200_000_000, step.truth.gripper_pose_cam)
    [e] = build_estimator(POSE).estimate(poses.attach(frame), [pair], DistanceKind.GAP)
    assert e.reason is NoEstimateReason.NO_GRIPPER_POSE


def test_gym_wrapper_takes_the_pose_from_the_env() -> None:
    import gymnasium as gym

    import spatialvlm_ros.gym  # noqa: F401 - registers the env
    from spatialvlm_ros.gym import SpatialRewardWrapper
    env = gym.make("SpatialVLM/TabletopReach-v0")
    pose, opening = env.unwrapped.gripper_pose()
    assert pose.shape == (4, 4) and opening == pytest.approx(0.044)
    wrapped = SpatialRewardWrapper(env, build_estimator(POSE), "yellow gripper -> red can")
    _obs, info = wrapped.reset(seed=0)
    _obs, _r, _t, _tr, info = wrapped.step(wrapped.action_space.sample())
    assert info["spatial_distance_valid"]
    assert abs(info["spatial_distance_m"] - info["true_distance_m"]) < 0.005
    wrapped.close()


# ------------------------------------------------------------------ eval-bag

def _write_pose_bag(path: Path, seed: int) -> Path:
    """A JPEG bag from a random viewpoint with a PoseStamped of the gripper (in a base frame + extrinsic)."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from spatialvlm_ros.messages.conversions import depth_to_image_fields
    ts = get_typestore(Stores.LATEST)
    t = ts.types
    cfg = SimConfig(seed=seed, width=320, height=240, n_frames=16, randomise=True, start_gap_m=0.25,
                    end_gap_m=0.005, viewpoint=ViewpointConfig(random=True))
    with TabletopSim(cfg) as sim:
        steps = [sim.render(i) for i in range(sim.n_frames)]
    # The pose is published in a frame 1 m in front of the camera, rotated: the extrinsic ties them.
    camera_from_base = transform((0.0, 0.0, 1.0), (0.0, 0.0, 0.5))
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    with writer:
        conns = {name: writer.add_connection(topic, msgtype, typestore=ts) for name, topic, msgtype in (
            ("image", "/camera/color/image_raw/compressed", "sensor_msgs/msg/CompressedImage"),
            ("depth", "/camera/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image"),
            ("info", "/camera/color/camera_info", "sensor_msgs/msg/CameraInfo"),
            ("pose", "/robot/tcp_pose", "geometry_msgs/msg/PoseStamped"),
            ("truth", "/ground_truth/distance", "std_msgs/msg/Float32"))}

        def put(name: str, stamp: int, msg: Any) -> None:
            writer.write(conns[name], stamp, ts.serialize_cdr(msg, msg.__msgtype__))

        for i, step in enumerate(steps):
            stamp = 1_000_000_000 + i * 100_000_000
            sec, nanosec = divmod(stamp, 10**9)
            header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                              frame_id="camera_color_optical_frame")
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(step.frame.rgb, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            image = t["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=jpeg.reshape(-1))
            put("image", stamp, image)
            fields = depth_to_image_fields(step.frame.depth_m, "16UC1")
            put("depth", stamp, t["sensor_msgs/msg/Image"](header=header, **{
                **fields, "data": np.frombuffer(fields["data"], np.uint8)}))
            intr = step.frame.intrinsics
            roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            put("info", stamp, t["sensor_msgs/msg/CameraInfo"](
                header=header, height=intr.height, width=intr.width, distortion_model="plumb_bob", d=np.zeros(5),
                k=intr.k.reshape(-1), r=np.eye(3).reshape(-1),
                p=np.array([intr.fx, 0, intr.cx, 0, 0, intr.fy, intr.cy, 0, 0, 0, 1, 0], float),
                binning_x=0, binning_y=0, roi=roi))
            # The arm's state comes 3 ms after the image.
            pose_stamp = stamp + 3_000_000
            psec, pnsec = divmod(pose_stamp, 10**9)
            (px, py, pz), (qx, qy, qz, qw) = matrix_to_pose_fields(
                np.linalg.inv(camera_from_base) @ step.truth.gripper_pose_cam)
            put("pose", pose_stamp, t["geometry_msgs/msg/PoseStamped"](
                header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=psec, nanosec=pnsec),
                                                frame_id="base"),
                pose=t["geometry_msgs/msg/Pose"](
                    position=t["geometry_msgs/msg/Point"](x=px, y=py, z=pz),
                    orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))))
            put("truth", stamp, t["std_msgs/msg/Float32"](data=step.truth.gap_m["red can"]))
    return path


def test_eval_bag_with_a_pose_topic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import yaml

    from spatialvlm_ros.cli import main
    bag = _write_pose_bag(tmp_path / "bag", seed=5)
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump({"spatial_reward_node": {"ros__parameters": {"estimator": {"gripper": {
        "camera_from_pose_frame_xyz": [0.0, 0.0, 1.0], "camera_from_pose_frame_rpy": [0.0, 0.0, 0.5]}}}}}))
    code = main(["eval-bag", str(bag), "--config", str(config), "--out", str(tmp_path / "out"),
                 "--gripper-pose-topic", "/robot/tcp_pose", "--gripper-model", "sim", "--workers", "1"])
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["invalid_rate"] == 0.0
    assert line["mae_m"] <= 0.01 and line["spearman"] >= 0.99
    # Without the extrinsic the poses are 1 m off: the figures say so (never silently fine).
    code = main(["eval-bag", str(bag), "--out", str(tmp_path / "out2"), "--gripper-pose-topic", "/robot/tcp_pose",
                 "--gripper-model", "sim", "--workers", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mae_m"] > 0.05


def test_eval_bag_flags_frames_without_a_pose_and_names_a_missing_topic(tmp_path: Path) -> None:
    from spatialvlm_ros.bag import evaluate_bag
    from spatialvlm_ros.bag.evaluate import with_gripper_pose
    from spatialvlm_ros.errors import BagError
    bag = _write_pose_bag(tmp_path / "bag", seed=6)
    tight = with_gripper_pose(SpatialRewardConfig(), "/robot/tcp_pose", "sim")
    g = dataclasses.replace(tight.estimator.gripper, pose_tolerance_s=0.001)       # the poses are 3 ms late
    tight = dataclasses.replace(tight, estimator=dataclasses.replace(tight.estimator, gripper=g))
    result = evaluate_bag(bag, tight, out=tmp_path / "out", workers=1)
    assert {r.reason for r in result.result.records} == {"no_gripper_pose"}
    with pytest.raises(BagError, match="not in the bag"):
        evaluate_bag(bag, with_gripper_pose(SpatialRewardConfig(), "/nope"), out=tmp_path / "out2", workers=1)


# ------------------------------------------------------------------ ROS

def test_sim_camera_node_publishes_the_pose_and_the_node_uses_it(start_node: Any, test_node: Any) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped

    from spatialvlm_ros.messages.conversions import stamp_to_ns
    from spatialvlm_ros.messages.gripper_pose import pose_to_matrix
    test_node.collect(DiagnosticArray, "estimates")
    test_node.collect(DiagnosticArray, "ground_truth")
    test_node.collect(PoseStamped, "gripper/pose")
    reward = start_node("spatial_reward_node", "-p", "qos.reliability:=reliable", "-p",
                        "estimator.gripper.source:=pose", "-p", "estimator.gripper.model:=sim")
    test_node.wait_for(lambda: test_node.node.count_publishers("estimates") > 0 or not reward.alive(), 30,
                       "spatial_reward_node to come up")
    assert reward.alive(), reward.log
    sim = start_node("sim_camera_node", "-p", "sim.n_frames:=12", "-p", "sim.width:=320", "-p", "sim.height:=240",
                     "-p", "rate_hz:=6.0", "-p", "start_delay_s:=2.0")
    assert sim.proc.wait(timeout=60) == 0, sim.log
    test_node.wait_for(lambda: len(test_node.received("estimates")) >= 11, 10, "estimates of the last frames")
    poses = {stamp_to_ns(m.header.stamp): m for m in test_node.received("gripper/pose")}
    truth = {stamp_to_ns(m.header.stamp): float(next(v.value for v in m.status[0].values if v.key == "gap_m"))
             for m in test_node.received("ground_truth") if m.status[0].name == "red can"}
    # The reward node's valid estimates below prove the poses crossed over DDS. This test's own subscription
    # to gripper/pose is matched late in some runs on a loaded machine (0 of 12 received, while estimates and
    # ground truth arrive), so what it did receive is checked, not how much.
    assert all(m.header.frame_id == "camera_color_optical_frame" for m in poses.values())
    assert all(np.isfinite(pose_to_matrix(m.pose)).all() for m in poses.values())
    errors = []
    for i, msg in enumerate(test_node.received("estimates")):
        values = {v.key: v.value for v in msg.status[0].values}
        stamp = stamp_to_ns(msg.header.stamp)
        if i == 0 and values["reason"] == "no_camera_info":
            continue   # the first image can beat the first camera_info, which the sim publishes after it
        if stamp in truth:
            assert values["valid"] == "True", (values["reason"], msg.status[0].message)
            errors.append(abs(float(values["distance_m"]) - truth[stamp]))
    assert len(errors) >= 8 and np.median(errors) < 0.003   # of 12 frames; a truth message can be late
