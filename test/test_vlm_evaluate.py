"""``spatialvlm evaluate`` end to end against real local chat-completions servers that answer from the truth."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import threading
from email.message import Message
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
from chat_server import ChatCompletionsServer, completion

from spatialvlm_ros.cli.vlm import add_evaluate_arguments, evaluate_cli, synthesize_held_out
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.evaluation.vlm_benchmark import (
    EVAL_SEED_OFFSET, MIN_BAND_TRUTH_M, EvalQuestion, approach_trajectories, ask_questions, check_held_out,
    decide_label, evaluate_vlm, held_out_seed, load_questions,
)
from spatialvlm_ros.synthesis.questions import CLASSIFY_PAIRS, TYPES_BY_NAME
from spatialvlm_ros.vlm import VLMAnswer, VLMError, build_vlm, distance_question, parse_answer
from spatialvlm_ros.config import OpenAIVLMConfig, VLMConfig
from spatialvlm_ros.vlm.labels import which_object, which_relation, yes_no
from spatialvlm_ros.vlm.templates import RELATION_WORDS

FRAMES = 5


def _digest(bgr: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(bgr).tobytes()).hexdigest()


class TruthServer(ChatCompletionsServer):
    """An OpenAI-compatible server that knows the truth of every (image, question) it was told about.

    ``oracle`` answers right: a qualitative row with the data engine's own answer text, a quantity with
    the exact truth (a difference signed, "-0.1 m"). ``noisy`` answers wrong on purpose: the opposite
    qualitative answer and 1.6x every distance. Dataset folders in ``roots`` are indexed when a request
    misses, so a set synthesised during the call under test is known too.
    """

    def __init__(self) -> None:
        self.mode = "oracle"
        self.truth: dict[tuple[str, str], dict[str, Any]] = {}
        self.roots: list[Path] = []
        self.lock = threading.Lock()
        super().__init__()

    def reply(self, path: str, headers: Message, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        content = body["messages"][-1]["content"]
        question = next(c["text"] for c in content if c["type"] == "text")
        url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
        png = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
        return 200, completion(self.answer(_digest(cv2.imdecode(png, cv2.IMREAD_COLOR)), question))

    def index(self, root: Path) -> None:
        images: dict[str, str] = {}
        for line in (root / "data.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row["images"][0] not in images:
                images[row["images"][0]] = _digest(cv2.imread(str(root / row["images"][0]), cv2.IMREAD_COLOR))
            self.truth[(images[row["images"][0]], row["question"])] = row

    def add_trajectories(self, count: int, frames: int, seed: int) -> None:
        for t in approach_trajectories(count, frames, seed):
            for rgb, truth in zip(t.images, t.truth_m):
                key = (_digest(rgb[..., ::-1]), distance_question(t.pair, t.kind))
                self.truth[key] = {"qualitative": False, "family": "quantity", "truth_m": truth}

    def answer(self, digest: str, question: str) -> str:
        with self.lock:
            if (digest, question) not in self.truth:
                for root in self.roots:
                    if (root / "data.jsonl").exists():
                        self.index(root)
            row = self.truth[(digest, question)]
        noisy = self.mode == "noisy"
        if not row["qualitative"]:
            value = row["truth_m"] if row["family"] == "difference" else abs(row["truth_m"])
            return f"About {1.6 * value if noisy else value:.9f} meters."
        if not noisy:
            return row["answer"]
        if row["family"] == "predicate":
            return "No." if row["truth_label"] == "yes" else "Yes."
        if row["family"] == "choice":
            chosen = row["object_ids"].index(int(row["truth_label"]))
            return f"{row['object_references'][1 - chosen]}."
        pair = CLASSIFY_PAIRS[TYPES_BY_NAME[row["question_type"]].relation]
        other = pair[1] if row["truth_label"] == pair[0] else pair[0]
        return RELATION_WORDS[other]["short"][0].capitalize() + "."


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize_held_out(tmp_path_factory.mktemp("eval") / "data", 3, held_out_seed(1))


@pytest.fixture(scope="module")
def server(dataset: Path) -> Iterator[TruthServer]:
    truth = TruthServer()
    truth.index(dataset)
    truth.add_trajectories(1, FRAMES, held_out_seed(1))
    yield truth
    truth.close()


def _vlm(server: TruthServer) -> Any:
    return build_vlm(VLMConfig(backend="openai", openai=OpenAIVLMConfig(url=server.url, model="truth", timeout_s=10.0)))


def test_oracle_scores_perfectly(server: TruthServer, dataset: Path) -> None:
    server.mode = "oracle"
    report = evaluate_vlm(_vlm(server), dataset, trajectories=1, frames=FRAMES, seed=held_out_seed(1), batch_size=16)
    m = report.metrics
    assert (m["qualitative_accuracy"], m["number_rate"], m["within_0.5_2x"], m["within_0.75_1.25x"]) == (1, 1, 1, 1)
    assert m["spearman"] == pytest.approx(1.0)
    assert m["qualitative_answers"] > 10 and m["quantitative_answers"] > 10 and m["failed_requests"] == 0
    exact = m["exact_gripper"]
    sampled = sum(t["n"] for t in m["per_type"].values())
    assert m["answers"] == len(load_questions(dataset)) == sampled + exact["all"]["n"]
    assert exact["gap"]["n"] > 0 and exact["all"]["n"] == exact["gap"]["n"] + exact["distance"]["n"]
    assert exact["all"]["within_0.75_1.25x"] == 1 and exact["all"]["median_abs_error_m"] == pytest.approx(0, abs=1e-3)
    assert all(t.get("accuracy", 1) == 1 and t.get("number_rate", 1) == 1 for t in m["per_type"].values())
    # A difference the truth signs negative was answered "-0.1 m": read as its magnitude.
    assert any(r.question.family == "difference" and r.question.truth_m < 0 and r.has_number for r in report.answers)


def test_noisy_answers_miss_as_designed(server: TruthServer, dataset: Path) -> None:
    server.mode = "noisy"
    try:
        report = evaluate_vlm(_vlm(server), dataset, trajectories=1, frames=FRAMES, seed=held_out_seed(1))
    finally:
        server.mode = "oracle"
    m = report.metrics
    assert (m["qualitative_accuracy"], m["number_rate"], m["within_0.5_2x"], m["within_0.75_1.25x"]) == (0, 1, 1, 0)
    assert m["undecided_answers"] == 0                    # wrong, not unreadable
    assert m["spearman"] == pytest.approx(1.0)            # 1.6x keeps the order
    excluded = sum(abs(r.question.truth_m) < MIN_BAND_TRUTH_M for r in report.answers if not r.question.qualitative)
    assert m["band_excluded"] == excluded


def test_cli_synthesises_a_held_out_set_and_ends_with_json(server: TruthServer, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    server.roots.append(out / "dataset")
    server.add_trajectories(1, 3, held_out_seed(2))
    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    args = parser.parse_args(["--backend", "openai", "--url", server.url, "--model", "truth", "--scenes", "2",
                              "--seed", "2", "--trajectories", "1", "--frames", "3", "--out", str(out)])
    assert evaluate_cli(args) == 0
    stdout = capsys.readouterr().out
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert "SpatialVLM" in stdout and "75.2%" in stdout
    for key in ("qualitative_accuracy", "number_rate", "within_0.5_2x", "within_0.75_1.25x", "spearman"):
        assert summary[key] == pytest.approx(1.0), key
    assert summary["per_type"] and summary["answers"] > 0 and summary["trajectory_frames"] == 3
    assert json.loads((out / "dataset" / "synthesis_config.json").read_text())["seed"] == EVAL_SEED_OFFSET + 2
    assert json.loads((out / "metrics.json").read_text()) == summary
    assert len((out / "answers.csv").read_text().splitlines()) == summary["answers"] + 1
    assert len((out / "trajectories.csv").read_text().splitlines()) == 4


# ---------------------------------------------------------------------------------------------
# Answer matching
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Yes.", "yes"), ("yes", "yes"), ("**Yes**, it is.", "yes"), ("Correct, the can is left of the cup.", "yes"),
    ("Indeed.", "yes"), ("That's right: it is.", "yes"), ("That\u2019s right.", "yes"), ("No.", "no"),
    ("Incorrect, it is not.", "no"), ("Not really: it is lower.", "no"), ("It isn't.", "no"), ("Nope", "no"),
    ("<think>Yes? Let me check the depth.</think>No.", "no"), ("<answer>yes</answer>", "yes"),
    ("<think>Yes, clearly", None), ("Maybe.", None), ("", None),
])
def test_yes_no(text: str, expected: str | None) -> None:
    assert yes_no(text) == expected


def test_yes_no_ignores_words_inside_references() -> None:
    assert yes_no("The no-entry sign is.", ["the no-entry sign"]) is None


REFS = ("the little red tin can that's more to the right of the image",
        "the tin can that's more to the left of the image")


@pytest.mark.parametrize("text, expected", [
    ("The little red tin can that's more to the right of the image.", 0),
    ("It is the tin can that's more to the left of the image.", 1),
    ("The tin can that's more to the left of the image is further left than the little red tin can that's more "
     "to the right of the image.", 1),
    ("The little red one.", 0), ("The can on the left.", 1), ("Neither.", None),
])
def test_which_object(text: str, expected: int | None) -> None:
    assert which_object(text, REFS) == expected


@pytest.mark.parametrize("text, refs, expected", [
    ("The red can.", ("the can", "the red can"), 1), ("The can.", ("the can", "the red can"), 0),
    ("The ball.", ("the red ball", "the blue box"), 0), ("Both.", ("the can", "the can"), None),
])
def test_which_object_prefers_whole_distinct_references(text: str, refs: tuple[str, str], expected: int | None) -> None:
    assert which_object(text, refs) == expected


@pytest.mark.parametrize("text, relations, expected", [
    ("Left.", ("left", "right"), "left"), ("It is to the right of it.", ("left", "right"), "right"),
    ("In front.", ("behind", "front"), "front"), ("Further back.", ("behind", "front"), "behind"),
    ("It is of lesser height than the box.", ("tall", "short"), "short"), ("Taller.", ("tall", "short"), "tall"),
    ("It is not taller.", ("tall", "short"), "short"), ("The box isn't wider.", ("wide", "thin"), "thin"),
    ("Larger than the ball.", ("big", "small"), "big"), ("Lower.", ("above", "below"), "below"),
    ("I cannot tell.", ("left", "right"), None),
])
def test_which_relation(text: str, relations: tuple[str, str], expected: str | None) -> None:
    assert which_relation(text, relations) == expected


def test_which_relation_ignores_relation_words_in_references() -> None:
    refs = ["the tin can that's more to the left of the image", "the bowl"]
    text = "The tin can that's more to the left of the image is to the right of the bowl."
    assert which_relation(text, ("left", "right"), refs) == "right"


def _question(question_type: str, truth_label: str) -> EvalQuestion:
    family = TYPES_BY_NAME[question_type].family
    return EvalQuestion("r", Path("x.png"), "?", question_type, family, True, 0.1, truth_label, (4, 7),
                        ("the red can", "the blue box"))


@pytest.mark.parametrize("question_type, text, expected", [
    ("predicate_left", "Yes.", "yes"), ("predicate_left", "The red can is to the right of the blue box.", "no"),
    ("predicate_left", "The red can is left of the blue box.", "yes"), ("choice_big", "The blue box.", "7"),
    ("choice_big", "The red can is bigger.", "4"), ("classify_tall_short", "Shorter.", "short"),
    ("choice_big", "I don't know.", None), ("predicate_left", "I don't know.", None),
    ("predicate_left", "Can't tell, maybe yes.", None), ("classify_tall_short", "Not sure, shorter?", None),
])
def test_decide_label(question_type: str, text: str, expected: str | None) -> None:
    assert decide_label(_question(question_type, "yes"), text) == expected


# ---------------------------------------------------------------------------------------------
# Held-out seeds, failures
# ---------------------------------------------------------------------------------------------

def test_held_out_seeds_are_disjoint_from_training() -> None:
    assert held_out_seed(0) == EVAL_SEED_OFFSET
    check_held_out(EVAL_SEED_OFFSET)
    for bad in (-1, EVAL_SEED_OFFSET):
        with pytest.raises(ConfigError, match="--seed must be in"):
            held_out_seed(bad)
    with pytest.raises(ConfigError, match="training range"):
        check_held_out(EVAL_SEED_OFFSET - 1)


def test_training_seeds_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="training range"):
        synthesize_held_out(tmp_path / "d", 1, 0)
    assert not (tmp_path / "d").exists()
    with pytest.raises(ConfigError, match="training range"):
        next(approach_trajectories(1, 3, 42))

    class Unreachable:
        name = "unreachable"

        def ask_batch(self, images: Any, questions: Any, depths: Any = None) -> list[VLMAnswer]:
            raise AssertionError("asked despite a training seed")

    with pytest.raises(ConfigError, match="training range"):
        evaluate_vlm(Unreachable(), tmp_path, trajectories=1, seed=7)


def test_failed_batches_are_wrong_answers_and_a_failed_first_batch_raises(dataset: Path) -> None:
    questions = load_questions(dataset, limit=6)

    class Flaky:
        name = "flaky"

        def __init__(self, fail_all: bool) -> None:
            self.calls, self.fail_all = 0, fail_all

        def ask_batch(self, images: Any, questions: Any, depths: Any = None) -> list[VLMAnswer]:
            self.calls += 1
            if self.fail_all or self.calls == 2:
                raise VLMError("HTTP 503")
            return [VLMAnswer("1 m", parse_answer("1 m"), 1.0) for _ in questions]

    records = ask_questions(Flaky(False), questions, batch_size=3)
    assert [bool(r.error) for r in records] == [False] * 3 + [True] * 3
    assert all(not r.correct and math.isnan(r.value_m) for r in records[3:])
    with pytest.raises(VLMError, match="HTTP 503"):
        ask_questions(Flaky(True), questions, batch_size=3)


def test_cli_shift_split_runs_on_the_packaged_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``evaluate --split shift``: held-out rigs, gripper, textures, lights and sensor damage, scored per family."""
    from spatialvlm_ros.cli import main
    out = tmp_path / "shift"
    assert main(["evaluate", "--backend", "compact", "--split", "shift", "--scenes", "3", "--trajectories", "1",
                 "--frames", "3", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["split"] == "shift" and summary["answers"] > 0 and summary["trajectory_frames"] == 3
    assert summary["per_family"] and all(f["n"] > 0 for f in summary["per_family"].values())


def test_cli_rescoring_a_dataset_takes_the_split_of_its_trajectories_from_split(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """A ``--data`` folder does not record its split: ``--split`` names it, and leaving it out is warned about."""
    from spatialvlm_ros.cli import main
    common = ["evaluate", "--backend", "compact", "--trajectories", "1", "--frames", "3"]
    assert main([*common, "--split", "shift", "--scenes", "2", "--out", str(tmp_path / "made")]) == 0
    data = str(tmp_path / "made" / "dataset")
    capsys.readouterr()
    assert main([*common, "--data", data, "--split", "shift"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["split"] == "shift"
    assert "without --split" not in caplog.text
    assert main([*common, "--data", data]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["split"] == "sim"
    assert "--data without --split" in caplog.text


def test_shift_scenes_share_no_rig_gripper_texture_or_light_with_the_training_split() -> None:
    from spatialvlm_ros.sim.appearance import SHIFT_KELVIN, SHIFT_TEXTURES, TRAINING_KELVIN, TRAINING_TEXTURES
    from spatialvlm_ros.synthesis.config import SynthesisConfig
    from spatialvlm_ros.synthesis.sources import SimSource
    train = SimSource(40, SynthesisConfig(seed=0))
    shift = SimSource(40, SynthesisConfig(seed=EVAL_SEED_OFFSET), split="shift")
    near = 0
    for i in range(40):
        (t, t_look), (s, s_look) = train.scene(i), shift.scene(i)
        assert 48.0 <= t.fovy_deg <= 80.0 and not 48.0 <= s.fovy_deg <= 80.0
        assert not t.viewpoint.random and s.viewpoint.random
        assert t.gripper_model in ("sim", "franka_hand") and s.gripper_model == "robotiq_2f85"
        assert t_look.texture in TRAINING_TEXTURES and s_look.texture in SHIFT_TEXTURES
        assert not set(TRAINING_TEXTURES) & set(SHIFT_TEXTURES)
        assert 0 < s_look.sensor.jpeg_quality <= 60 and s_look.sensor.noise_sigma >= 3.0
        near += t.start_gap_m < 0.05
    assert near >= 0.25 * 40                     # a quarter of the scenes or more put the gripper within 5 cm
    lo, hi = TRAINING_KELVIN
    assert all(b <= lo or a >= hi for a, b in SHIFT_KELVIN)


def test_mirror_averages_each_approach_frame_with_its_mirror_image() -> None:
    """``score_trajectory(mirror=True)``: every frame asked on itself and its mirror; the estimate is their mean."""
    from spatialvlm_ros.evaluation.vlm_benchmark import TrajectoryFrames, score_trajectory
    from spatialvlm_ros.types import DistanceKind, Pair
    frames = tuple(np.full((4, 6, 3), i, np.uint8) for i in range(3))
    for image in frames:
        image[:, 0] = 255                      # the mirror image differs: the bright column moves to the right

    class ByImage:
        name = "by-image"

        def ask_batch(self, images: list[np.ndarray], questions: list[str], depths: Any = None) -> list[VLMAnswer]:
            # A frame reads as its index in decimetres; its mirror image 4 cm more.
            texts = [f"{10 * int(im[0, 1, 0]) + (4 if im[0, -1, 0] == 255 else 0)} cm" for im in images]
            return [VLMAnswer(t, parse_answer(t), 1.0) for t in texts]

    trajectory = TrajectoryFrames(1, Pair("yellow gripper", "red can"), DistanceKind.GAP, frames, (0.0, 0.1, 0.2))
    plain = score_trajectory(ByImage(), trajectory, samples=2)
    mirrored = score_trajectory(ByImage(), trajectory, samples=2, mirror=True)
    assert plain.estimate_m == pytest.approx((0.0, 0.1, 0.2))
    assert mirrored.estimate_m == pytest.approx((0.02, 0.12, 0.22))


def test_cli_mirror_flag_reaches_the_trajectories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spatialvlm_ros.cli import main
    assert main(["evaluate", "--backend", "compact", "--scenes", "2", "--trajectories", "1", "--frames", "3",
                 "--mirror"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mirror"] is True


def test_cli_image_size_renders_the_held_out_scenes_and_approaches_at_that_size(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``--image-size 432x240``: a 16:9 camera's frames, for the questions and the approaches alike."""
    from PIL import Image

    from spatialvlm_ros.cli import main
    from spatialvlm_ros.cli import vlm as cli_vlm
    from spatialvlm_ros.evaluation import vlm_benchmark
    sizes = []
    real = vlm_benchmark.approach_trajectories

    def recording(count: int, n_frames: int, seed: int, kind: Any, width: int, height: int,
                  split: str = "sim") -> Any:
        for trajectory in real(count, n_frames, seed, kind, width, height, split):
            sizes.extend(image.shape[:2] for image in trajectory.images)
            yield trajectory

    monkeypatch.setattr(vlm_benchmark, "approach_trajectories", recording)
    out = tmp_path / "wide"
    assert main(["evaluate", "--backend", "compact", "--scenes", "2", "--trajectories", "1", "--frames", "3",
                 "--image-size", "432x240", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["trajectory_frames"] == 3
    images = sorted((out / "dataset" / "images").iterdir())
    assert images and all(Image.open(p).size == (432, 240) for p in images)
    assert sizes == [(240, 432)] * 3
    assert cli_vlm.image_size("640X480") == (640, 480)
    with pytest.raises(SystemExit):
        main(["evaluate", "--backend", "compact", "--image-size", "432"])
    assert "is not WIDTHxHEIGHT" in capsys.readouterr().err
