"""The data engine end to end: canonical frame, lifting against simulator truth, CLI, resume, determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from spatialvlm_ros.cli import main
from spatialvlm_ros.errors import InputError, SimulationError
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.geometry.plane import fit_plane
from spatialvlm_ros.geometry.pointcloud import backproject
from spatialvlm_ros.synthesis.config import LiftingConfig, SynthesisConfig, load_synthesis_config
from spatialvlm_ros.synthesis.engine import run_local, synthesize_image
from spatialvlm_ros.synthesis.extract import SceneExtractor, image_rng
from spatialvlm_ros.synthesis.lifting import support_frame
from spatialvlm_ros.synthesis.records import Box3D, SceneRecord
from spatialvlm_ros.sim import TabletopSim
from spatialvlm_ros.synthesis.sources import (OFF_PATH_MAX_GAP_M, SimSource, off_path_position, open_source,
                                              zoomed)


#: Rows a sim image yields with the default settings: the sampled questions and the exact gripper-distance ones.
ROWS_PER_IMAGE = SynthesisConfig().questions.per_image + SynthesisConfig().questions.exact_per_image


def wall_and_table(width: int = 64, height: int = 48) -> tuple[np.ndarray, np.ndarray, CameraIntrinsics]:
    """A wall 1 m ahead fills the top 75% of the image; a table 0.3 m below the camera fills the rest."""
    cam = CameraIntrinsics(fx=50.0, fy=50.0, cx=(width - 1) / 2, cy=(height - 1) / 2, width=width, height=height)
    depth = np.full((height, width), 1.0, dtype=np.float32)
    rows = np.arange(height)
    table_rows = rows >= int(0.75 * height)
    depth[table_rows] = (0.3 * cam.fy / (rows[table_rows] - cam.cy))[:, None]   # optical y = 0.3 on the table
    support = np.zeros((height, width), dtype=bool)
    support[table_rows] = True
    return depth, support, cam


def test_plane_is_fitted_on_support_pixels_only() -> None:
    depth, support, cam = wall_and_table()
    everything = backproject(depth, np.ones_like(support), cam)
    whole_scene = fit_plane(everything)
    assert abs(whole_scene.normal[2]) > 0.99            # a whole-scene RANSAC picks the wall
    frame = support_frame(depth, support, cam, LiftingConfig(plane_min_pixels=50), np.random.default_rng(0))
    assert frame is not None
    assert np.allclose(frame.up, [0.0, -1.0, 0.0], atol=1e-6)
    assert frame.camera_height_m == pytest.approx(0.3, abs=1e-6)
    assert np.allclose(frame.forward, [0.0, 0.0, 1.0], atol=1e-6)


def test_without_support_pixels_the_scene_is_not_canonicalised() -> None:
    depth, support, cam = wall_and_table()
    assert support_frame(depth, None, cam, LiftingConfig(), np.random.default_rng(0)) is None
    assert support_frame(depth, support & False, cam, LiftingConfig(), np.random.default_rng(0)) is None


@pytest.fixture(scope="module")
def sim_scene() -> tuple[SceneRecord, dict[str, np.ndarray], dict[str, str], float]:
    from spatialvlm_ros.sim import TabletopSim
    cfg = SynthesisConfig()
    source = SimSource(2, cfg)
    sample = source.load("sim000001")
    record = SceneExtractor(cfg).extract(sample, image_rng(cfg.seed, "sim000001")).record
    with TabletopSim(source.scene_config(1)) as sim:
        truth = sim.truth(0)
        kinds = {o.phrase: o.kind for o in sim.layout.objects}
    return record, dict(truth.object_positions_world), kinds, float(truth.camera_pose_world[2, 3])


def test_sim_scene_boxes_match_the_ground_truth(sim_scene) -> None:
    from spatialvlm_ros.sim.scene import HALF_HEIGHT, TABLE_TOP_Z
    record, positions, kinds, camera_z = sim_scene
    assert record.canonicalised
    assert record.camera_height_m == pytest.approx(camera_z - TABLE_TOP_Z, abs=0.03)
    on_table = [o for o in record.objects if o.name in positions]
    assert len(on_table) >= 2
    for obj in on_table:
        kind, true_height = kinds[obj.name], 2 * HALF_HEIGHT[kinds[obj.name]]
        if kind in ("can", "box"):                       # vertical sides: fully visible from top to table
            assert obj.box.height_m == pytest.approx(true_height, abs=0.015), obj.name   # along up, not the width
            assert obj.box.bottom_m == pytest.approx(0.0, abs=0.015), obj.name
        else:                                            # a ball's or bowl's underside is hidden from the camera
            assert 0.6 * true_height <= obj.box.height_m <= true_height + 0.015, obj.name
    for a, b in zip(on_table, on_table[1:]):
        true = np.linalg.norm(positions[a.name] - positions[b.name])
        est = np.linalg.norm(np.subtract(a.box.centre_m, b.box.centre_m))
        # Visible-surface centres sit a few cm towards the camera; a x10 scaling would be far outside.
        assert est == pytest.approx(true, abs=0.06), (a.name, b.name)


def run(out: Path, *extra: str, n: int = 3) -> dict:
    assert main(["synthesize", "--input", f"sim:{n}", "--out", str(out), *extra]) == 0
    return json.loads((out / "README.md").parent.joinpath("data.jsonl").read_text().splitlines()[0])


def test_cli_end_to_end_resume_and_determinism(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    run(out)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["processed"] == 3 and summary["images"] == 3 and summary["rows"] == 3 * ROWS_PER_IMAGE
    assert sum(summary["per_type"].values()) == summary["rows"]
    for sub, suffix in (("images", ".png"), ("scenes", ".json"), ("qa", ".jsonl")):
        assert sorted(p.name for p in (out / sub).iterdir()) == [f"sim00000{i}{suffix}" for i in range(3)]
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * ROWS_PER_IMAGE and rows[0]["messages"][0]["content"][1]["text"] == rows[0]["question"]
    assert all(r["images"] == [f"images/{r['image_id']}.png"] for r in rows)
    scene = SceneRecord.from_json(json.loads((out / "scenes" / "sim000000.json").read_text()))
    assert SceneRecord.from_json(scene.to_json()) == scene
    card = (out / "README.md").read_text()
    assert "| distance |" in card and f"question-answer rows: {3 * ROWS_PER_IMAGE}" in card
    first = (out / "data.jsonl").read_bytes()

    run(out)                                                      # resume: nothing to do
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == 3
    (out / "done" / "sim000001").unlink()                         # as if interrupted mid-image
    run(out)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["processed"] == 1
    assert (out / "data.jsonl").read_bytes() == first

    other = tmp_path / "again"
    run(other)
    assert (other / "data.jsonl").read_bytes() == first          # deterministic for the seed
    assert main(["synthesize", "--input", "sim:3", "--out", str(out), "--seed", "5"]) == 2   # other settings


def test_parquet_loads_with_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("pyarrow")
    run(tmp_path, n=1)
    table = datasets.load_dataset("parquet", data_files=str(tmp_path / "data.parquet"), split="train")
    assert table.num_rows == ROWS_PER_IMAGE and table[0]["messages"][1]["role"] == "assistant"


def test_malformed_sim_input_says_what_is_expected() -> None:
    with pytest.raises(InputError, match="expected sim:N"):
        open_source("sim:many", SynthesisConfig())


def test_point_clouds_are_saved_in_the_scene_frame_on_request(tmp_path: Path) -> None:
    cfg = load_synthesis_config(overrides={"output": {"save_point_clouds": True, "parquet": False}})
    out = tmp_path / "ds"
    run_local(SimSource(1, cfg), out, cfg)
    scene = json.loads((out / "scenes" / "sim000000.json").read_text())
    with np.load(out / "clouds" / "sim000000.npz") as clouds:
        assert sorted(clouds.files) == sorted(str(o["object_id"]) for o in scene["objects"])
        for obj in scene["objects"]:
            saved = clouds[str(obj["object_id"])]
            assert saved.dtype == np.float32 and len(saved) >= obj["n_points"]   # its pixels, then edge points
            cloud = saved.astype(np.float64)
            # The saved cloud is the one the 3D box was fitted to: the box holds it and touches it.
            box = Box3D(**{**obj["box"], "centre_m": tuple(obj["box"]["centre_m"])})
            c, s = np.cos(box.yaw_rad), np.sin(box.yaw_rad)
            local = (cloud[:, :2] - box.centre_m[:2]) @ np.array([[c, -s], [s, c]])
            half = np.array([box.depth_m, box.width_m]) / 2
            np.testing.assert_allclose(np.abs(local).max(axis=0), half, atol=1e-4)
            assert cloud[:, 2].max() == pytest.approx(box.centre_m[2] + box.height_m / 2, abs=1e-5)
            assert cloud[:, 2].min() >= box.bottom_m - 1e-5


def test_sim_scenes_near_contact_get_exact_gripper_gap_questions() -> None:
    """The reach reward's question near contact: answered with the simulator's gap, not dropped by the judge."""
    cfg = load_synthesis_config()
    # On the approach line the gripper stands at the scene's drawn gap, which the rows must then say.
    cfg = dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, off_path_share=0.0))
    source = SimSource(40, cfg)
    near = [i for i in range(40) if source.scene_config(i).start_gap_m < 0.05][:2]
    assert near, "the split puts 30% of scenes within 5 cm"
    extractor = SceneExtractor(cfg)
    for index in near:
        result = synthesize_image(source, extractor, f"sim{index:06d}")
        exact = [p for p in result.pairs if p.exact_truth]
        assert len(exact) == cfg.questions.exact_per_image
        assert {p.question_type for p in exact} == {"gap", "distance"} and all(p.truth_sigma_m == 0 for p in exact)
        names = {o.object_id: o.name for o in result.scene.objects}
        gripper = source.scene_config(index).gripper_colour + " gripper"
        assert all(names[p.object_ids[0]] == gripper for p in exact)
        gaps = {names[p.object_ids[1]]: p.truth_m for p in exact if p.question_type == "gap"}
        target = " ".join((source.scene_config(index).target_colour, source.scene_config(index).target))
        if target in gaps:     # the simulator placed the gripper at the drawn gap (its trajectory solver: 10 um)
            assert gaps[target] == pytest.approx(max(source.scene_config(index).start_gap_m, 0.0), abs=1e-4)
        assert result.counts["exact"] == len(exact)
    none = dataclasses.replace(cfg, questions=dataclasses.replace(cfg.questions, exact_per_image=0))
    result = synthesize_image(SimSource(40, none), SceneExtractor(none), f"sim{near[0]:06d}")
    assert result.pairs and not [p for p in result.pairs if p.exact_truth]


def test_off_path_scenes_move_only_the_gripper_and_say_its_new_gaps() -> None:
    """Off-path scenes: same scene draws, the gripper elsewhere (not aimed), and rows that say where it is."""
    cfg = load_synthesis_config()
    on, off = (dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, off_path_share=share)) for share in (0.0, 1.0))
    moved = 0
    for index in range(3):
        image_id = f"sim{index:06d}"
        aimed, wandered = SimSource(3, on, split="around"), SimSource(3, off, split="around")
        a, b = aimed.load(image_id), wandered.load(image_id)
        assert set(a.exact.gap_m) == set(b.exact.gap_m)
        config = aimed.scene_config(index)
        target = f"{config.target_colour} {config.target}"
        assert a.exact.gap_m[target] == pytest.approx(config.start_gap_m, abs=1e-4)
        if not np.array_equal(a.frame.rgb, b.frame.rgb):
            moved += 1
            assert 0.0 <= b.exact.gap_m[target] <= OFF_PATH_MAX_GAP_M + 1e-4
            assert min(b.exact.gap_m.values()) >= -1e-6          # inside no object
            assert b.frame.gripper_pose is not None and not np.allclose(b.frame.gripper_pose[:3, 3],
                                                                        a.frame.gripper_pose[:3, 3])
            # The rows must describe the rendered pose: recompute the truth from the frame's gripper pose alone.
            with TabletopSim(config) as sim:
                grasp_world = (sim.truth(0).camera_pose_world @ b.frame.gripper_pose)[:3, 3]
                truth = sim.truth_at(grasp_world)
            result = synthesize_image(wandered, SceneExtractor(off), image_id)
            names = {o.object_id: o.name for o in result.scene.objects}
            exact = [r for r in result.pairs if r.exact_truth]
            assert exact
            for row in exact:
                other = names[row.object_ids[1]]
                expected = max(truth.gap_m[other], 0.0) if row.question_type == "gap" else truth.centre_m[other]
                assert row.truth_m == pytest.approx(expected, abs=1e-6)
    assert moved >= 2, "an off-path pose fits in almost every scene"
    plain = [SimSource(1, c, split="plain").load("sim000000").frame.rgb for c in (on, off)]
    np.testing.assert_array_equal(*plain)        # sim-plain keeps the scenes drawn before off-path poses


def test_off_path_position_is_clear_of_everything_and_not_aimed_at_the_target() -> None:
    """The pose itself: the drawn gap to the target, clear of other objects and the table, off the approach line."""
    config = SimSource(1, load_synthesis_config(), split="around").scene_config(0)
    angles = []
    with TabletopSim(config) as sim:
        centre = sim.truth(0).object_positions_world[sim.target_label]
        for k in range(6):
            position = off_path_position(sim, 1.0, np.random.default_rng(k))
            assert position is not None
            truth = sim.truth_at(position)
            assert 0.0 <= truth.gap_m[sim.target_label] <= OFF_PATH_MAX_GAP_M + 1e-4
            assert min(truth.gap_m.values()) >= -1e-6 and sim.scenery_gap() >= 0.005
            to_target = (centre - position) / np.linalg.norm(centre - position)
            fingers = truth.camera_pose_world[:3, :3] @ truth.gripper_pose_cam[:3, 2]   # gripper z: where they point
            angles.append(np.degrees(np.arccos(np.clip(to_target @ fingers, -1, 1))))
        assert off_path_position(sim, 0.0, np.random.default_rng(0)) is None
        for direction, gap in ((np.zeros(3), 0.02), (np.array([1.0, 0.0, np.nan]), 0.02), (np.ones(3), np.nan)):
            with pytest.raises(SimulationError, match="finite"):
                sim.position_at_gap(direction, gap)
    assert max(angles) > 30.0, f"the gripper should not always be aimed at the target: {angles}"


def test_cli_exact_per_image_overrides_the_config(tmp_path: Path, capsys) -> None:
    """``--exact-per-image 0`` makes the data of VLM stages 1-3: the sampled questions only."""
    assert main(["synthesize", "--input", "sim:1", "--out", str(tmp_path / "ds"), "--exact-per-image", "0"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (tmp_path / "ds" / "data.jsonl").read_text().splitlines()]
    assert summary["rows"] == len(rows) == SynthesisConfig().questions.per_image
    assert not any(r["exact_truth"] for r in rows)
    assert main(["synthesize", "--input", "sim:1", "--out", str(tmp_path / "bad"), "--exact-per-image", "-1"]) == 2
    assert main(["synthesize", "--input", "sim:1", "--out", str(tmp_path / "bad"), "--off-path-share", "1.5"]) == 2


def test_sim_kinds_and_colours_choose_what_scenes_are_drawn_from(tmp_path: Path) -> None:
    """``sim.kinds`` / ``sim.colours``: the default draws the shipped model's scenes; others draw only theirs."""
    from spatialvlm_ros.errors import ConfigError
    from spatialvlm_ros.sim import COLOURS, KINDS
    default, explicit = SynthesisConfig(), SynthesisConfig()
    explicit = dataclasses.replace(explicit, sim=dataclasses.replace(explicit.sim, kinds=KINDS, colours=tuple(COLOURS)))
    assert [SimSource(8, default).scene_config(i) for i in range(8)] == \
        [SimSource(8, explicit).scene_config(i) for i in range(8)]
    new = dataclasses.replace(default, sim=dataclasses.replace(default.sim, kinds=("mug", "bottle", "cone", "wedge"),
                                                               colours=("grey", "pink", "brown")))
    drawn = [SimSource(20, new).scene_config(i) for i in range(20)]
    phrases = {p for c in drawn for p in (f"{c.target_colour} {c.target}", *c.distractors)}
    assert {p.split()[1] for p in phrases} == {"mug", "bottle", "cone", "wedge"}
    assert {p.split()[0] for p in phrases} | {c.gripper_colour for c in drawn} == {"grey", "pink", "brown"}
    for kinds, colours, why in ((("spoon",), (), r"sim.kinds: \['spoon'\] unknown"),
                                ((), ("red", "teal"), r"sim.colours: \['teal'\] unknown"),
                                (("can",), ("red", "blue"), "2 phrases for up to 6 objects")):
        bad = dataclasses.replace(default, sim=dataclasses.replace(default.sim, kinds=kinds, colours=colours))
        with pytest.raises(ConfigError, match=why):
            SimSource(2, bad)
    with pytest.raises(ConfigError, match="sim.colours"):
        dataclasses.replace(default.sim, colours=("red",))
    out = tmp_path / "more"
    assert main(["synthesize", "--input", "sim:3", "--out", str(out), "--kinds", "all", "--colours", "grey",
                 "pink"]) == 0
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    used = json.loads((out / "synthesis_config.json").read_text())["sim"]
    assert used["kinds"] == ["can", "box", "ball", "bowl", "mug", "bottle", "cone", "wedge"]
    assert used["colours"] == ["grey", "pink"] and rows
    words = {w for r in rows for w in r["question"].lower().replace("?", " ").replace(",", " ").split()}
    assert {"grey", "pink"} & words and not {"red", "blue", "yellow", "green", "white", "black"} & words


def test_zoomed_scenes_are_windows_of_the_whole_frame_around_the_gripper_and_target() -> None:
    """zoom_share: the same render, cut to the second look's window; the rows still hold for the window."""
    cfg = load_synthesis_config()
    whole_cfg, zoom_cfg = (dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, zoom_share=share))
                           for share in (0.0, 1.0))
    whole_source, zoom_source = SimSource(3, whole_cfg), SimSource(3, zoom_cfg)
    narrower = 0
    for index in range(3):
        image_id = f"sim{index:06d}"
        whole, cut = whole_source.load(image_id), zoom_source.load(image_id)
        assert cut.exact == whole.exact
        w, h = cut.frame.intrinsics.width, cut.frame.intrinsics.height
        assert abs(w * 240 - h * 320) <= 320 and w >= 128          # the image's aspect, native pixels
        x0 = round(whole.frame.intrinsics.cx - cut.frame.intrinsics.cx)
        y0 = round(whole.frame.intrinsics.cy - cut.frame.intrinsics.cy)
        np.testing.assert_array_equal(cut.frame.rgb, whole.frame.rgb[y0:y0 + h, x0:x0 + w])
        target = zoom_source.scene_config(index)
        label = cut.frame.labels[f"{target.target_colour} {target.target}"]
        for obj in (0, label):             # the gripper and the target are in the window
            assert (cut.frame.segmentation == obj).any()
        narrower += w < 320
        result = synthesize_image(zoom_source, SceneExtractor(zoom_cfg), image_id)
        assert result.rgb.shape == (h, w, 3) and result.pairs
    assert narrower >= 2, "the window is narrower than the frame in almost every scene"
    # Share 0 is the data engine as it was: the frame itself, and no other draw of the scene moves.
    frame = whole_source.load("sim000000").frame
    assert zoomed(frame, ("yellow gripper", "red can"), 0.0, np.random.default_rng(0)) is frame
    assert frame.rgb.shape == (240, 320, 3)


def test_wrist_scenes_are_seen_from_the_camera_on_the_gripper(tmp_path: Path) -> None:
    """wrist_share: the same scene and truth from the wrist camera; the hand is whole in view and asked about."""
    cfg = load_synthesis_config()
    scene_cfg, wrist_cfg = (dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, wrist_share=share))
                            for share in (0.0, 1.0))
    scene_source, wrist_source = SimSource(4, scene_cfg), SimSource(4, wrist_cfg)
    exact_rows = 0
    for index in range(4):
        image_id = f"sim{index:06d}"
        scene, wrist = scene_source.load(image_id), wrist_source.load(image_id)
        assert wrist.exact == scene.exact                   # the same scene and gripper pose
        assert (scene.frame.frame_id, wrist.frame.frame_id) == ("camera_color_optical_frame",
                                                                "camera1_color_optical_frame")
        assert not np.array_equal(wrist.frame.rgb, scene.frame.rgb)
        rows, cols = np.nonzero(wrist.frame.segmentation == 0)
        height, width = wrist.frame.segmentation.shape
        assert rows.mean() > height / 2 and min(rows.min(), cols.min(), width - 1 - cols.max()) > 0
        result = synthesize_image(wrist_source, SceneExtractor(wrist_cfg), image_id)
        exact_rows += sum(p.exact_truth for p in result.pairs)
    assert exact_rows >= 4, "the hand is extracted and asked about in wrist views"
    assert main(["synthesize", "--input", "sim:1", "--out", str(tmp_path / "bad"), "--wrist-share", "1.5"]) == 2
