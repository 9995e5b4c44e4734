"""The geometric judge: each object and question rule drops what it should and keeps what it should; the card counts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.synthesis.config import JudgeConfig, QuestionsConfig, SynthesisConfig, load_synthesis_config
from spatialvlm_ros.synthesis.engine import run_local
from spatialvlm_ros.synthesis.judge import JudgeCounts, QuestionJudge, object_reasons, object_sigmas
from spatialvlm_ros.synthesis.lifting import LiftedObject
from spatialvlm_ros.synthesis.questions import TYPES_BY_NAME, QAPair, make_qa
from spatialvlm_ros.synthesis.records import Box3D, SceneObject, SceneRecord
from spatialvlm_ros.synthesis.sources import SimSource
from spatialvlm_ros.synthesis.writer import DatasetWriter

CAN = Box3D(centre_m=(0.8, 0.0, 0.061), depth_m=0.066, width_m=0.066, height_m=0.122)
JUDGE = JudgeConfig()
QUESTIONS = QuestionsConfig()


def lifted(**changes: object) -> LiftedObject:
    """A well-measured can 0.8 m away, with ``changes``."""
    base = LiftedObject(points_m=np.zeros((0, 3)), box=CAN, n_points=900, mask_pixels=920, depth_coverage=0.97,
                        fragment_ratio=0.0, border_gap_px=40, depth_median_m=0.8, footprint_m=0.8 / 216,
                        on_support=True)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("reason,bad,good", [
    ("truncated", {"border_gap_px": 0}, {"border_gap_px": 1}),
    ("low_depth_coverage", {"depth_coverage": 0.3}, {"depth_coverage": 0.7}),
    ("fragmented", {"fragment_ratio": 0.6}, {"fragment_ratio": 0.05}),
    ("implausible_size", {"box": dataclasses.replace(CAN, height_m=0.9)},
     {"box": dataclasses.replace(CAN, height_m=0.2)}),
])
def test_each_object_rule_drops_its_case_and_keeps_the_other(reason: str, bad: dict, good: dict) -> None:
    assert object_reasons(lifted(**bad), "red soda can", JUDGE) == (reason,)
    assert object_reasons(lifted(**good), "red soda can", JUDGE) == ()


def test_size_priors_apply_to_known_head_nouns_only() -> None:
    huge = lifted(box=dataclasses.replace(CAN, height_m=0.9))
    assert object_reasons(huge, "tall lamp", JUDGE) == ()             # no prior for lamps
    assert object_reasons(huge, "can", JudgeConfig(size_priors=("can: 0.05-1.0",))) == ()
    with pytest.raises(ConfigError, match=r"judge.size_priors\[0\]"):
        JudgeConfig(size_priors=("can 0.05 0.3",))


def obj(object_id: int, box: Box3D, sigma_centre: float = 0.003, sigma_size: float = 0.004,
        on_support: bool = True, flags: tuple[str, ...] = ()) -> SceneObject:
    return SceneObject(object_id=object_id, name="can", caption="can", reference=f"the can {object_id}", box=box,
                       pixel_centre=(0.0, 0.0), n_points=500, sigma_centre_m=(sigma_centre,) * 3,
                       sigma_size_m=(sigma_size,) * 3, on_support=on_support, flags=flags)


def ask(qtype: str, a: SceneObject, b: SceneObject | None, judge: QuestionJudge, seed: int = 0,
        questions: QuestionsConfig = QUESTIONS) -> QAPair | None:
    pair = make_qa(TYPES_BY_NAME[qtype], a, b, np.random.default_rng(seed), questions)
    assert pair is not None
    return judge.review(pair, a, b)


def test_position_relations_within_their_uncertainty_are_dropped() -> None:
    judge = QuestionJudge(JUDGE)
    a = obj(1, CAN)
    near = obj(2, dataclasses.replace(CAN, centre_m=(0.8, -0.025, 0.061)), sigma_centre=0.015)
    far = obj(3, dataclasses.replace(CAN, centre_m=(0.8, -0.2, 0.061)), sigma_centre=0.015)
    assert ask("predicate_left", a, near, judge) is None               # 2.5 cm apart, sigma 1.5 cm: could flip
    kept = ask("choice_left", a, far, judge)
    assert kept is not None and kept.truth_sigma_m == pytest.approx(np.hypot(0.003, 0.015))
    assert judge.counts.to_json() == {"candidates": 2, "kept": 1, "question:relation_uncertain": 1}


def test_size_relations_within_their_uncertainty_are_dropped() -> None:
    judge = QuestionJudge(JUDGE)
    a = obj(1, CAN)
    slightly = obj(2, dataclasses.replace(CAN, height_m=0.122 * 1.12, centre_m=(0.8, 0.2, 0.068)), sigma_size=0.01)
    clearly = obj(3, dataclasses.replace(CAN, height_m=0.25, centre_m=(0.8, 0.2, 0.125)), sigma_size=0.01)
    assert ask("predicate_tall", slightly, a, judge) is None           # 12% taller, 8% sigma each
    assert ask("classify_tall_short", clearly, a, judge) is not None
    assert judge.counts["question:relation_uncertain"] == 1


def test_quantities_too_uncertain_for_their_value_are_dropped() -> None:
    judge = QuestionJudge(JUDGE)
    hovering = obj(1, dataclasses.replace(CAN, centre_m=(0.8, 0.0, 0.071)), on_support=False, sigma_centre=0.004)
    assert ask("elevation", hovering, None, judge) is None             # 1 cm up, sigma ~4.5 mm
    resting = obj(2, CAN)                                              # on the support: elevation 0, exactly
    kept = ask("elevation", resting, None, judge)
    assert kept is not None and kept.truth_m == 0.0 and kept.truth_sigma_m == 0.0
    assert ask("height", resting, None, judge) is not None
    assert judge.counts.to_json() == {"candidates": 3, "kept": 2, "question:quantity_uncertain": 1}


def test_roundings_too_coarse_for_the_uncertainty_are_dropped() -> None:
    judge = QuestionJudge(JUDGE)
    a = obj(1, CAN, sigma_centre=0.001)
    b = obj(2, dataclasses.replace(CAN, centre_m=(0.8, 0.3, 0.061 + 0.026)), sigma_centre=0.001)
    coarse = QuestionsConfig(imperial_probability=0.0, coarse_probability=1.0)
    # A 2.6 cm vertical offset, sigma 1.4 mm: "3 centimeters" is 15% off, 26% with two sigmas.
    assert ask("vertical_distance", a, b, judge, questions=coarse) is None
    assert judge.counts.to_json() == {"candidates": 1, "question:rounding_too_coarse": 1}
    c = obj(3, dataclasses.replace(CAN, centre_m=(0.8, 0.3, 0.061 + 0.03)), sigma_centre=0.001)
    assert ask("vertical_distance", a, c, judge, questions=coarse) is not None   # "3 centimeters" for 3.0 cm


def test_flag_mode_keeps_pairs_with_their_reasons_and_the_objects_flags() -> None:
    judge = QuestionJudge(JudgeConfig(action="flag"))
    a = obj(1, CAN, flags=("truncated",))
    near = obj(2, dataclasses.replace(CAN, centre_m=(0.8, -0.025, 0.061)), sigma_centre=0.015)
    pair = ask("predicate_left", a, near, judge)
    assert pair is not None and pair.judge_flags == ("truncated", "relation_uncertain")
    assert judge.counts.to_json() == {"candidates": 1, "kept": 1, "question:relation_uncertain": 1}


def test_sigmas_grow_with_distance_and_rest_on_the_support() -> None:
    near_c, near_s = object_sigmas(lifted(), JUDGE)
    far_c, far_s = object_sigmas(lifted(depth_median_m=2.0, footprint_m=2.0 / 216), JUDGE)
    assert far_s[1] > 2 * near_s[1]
    floating = object_sigmas(lifted(on_support=False), JUDGE)[1]
    assert floating[2] > near_s[2]                                     # both ends of its height uncertain
    assert near_c[0] > near_c[1]                                       # the hidden back: along the view


def test_the_card_counts_drops_by_reason(tmp_path: Path) -> None:
    cfg = SynthesisConfig()
    writer = DatasetWriter(tmp_path, cfg)
    scene = SceneRecord(image_id="im", width=4, height=4, canonicalised=True,
                        camera_to_scene=tuple(tuple(r) for r in np.eye(4)), camera_height_m=0.5, objects=())
    rgb = np.zeros((4, 4, 3), np.uint8)
    writer.write_image(rgb, None, scene, [], counts={"objects": 3, "object:truncated": 1, "candidates": 5,
                                                     "kept": 3, "question:relation_uncertain": 2})
    writer.write_image(rgb, None, dataclasses.replace(scene, image_id="im2"), [],
                       counts={"objects": 2, "object:truncated": 1, "object:ambiguous": 1, "candidates": 1, "kept": 1})
    summary = writer.finalize()
    assert summary["judge"] == {"candidates": 6, "kept": 4, "object:ambiguous": 1, "object:truncated": 2,
                                "objects": 5, "question:relation_uncertain": 2}
    card = (tmp_path / "README.md").read_text()
    assert "| object | truncated | 2 |" in card and "| object | ambiguous | 1 |" in card
    assert "| question | relation_uncertain | 2 |" in card and "kept 4 (66.7%)" in card


def test_the_engine_counts_and_writes_the_judge(tmp_path: Path) -> None:
    cfg = load_synthesis_config(overrides={"output": {"parquet": False}})
    summary = run_local(SimSource(2, cfg), tmp_path / "on", cfg)
    counts = JudgeCounts(summary.judge)
    assert counts["exact"] > 0 and counts["kept"] + counts["exact"] == summary.rows
    assert sum(counts.by_reason("question").values()) == counts["candidates"] - counts["kept"]
    per_image = [json.loads(p.read_text()) for p in sorted((tmp_path / "on" / "judge").iterdir())]
    assert len(per_image) == 2 and sum(p["kept"] + p["exact"] for p in per_image) == summary.rows
    rows = [json.loads(line) for line in (tmp_path / "on" / "data.jsonl").read_text().splitlines()]
    assert all(r["judge_flags"] == [] and r["truth_sigma_m"] is not None for r in rows)

    off = dataclasses.replace(cfg, judge=dataclasses.replace(cfg.judge, enabled=False))
    summary_off = run_local(SimSource(2, off), tmp_path / "off", off)
    assert summary_off.judge["candidates"] == summary_off.judge["kept"] == summary_off.rows - counts["exact"]
    assert not JudgeCounts(summary_off.judge).by_reason("question")
