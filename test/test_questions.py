"""Spatial questions on demand over DDS (``~/question`` -> ``~/answer``), and a VLM that abstains.

Real node processes on the run's private domain; a camera in this process publishes a simulated RGB-D frame
(yellow gripper, red can, blue box, green ball) at 10 Hz. The node's answers are compared with the same
planner run here on the same frame. The VLM and the language-model planner are a scripted local
chat-completions server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from std_msgs.msg import String

from chat_server import ChatCompletionsServer, completion
from conftest import HarnessNode
from node_rig import FAST, FrameStream, Watch, values
from spatialvlm_ros.config import EstimatorConfig
from spatialvlm_ros.estimation.geometric import GeometricEstimator
from spatialvlm_ros.reasoning.planner import DeterministicPlanner
from spatialvlm_ros.reasoning.tools import EstimatorTools

OBJECTS = ["yellow gripper", "red can", "blue box", "green ball"]


def _here(frame: Any, question: str, options: dict[str, Any] | None = None) -> Any:
    """The deterministic planner's answer computed in this process, on the frame the camera publishes."""
    tools = EstimatorTools(GeometricEstimator(EstimatorConfig()), frame, OBJECTS)
    return DeterministicPlanner().answer(question, tools, {"opening_m": 0.08, **(options or {})})


def test_questions_are_answered_about_the_latest_frame(test_node: HarnessNode, start_node: Any,
                                                       qvga_frame: Any) -> None:
    node = start_node("spatial_reward_node", *FAST)
    watch = Watch(test_node)
    assert watch.lifecycle.wait_for_services(30), node.log
    assert watch.lifecycle.state() == "active"          # autostart (the default)
    early = watch.ask("What is the gap between the yellow gripper and the red can?")
    assert (early["valid"], early["reason"], early["state"]) == (False, "no_frame", "active")

    camera = FrameStream(test_node.node, qvga_frame, rate_hz=10.0)
    try:
        test_node.wait_for(lambda: len(watch.estimates()) >= 3, 15, "estimates")
        # An atomic question: metres with their uncertainty, the frame's stamp and id, the trace.
        gap = watch.ask("What is the gap between the yellow gripper and the red can?")
        expected = _here(qvga_frame, "What is the gap between the yellow gripper and the red can?")
        assert gap["valid"] and gap["kind"] == "gap" and gap["unit"] == "m", gap
        assert gap["value"] == pytest.approx(expected.value, abs=1e-6)
        assert gap["uncertainty_m"] == pytest.approx(expected.uncertainty_m, abs=1e-6) and gap["uncertainty_m"] > 0
        stamp_ns = gap["stamp"]["sec"] * 10**9 + gap["stamp"]["nanosec"]
        assert stamp_ns in camera.published() and gap["frame_id"] == "camera_color_optical_frame"
        assert gap["trace"]["steps"][0]["tool"] == "gap" and gap["latency_ms"] < 1000

        # Composite questions, JSON with options: an object, a yes/no label.
        options = {"objects": OBJECTS}
        watch.question_pub.publish(String(data=json.dumps(
            {"question": "Which object is closest to the red can?", "options": options, "id": 42})))
        test_node.wait_for(lambda: any(json.loads(m.data)["id"] == 42 for m in test_node.received(
            "/spatial_reward_node/answer")), 10, "the answer with id 42")
        nearest = next(a for a in map(json.loads, (m.data for m in test_node.received(
            "/spatial_reward_node/answer"))) if a["id"] == 42)
        assert nearest["valid"] and nearest["value"] == _here(
            qvga_frame, "Which object is closest to the red can?", options).value
        assert nearest["unit"] is None and nearest["uncertainty_m"] is None and len(nearest["trace"]["steps"]) == 2
        between_question = "Is the green ball between the red can and the blue box?"
        between = watch.ask(between_question)
        assert between["value"] == ("yes" if _here(qvga_frame, between_question).value else "no")
        # Without objects in the question's options, the candidates are the pairs' phrases.
        too_few = watch.ask("Which object is closest to the red can?")
        assert (too_few["valid"], too_few["reason"]) == (False, "bad_question")

        # Plain text works; what cannot be planned or read is flagged, never guessed.
        assert watch.ask("What colour is the sky?")["reason"] == "no_plan"
        watch.question_pub.publish(String(data='{"question": 3}'))
        test_node.wait_for(lambda: any(json.loads(m.data)["reason"] == "bad_question" and
                                       json.loads(m.data)["question"] == "" for m in test_node.received(
                                           "/spatial_reward_node/answer")), 5, "a bad_question answer")

        # The reward keeps its pace while questions come in.
        before_frames, before_estimates = len(camera.published()), len(watch.estimates())
        for _ in range(10):
            assert watch.ask("What is the gap between the yellow gripper and the red can?")["valid"]
        frames = len(camera.published()) - before_frames
        answered = len(watch.estimates()) - before_estimates
        assert frames >= 5 and answered >= 0.9 * frames - 1, (answered, frames)
        # /diagnostics is periodic: the newest one may predate the last answer, so wait for one that counts it.
        test_node.wait_for(lambda: int(values(watch.diagnostics()[-1])["questions_total"]) >= 15, 5,
                           "/diagnostics counting all 15 questions")
        counted = next(s for s in watch.diagnostics() if int(values(s)["questions_total"]) >= 15)
        assert float(values(counted)["answer_ms_p50"]) > 0
    finally:
        camera.close()
    assert node.alive(), node.log


class AbstainingServer(ChatCompletionsServer):
    """The VLM says it cannot tell; the planner's language model asks for the gap once, then answers."""

    def reply(self, path: str, headers: Any, body: dict[str, Any]) -> Any:
        if "tools" not in body:                                   # a question to the VLM
            return 200, completion("I can't tell from this image.")
        if not any(m.get("role") == "tool" for m in body["messages"]):
            call = {"id": "c1", "type": "function", "function": {
                "name": "gap", "arguments": json.dumps({"a": "yellow gripper", "b": "red can"})}}
            return 200, {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
        return 200, completion("The model cannot tell how far apart they are.")


def test_an_abstaining_vlm_is_flagged_and_counted_not_an_error(test_node: HarnessNode, start_node: Any,
                                                               qvga_frame: Any) -> None:
    server = AbstainingServer()
    try:
        node = start_node("spatial_reward_node", "-r", "__ns:=/vlm", *FAST, "-p", "topics.depth:=''",
                          "-p", "estimator.backend:=vlm", "-p", "estimator.vlm.backend:=openai",
                          "-p", f"estimator.vlm.openai.url:={server.url}", "-p", "estimator.vlm.openai.retries:=0",
                          "-p", "reasoning.planner:=llm", "-p", f"reasoning.llm.url:={server.url}")
        watch = Watch(test_node, "vlm")
        assert watch.lifecycle.wait_for_services(30), node.log
        camera = FrameStream(test_node.node, qvga_frame, rate_hz=10.0, ns="vlm")
        try:
            test_node.wait_for(lambda: len(watch.estimates()) >= 5, 15, "estimates from the VLM node")
            estimate = values(watch.estimates()[-1].status[0])
            assert (estimate["valid"], estimate["reason"]) == ("False", "abstained")
            assert "1/1 answers abstained" in watch.estimates()[-1].status[0].message
            test_node.wait_for(lambda: values(watch.diagnostics()[-1])["abstain_rate"] == "1.000", 5,
                               "/diagnostics: abstain rate 1")
            status = watch.diagnostics()[-1]
            assert status.level == status.OK and "abstained" in status.message, status.message
            assert values(status)["errors"] == "0"
            # The language-model planner asks the VLM for the gap; the abstention is in the trace.
            answer = watch.ask("How close is the gripper to the can?", timeout=20)
            assert answer["planner"] == "llm" and answer["valid"], answer
            step = answer["trace"]["steps"][0]
            assert step["tool"] == "gap" and step["value"] is None and step["note"].startswith("abstained")
        finally:
            camera.close()
        assert node.alive() and "Traceback" not in node.log, node.log
    finally:
        server.close()
