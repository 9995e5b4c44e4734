"""Chain-of-thought reasoning: planner rules, tools on real frames, the LLM planner, the CLI.

The LLM planner talks to a scripted local chat-completions server (the real path: vLLM, Ollama, llama.cpp).
"""

from __future__ import annotations

import json
import math
import os
from email.message import Message
from typing import Any

import numpy as np
import pytest

from chat_server import ChatCompletionsServer, completion
from spatialvlm_ros.cli import main
from spatialvlm_ros.cli.reason import _EVAL_SEED
from spatialvlm_ros.config import EstimatorConfig, LLMPlannerConfig, SimConfig
from spatialvlm_ros.estimation.geometric import GeometricEstimator
from spatialvlm_ros.evaluation.reasoning_benchmark import REASONING_SEED, scenes
from spatialvlm_ros.reasoning.llm import LLMPlanner
from spatialvlm_ros.reasoning.planner import DeterministicPlanner
from spatialvlm_ros.reasoning.tools import EstimatorTools, Measurement, VLMTools
from spatialvlm_ros.sim import TabletopSim
from spatialvlm_ros.vlm.base import VLMAnswer
from spatialvlm_ros.vlm.parsing import parse_answer

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")


class PointTools:
    """Objects as points in a plane (metres); a gap is the centre distance minus 10 cm (two 5 cm radii)."""

    def __init__(self, at: dict[str, tuple[float, float]]) -> None:
        self.at = at

    def objects(self) -> list[str]:
        return list(self.at)

    def distance(self, a: str, b: str) -> Measurement:
        if a not in self.at or b not in self.at:
            return Measurement(f"centre({a}, {b})", None, note="not_visible")
        return Measurement(f"centre({a}, {b})", math.dist(self.at[a], self.at[b]))

    def gap(self, a: str, b: str) -> Measurement:
        return Measurement(f"gap({a}, {b})", math.dist(self.at[a], self.at[b]) - 0.10)

    def relation(self, a: str, relation: str, b: str) -> Measurement:
        return Measurement(f"{relation}({a}, {b})", self.at[a][0] < self.at[b][0] if relation == "left" else None)

    def size(self, a: str, dimension: str) -> Measurement:
        return Measurement(f"{dimension}({a})", 0.1)


SCENE = PointTools({"yellow gripper": (0.0, -0.3), "red can": (0.0, 0.0), "blue box": (0.4, 0.0),
                    "green ball": (0.2, 0.02), "purple bowl": (0.1, 0.3)})


@pytest.mark.parametrize("question, value", [
    ("Which object is closest to the red can?", "green ball"),
    ("Which object is farthest from the red can?", "blue box"),
    ("Rank the objects by their distance to the red can, nearest first.", ["green ball", "purple bowl", "blue box"]),
    ("Is the green ball between the red can and the blue box?", True),
    ("Is the purple bowl between the red can and the blue box?", False),
    ("Does the yellow gripper fit between the red can and the green ball?", True),    # gap 0.10 > 0.08
    ("Does the yellow gripper fit between the green ball and the blue box?", True),
    ("Do the red can, the blue box and the green ball form an isosceles triangle?", True),
    ("Do the red can, the blue box and the purple bowl form a right triangle?", False),
    ("Which two of the red can, the blue box and the purple bowl are farthest apart?", ["blue box", "purple bowl"]),
    ("Are the red can, the green ball and the blue box in a line?", True),
    ("Are the red can, the purple bowl and the blue box collinear?", False),
    ("Which objects are within 25 cm of the yellow gripper?", ["red can"]),   # gaps 0.20, 0.40, 0.34, 0.51
])
def test_deterministic_planner_answers_each_kind(question: str, value: Any) -> None:
    answer = DeterministicPlanner().answer(question, SCENE, {"opening_m": 0.08})
    assert answer.valid and answer.value == value, answer.text
    assert answer.steps and all(step.result.ok for step in answer.steps)   # the trace holds every query


def test_fit_uses_the_given_opening() -> None:
    q = "Does the yellow gripper fit between the red can and the green ball?"
    assert DeterministicPlanner().answer(q, SCENE, {"opening_m": 0.12}).value is False


def test_unknown_questions_and_missing_measurements_are_flagged_not_guessed() -> None:
    planner = DeterministicPlanner()
    unknown = planner.answer("What colour is the sky?", SCENE)
    assert not unknown.valid and unknown.reason == "no_plan" and not unknown.steps
    missing = planner.answer("Is the pink cup between the red can and the blue box?", SCENE)
    assert not missing.valid and missing.reason == "missing_measurement" and "not_visible" in missing.text
    json.dumps(missing.to_json())   # the trace is JSON-serialisable


# ---------------------------------------------------------------------------------------------
# The tools on real frames
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim_frame() -> Any:
    with TabletopSim(SimConfig(n_frames=3)) as sim:
        step = sim.render(0)
        return step.frame, step.truth


def test_estimator_tools_on_a_rendered_frame(sim_frame: Any) -> None:
    frame, truth = sim_frame
    tools = EstimatorTools(GeometricEstimator(EstimatorConfig()), frame)
    assert "red can" in tools.objects()
    cam = truth.object_positions_cam
    d = tools.distance("red can", "blue box")
    assert d.ok and abs(d.value - float(np.linalg.norm(cam["red can"] - cam["blue box"]))) < 0.04
    left = bool(cam["red can"][0] < cam["blue box"][0])
    assert tools.relation("red can", "left", "blue box").value is left
    assert tools.relation("red can", "right", "blue box").value is (not left)
    height = tools.size("red can", "height")
    assert height.ok and abs(height.value - 0.122) < 0.02, height   # the sim's can is 12.2 cm tall
    assert not tools.relation("red can", "sideways", "blue box").ok
    assert not tools.distance("red can", "pink cup").ok


def test_vlm_tools_read_numbers_and_yes_no(sim_frame: Any) -> None:
    class Scripted:
        name = "scripted"

        def ask(self, image: np.ndarray, question: str, depth: Any = None) -> VLMAnswer:
            text = "Yes, it is." if question.startswith("Is ") else "About 25 cm."
            return VLMAnswer(text, parse_answer(text), 1.0)

    tools = VLMTools(Scripted(), sim_frame[0])
    assert tools.distance("red can", "blue box").value == pytest.approx(0.25)
    assert tools.relation("red can", "left", "blue box").value is True
    assert tools.size("red can", "width").value == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------
# The LLM planner against a scripted chat-completions server
# ---------------------------------------------------------------------------------------------

class ScriptedPlanner(ChatCompletionsServer):
    """Turn 1 calls the distance tool twice, turn 2 answers; without tool calling, the same in plain JSON."""

    def __init__(self, tool_calling: bool = True) -> None:
        super().__init__()
        self.tool_calling = tool_calling
        self.bodies: list[dict[str, Any]] = []

    def reply(self, path: str, headers: Message, body: dict[str, Any]) -> tuple[int, dict[str, Any] | bytes]:
        self.bodies.append(body)
        if "tools" in body and not self.tool_calling:
            return 400, {"error": {"message": "this model does not support tools"}}
        results = [m for m in body["messages"]
                   if m["role"] == "tool" or str(m.get("content") or "").startswith("Result:")]
        if "tools" in body:
            if not results:
                calls = [{"id": f"c{i}", "type": "function",
                          "function": {"name": "distance", "arguments": json.dumps({"a": "red can", "b": b})}}
                         for i, b in enumerate(("blue box", "green ball"))]
                return 200, {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": calls}}]}
            return 200, completion("The green ball is closer to the red can.")
        if len(results) < 2:
            b = ("blue box", "green ball")[len(results)]
            return 200, completion(f'I will measure. {{"tool": "distance", "args": {{"a": "red can", "b": "{b}"}}}}')
        return 200, completion('{"answer": "The green ball."}')


@pytest.mark.parametrize("tool_calling", [True, False])
def test_llm_planner_calls_the_tools_and_answers(tool_calling: bool) -> None:
    server = ScriptedPlanner(tool_calling)
    try:
        planner = LLMPlanner(LLMPlannerConfig(url=server.url, model="planner", timeout_s=10.0))
        answer = planner.answer("Is the green ball or the blue box closer to the red can?", SCENE)
    finally:
        server.close()
    assert answer.valid and "green ball" in answer.text.lower(), answer
    assert [s.args for s in answer.steps] == [("red can", "blue box"), ("red can", "green ball")]
    assert answer.steps[0].result.value == pytest.approx(0.4)
    if tool_calling:
        assert server.bodies[1]["messages"][-1]["role"] == "tool"   # results go back as tool messages
    else:
        assert "tools" not in server.bodies[-1]                       # fell back to the JSON protocol


def test_llm_planner_is_bounded_and_fails_soft() -> None:
    class Loops(ChatCompletionsServer):
        def reply(self, path: str, headers: Message, body: dict[str, Any]) -> tuple[int, dict[str, Any] | bytes]:
            call = {"id": "c", "type": "function",
                    "function": {"name": "gap", "arguments": '{"a": "red can", "b": "blue box"}'}}
            return 200, {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}

    server = Loops()
    try:
        answer = LLMPlanner(LLMPlannerConfig(url=server.url, max_steps=3)).answer("Anything?", SCENE)
    finally:
        server.close()
    assert not answer.valid and answer.reason == "max_steps" and len(answer.steps) == 3
    down = LLMPlanner(LLMPlannerConfig(url="http://127.0.0.1:9/v1", request_timeout_s=1.0)).answer("Anything?", SCENE)
    assert not down.valid and down.reason == "backend_error"


# ---------------------------------------------------------------------------------------------
# Held-out questions and the CLI
# ---------------------------------------------------------------------------------------------

def test_evaluation_questions_have_clear_balanced_truth() -> None:
    assert _EVAL_SEED == REASONING_SEED   # the CLI's default, spelled out so its parser stays light
    asked = [q for scene in scenes(40) for q in scene.questions]
    assert len(asked) == 40 and len({q.kind for q in asked}) >= 6
    yes_no = [q.truth for q in asked if isinstance(q.truth, bool)]
    assert 0.25 < sum(yes_no) / len(yes_no) < 0.75   # an "always no" planner cannot score well


def test_cli_answers_and_evaluates(capsys: pytest.CaptureFixture) -> None:
    assert main(["reason", "sim", "Which object is closest to the red can?"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["valid"] and answer["kind"] == "nearest" and answer["steps"]
    assert main(["reason", "--evaluate", "--questions", "24", "--tools", "geometric"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["questions"] == 24 and report["accuracy"] >= 0.9 and report["accuracy_by_kind"]
