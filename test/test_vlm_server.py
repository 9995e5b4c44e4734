"""The chat-completions backend against a real local HTTP server, and the VLM estimator end to end."""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import threading
import time
from email.message import Message
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
from chat_server import ChatCompletionsServer, Drop, Trickle, completion

from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.types import DistanceKind, NoEstimateReason, Pair
from spatialvlm_ros.estimation import build_estimator
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.sim import TabletopSim
from spatialvlm_ros.vlm import DISTANCE_QUESTIONS, VLMAnswer, VLMError, VLMTimeoutError, build_vlm, parse_answer
from spatialvlm_ros.config import EstimatorConfig, OpenAIVLMConfig, SimConfig, VLMConfig
from spatialvlm_ros.estimation.vlm import VLMDistanceEstimator
from spatialvlm_ros.vlm.server import OpenAIChatVLM

KEY_ENV = "SPATIALVLM_TEST_API_KEY"
KEY = "sk-test-not-a-real-key"
MODEL = "remyxai/SpaceQwen2.5-VL-3B-Instruct"
PAIR = Pair("yellow gripper", "red can")


class FakeVLMServer(ChatCompletionsServer):
    """An OpenAI-compatible chat-completions server on 127.0.0.1 (ephemeral port) that records requests.

    Each request takes the next scripted reply (then ``default``): ``("answer", text)``, ``("status",
    code)``, ``("raw", bytes)`` or ``("sleep", seconds)``. Requests without ``Bearer KEY`` get a 401.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[Any, ...]] = []
        self.default: tuple[Any, ...] = ("answer", "About 1 meter.")
        self.lock = threading.Lock()
        self.stop = threading.Event()
        super().__init__()

    def reply(self, path: str, headers: Message, body: dict[str, Any]) -> tuple[int, dict[str, Any] | bytes]:
        with self.lock:
            self.requests.append({"path": path, "headers": dict(headers), "body": body})
            kind, arg = self.script.pop(0) if self.script else self.default
        if headers.get("Authorization") != f"Bearer {KEY}":
            kind, arg = "status", 401
        if kind == "sleep":
            self.stop.wait(arg)
            kind, arg = "answer", "1 m"
        if kind == "status":
            return arg, {"error": {"message": f"status {arg}"}}
        if kind == "raw":
            return 200, arg
        if kind == "trickle":
            return Trickle(json.dumps(completion("1 m", MODEL)).encode(), interval_s=arg)
        if kind == "drop":
            return Drop()
        return 200, completion(arg, MODEL)

    def close(self) -> None:
        self.stop.set()
        super().close()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeVLMServer]:
    fake = FakeVLMServer()
    yield fake
    fake.close()


@pytest.fixture
def fake(server: FakeVLMServer, monkeypatch: pytest.MonkeyPatch) -> FakeVLMServer:
    monkeypatch.setenv(KEY_ENV, KEY)
    server.requests.clear()
    server.script.clear()
    server.default = ("answer", "About 1 meter.")
    return server


def config(fake: FakeVLMServer, samples: int = 1, **kw: Any) -> VLMConfig:
    """``estimator.vlm`` for the fake server; ``kw`` override its ``openai`` section."""
    settings = dict(url=fake.url, model=MODEL, api_key_env=KEY_ENV, timeout_s=2.0, retry_backoff_s=0.01)
    return VLMConfig(backend="openai", samples=samples, openai=OpenAIVLMConfig(**{**settings, **kw}))


@pytest.fixture(scope="module")
def sim_frame() -> tuple[Frame, float]:
    with TabletopSim(SimConfig(width=160, height=120, n_frames=2)) as sim:
        step = sim.render(1)
    return step.frame, step.truth.gap_m["red can"]


def rgb(h: int = 12, w: int = 20) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_request_shape(fake: FakeVLMServer) -> None:
    image = rgb(12, 20)
    answer = OpenAIChatVLM(config(fake, temperature=0.3, max_tokens=64, system_prompt="Answer in metres.").openai).ask(
        image, "How far is the yellow gripper from the red can?")
    assert answer.text == "About 1 meter." and answer.parsed.value_m == 1.0 and answer.latency_ms > 0
    [request] = fake.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["body"]
    assert (body["model"], body["temperature"], body["max_tokens"]) == (MODEL, 0.3, 64)
    system, user = body["messages"]
    assert system == {"role": "system", "content": "Answer in metres."}
    text, image_part = user["content"]
    assert text == {"type": "text", "text": "How far is the yellow gripper from the red can?"}
    url = image_part["image_url"]["url"]
    assert image_part["type"] == "image_url" and url.startswith("data:image/png;base64,")
    png = base64.b64decode(url.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded[..., ::-1], image)   # lossless, RGB order kept


def test_no_key_env_means_no_auth_header(fake: FakeVLMServer) -> None:
    with pytest.raises(VLMError, match="401"):
        OpenAIChatVLM(config(fake, api_key_env="").openai).ask(rgb(), "How far?")
    assert "Authorization" not in fake.requests[0]["headers"]


def test_unparseable_answer_is_returned_flagged(fake: FakeVLMServer) -> None:
    fake.script = [("answer", "I cannot tell from this image.")]
    answer = OpenAIChatVLM(config(fake).openai).ask(rgb(), "How far?")
    assert not answer.parsed.valid and "no number" in answer.parsed.reason


def test_content_parts_and_default_unit(fake: FakeVLMServer) -> None:
    fake.script = [("raw", json.dumps({"choices": [{"message": {"content": [{"type": "text", "text": "0.4"}]}}]})
                    .encode())]
    answer = OpenAIChatVLM(config(fake, default_unit="m").openai).ask(rgb(), "How far?")
    assert answer.parsed.valid and answer.parsed.value_m == 0.4


def test_timeout(fake: FakeVLMServer) -> None:
    fake.script = [("sleep", 5.0)]
    vlm = OpenAIChatVLM(config(fake, timeout_s=0.2, retries=2).openai)
    start = time.monotonic()
    with pytest.raises(VLMTimeoutError, match="no answer within 0.2 s"):
        vlm.ask(rgb(), "How far?")
    assert time.monotonic() - start < 1.5
    assert len(fake.requests) == 1    # a timeout is not retried


def test_retry_after_one_503(fake: FakeVLMServer, caplog: pytest.LogCaptureFixture) -> None:
    fake.script = [("status", 503), ("answer", "roughly 30 cm")]
    answer = OpenAIChatVLM(config(fake, retries=2).openai).ask(rgb(), "How far?")
    assert answer.parsed.value_m == pytest.approx(0.3)
    assert len(fake.requests) == 2
    assert "HTTP 503" in caplog.text and "retry 1/2" in caplog.text
    assert KEY not in caplog.text


def test_retries_are_bounded(fake: FakeVLMServer) -> None:
    fake.default = ("status", 500)
    with pytest.raises(VLMError, match="HTTP 500"):
        OpenAIChatVLM(config(fake, retries=2).openai).ask(rgb(), "How far?")
    assert len(fake.requests) == 3


def test_retry_after_header_wins() -> None:
    vlm = OpenAIChatVLM(OpenAIVLMConfig(retry_backoff_s=0.5))
    assert [vlm._delay(a, None) for a in range(3)] == [0.5, 1.0, 2.0]
    assert vlm._delay(0, "3") == 3.0 and vlm._delay(0, "9999") == 30.0
    assert vlm._delay(1, "Wed, 21 Oct 2015 07:28:00 GMT") == 1.0


@pytest.mark.parametrize("payload, match", [
    (b"<html>Bad gateway</html>", "not JSON"),
    (b'{"object": "error"}', "no choices"),
    (b'{"choices": []}', "no choices"),
])
def test_bad_responses(fake: FakeVLMServer, payload: bytes, match: str) -> None:
    fake.script = [("raw", payload)]
    with pytest.raises(VLMError, match=match):
        OpenAIChatVLM(config(fake).openai).ask(rgb(), "How far?")


@pytest.mark.parametrize("payload, match", [
    (b'{"choices": [{"message": {"content": "\xff\xfe 1 m"}}]}', "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not JSON"),
    (json.dumps(completion("1 m " + "x" * 2_000_000)).encode(), "larger than 1000000 bytes"),
    (b'{"choices": [{"message": {"content": [{"text": 5}, "x"]}}]}', None),   # odd parts: an empty answer
])
def test_malformed_responses_of_every_kind_are_backend_errors(fake: FakeVLMServer, payload: bytes,
                                                              match: str | None) -> None:
    fake.script = [("raw", payload)]
    vlm = OpenAIChatVLM(config(fake).openai)
    if match is None:
        assert not vlm.ask(rgb(), "How far?").parsed.valid
        return
    with pytest.raises(VLMError, match=match):
        vlm.ask(rgb(), "How far?")


@pytest.mark.parametrize("body_bytes, error, match", [
    (5_000, VLMError, "larger than 1000 bytes"),     # known bad once past the limit, however late it was read
    (500, VLMTimeoutError, "no answer within"),       # cut by the deadline before it ended: a timeout
])
def test_a_body_read_past_the_deadline_is_classified_by_what_was_read(
        fake: FakeVLMServer, body_bytes: int, error: type, match: str) -> None:
    class Body:
        def __init__(self) -> None:
            self.left = body_bytes

        def read(self, n: int) -> bytes:
            chunk = min(n, self.left)
            self.left -= chunk
            return b"x" * chunk

    expired = type("Expired", (), {"expired": True})()
    vlm = OpenAIChatVLM(config(fake, max_response_bytes=1000).openai)
    with pytest.raises(error, match=match):
        vlm._read(Body(), expired)


def test_the_deadline_covers_the_whole_request_not_each_read(fake: FakeVLMServer) -> None:
    # One byte every 0.1 s: every read is well within any socket timeout, the whole answer is not.
    fake.script = [("trickle", 0.1)]
    vlm = OpenAIChatVLM(config(fake, timeout_s=0.6).openai)
    start = time.monotonic()
    with pytest.raises(VLMTimeoutError, match="no answer within 0.6 s"):
        vlm.ask(rgb(), "How far?")
    assert time.monotonic() - start < 1.2


def test_retries_stay_inside_the_retry_budget(fake: FakeVLMServer) -> None:
    fake.default = ("status", 503)
    vlm = OpenAIChatVLM(config(fake, retries=5, retry_backoff_s=0.2, retry_budget_s=0.5).openai)
    start = time.monotonic()
    with pytest.raises(VLMError, match="HTTP 503"):
        vlm.ask(rgb(), "How far?")
    assert len(fake.requests) == 2 and time.monotonic() - start < 0.6   # 0.2 s, then 0.4 s would exceed 0.5 s
    fake.requests.clear()
    fake.script = [("drop", None)]
    fake.default = ("answer", "1 m")
    assert OpenAIChatVLM(config(fake, retries=1).openai).ask(rgb(), "How far?").parsed.value_m == 1.0
    assert len(fake.requests) == 2   # a dropped connection is retried


def test_401_is_not_retried_and_never_shows_the_key(fake: FakeVLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key")
    vlm = OpenAIChatVLM(config(fake, retries=3).openai)
    with pytest.raises(VLMError, match=f"HTTP 401.*{KEY_ENV}") as info:
        vlm.ask(rgb(), "How far?")
    assert len(fake.requests) == 1
    assert "sk-wrong-key" not in str(info.value) and "sk-wrong-key" not in repr(vlm)


def test_missing_key_env_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"estimator.vlm.openai.api_key_env: environment variable '{KEY_ENV}'"):
        OpenAIChatVLM(OpenAIVLMConfig(api_key_env=KEY_ENV))


def test_unreachable_server_after_retries(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vlm = OpenAIChatVLM(OpenAIVLMConfig(url=f"http://127.0.0.1:{port}/v1", retries=1, retry_backoff_s=0.01))
    with pytest.raises(VLMError, match="cannot reach"):
        vlm.ask(rgb(), "How far?")
    assert "retry 1/1" in caplog.text


def test_bad_image_and_batch_lengths(fake: FakeVLMServer) -> None:
    vlm = OpenAIChatVLM(config(fake).openai)
    with pytest.raises(InputError, match="uint8"):
        vlm.ask(np.zeros((4, 4, 3), np.float32), "How far?")
    with pytest.raises(InputError, match="2 images but 1 questions"):
        vlm.ask_batch([rgb(), rgb()], ["How far?"])
    assert vlm.ask_batch([], []) == []


def test_batch_keeps_order(fake: FakeVLMServer) -> None:
    vlm = OpenAIChatVLM(config(fake, max_concurrency=3).openai)
    questions = [f"Q{i}" for i in range(5)]
    fake.default = ("answer", "1 m")
    answers = vlm.ask_batch([rgb()] * 5, questions)
    assert [a.text for a in answers] == ["1 m"] * 5
    assert sorted(r["body"]["messages"][0]["content"][0]["text"] for r in fake.requests) == questions


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="estimator.vlm.openai.url: must be an http"):
        OpenAIVLMConfig(url="127.0.0.1:8000")
    with pytest.raises(ConfigError, match="estimator.vlm.samples: must be >= 1"):
        VLMConfig(samples=0)
    with pytest.raises(ConfigError, match="estimator.vlm.backend: unknown 'nope'; registered: .*openai"):
        build_vlm(VLMConfig(backend="nope"))


# --- the estimator adapter ----------------------------------------------------------------------------------

def test_estimator_end_to_end_on_a_simulated_frame(fake: FakeVLMServer, sim_frame: tuple[Frame, float]) -> None:
    frame, gap_m = sim_frame
    cm = 100 * gap_m
    # Three samples as a reasoning model words them; requests run concurrently, so order is arbitrary.
    fake.script = [("answer", f"<think>The can is about 7 cm wide...</think>\n<answer>About {0.9 * cm:.1f} cm."
                              "</answer>"),
                   ("answer", f"The gap is roughly **{gap_m:.4f} m**."),
                   ("answer", f"I'd estimate around {1.1 * cm / 2.54:.3f} inches")]
    estimator = build_estimator(EstimatorConfig(backend="vlm", vlm=config(fake, samples=3)))
    assert isinstance(estimator, VLMDistanceEstimator) and estimator.name == "vlm"
    [estimate] = estimator.estimate(frame, [PAIR], DistanceKind.GAP)
    assert estimate.valid, estimate.detail
    assert estimate.distance_m == pytest.approx(gap_m, rel=1e-3)
    assert estimate.uncertainty_m == pytest.approx(0.1 * gap_m, rel=1e-2)   # std (ddof=1) of 0.9, 1.0, 1.1 x gap
    assert (estimate.stamp_ns, estimate.frame_id) == (frame.stamp_ns, frame.frame_id)
    assert estimate.answer_text.count("\n---\n") == 2 and "inches" in estimate.answer_text
    assert estimate.detail.startswith("3/3 answers parsed")
    assert len(fake.requests) == 3
    for request in fake.requests:
        content = request["body"]["messages"][0]["content"]
        assert content[0]["text"] == "What is the gap between the yellow gripper and the red can?"
        png = base64.b64decode(content[1]["image_url"]["url"].split(",", 1)[1])
        assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)


def test_estimator_failures_become_flagged_estimates(fake: FakeVLMServer, sim_frame: tuple[Frame, float]) -> None:
    frame, _ = sim_frame
    pairs = [PAIR, Pair("yellow gripper", "blue box")]

    fake.default = ("answer", "They are far apart.")
    estimates = VLMDistanceEstimator(config(fake, samples=2)).estimate(frame, pairs, DistanceKind.CENTRE)
    assert [e.reason for e in estimates] == [NoEstimateReason.UNPARSEABLE] * 2
    assert "0/2 answers parsed: no number" in estimates[0].detail
    assert estimates[0].answer_text == "They are far apart.\n---\nThey are far apart."

    fake.default = ("status", 500)
    estimates = VLMDistanceEstimator(config(fake, samples=1, retries=0)).estimate(frame, pairs, "centre")
    assert [e.reason for e in estimates] == [NoEstimateReason.BACKEND_ERROR] * 2
    assert all(not e.valid and "HTTP 500" in e.detail for e in estimates)

    fake.default = ("sleep", 5.0)
    estimates = VLMDistanceEstimator(config(fake, samples=1, timeout_s=0.2)).estimate(frame, [PAIR], "gap")
    assert [e.reason for e in estimates] == [NoEstimateReason.TIMEOUT]


@pytest.mark.parametrize("text, hedged", [
    ("I can't tell from this image.", True), ("I cannot say.", True), ("I'm unsure.", True),
    ("It is impossible to say from this view.", True), ("I am not able to determine the distance.", True),
    ("The can is hidden, so I cannot estimate it.", True), ("It cannot be determined.", True),
    ("Hard to tell.", True), ("No idea.", True), ("<think>I can't tell yet...</think> About 30 cm.", False),
    ("No, it is not.", False), ("About 30 cm.", False), ("I can see both; 30 cm.", False),
])
def test_hedges_says_when_the_model_cannot_tell(text: str, hedged: bool) -> None:
    from spatialvlm_ros.vlm.labels import hedges
    assert hedges(text) is hedged


def test_an_answer_that_cannot_tell_is_abstained_not_unparseable(fake: FakeVLMServer,
                                                                 sim_frame: tuple[Frame, float]) -> None:
    frame, _ = sim_frame
    estimator = VLMDistanceEstimator(config(fake, samples=2, retries=0))
    fake.default = ("answer", "I can't tell from this image.")
    for _ in range(4):   # the model declining is an answer: the circuit breaker never opens on it
        [estimate] = estimator.estimate(frame, [PAIR], "gap")
        assert (estimate.valid, estimate.reason) == (False, NoEstimateReason.ABSTAINED)
    assert np.isnan(estimate.distance_m) and estimator.breaker.allow()
    assert estimate.detail == "2/2 answers abstained: \"I can't tell from this image.\""
    assert estimate.answer_text == "I can't tell from this image.\n---\nI can't tell from this image."

    fake.default = ("answer", "I cannot tell whether they are touching.")   # no "touching" = 0 m
    assert estimator.estimate(frame, [PAIR], "gap")[0].reason is NoEstimateReason.ABSTAINED
    fake.default = ("answer", "They are far apart.")                        # no hedge, no number
    assert estimator.estimate(frame, [PAIR], "gap")[0].reason is NoEstimateReason.UNPARSEABLE

    fake.script = [("answer", "I'm not sure."), ("answer", "About 30 cm.")]  # one declines, one measures
    [estimate] = estimator.estimate(frame, [PAIR], "gap")
    assert estimate.valid and estimate.distance_m == pytest.approx(0.30)
    assert estimate.detail == "1/2 answers parsed: 0.3 m; 1 abstained"
    fake.default = ("answer", "Hard to say, maybe 30 cm.")                  # a hedged number is an estimate
    assert estimator.estimate(frame, [PAIR], "gap")[0].distance_m == pytest.approx(0.30)


def test_circuit_breaker_flags_at_once_probes_and_resumes(fake: FakeVLMServer,
                                                          sim_frame: tuple[Frame, float]) -> None:
    frame, _ = sim_frame
    fake.default = ("status", 500)
    cfg = dataclasses.replace(config(fake, retries=0), breaker_failures=2, breaker_probe_s=0.2)
    estimator = VLMDistanceEstimator(cfg)
    reasons = [estimator.estimate(frame, [PAIR], "gap")[0].reason for _ in range(2)]
    assert reasons == [NoEstimateReason.BACKEND_ERROR] * 2
    asked = len(fake.requests)
    start = time.monotonic()
    [e] = estimator.estimate(frame, [PAIR], "gap")
    assert e.reason is NoEstimateReason.BACKEND_UNAVAILABLE and "HTTP 500" in e.detail
    assert time.monotonic() - start < 0.05 and len(fake.requests) == asked   # not asked: flagged at once
    fake.default = ("answer", "About 1 meter.")
    deadline = time.monotonic() + 3.0
    while not estimator.estimate(frame, [PAIR], "gap")[0].valid:   # probes every 0.2 s find it answering
        assert time.monotonic() < deadline, "no resumption within 3 s"
        time.sleep(0.02)
    assert time.monotonic() - start < 1.5


def test_a_question_the_model_cannot_read_is_bad_input(sim_frame: tuple[Frame, float]) -> None:
    from spatialvlm_ros.config import CompactVLMConfig
    frame, _ = sim_frame
    estimator = VLMDistanceEstimator(VLMConfig(compact=CompactVLMConfig()))
    long_pair = Pair("yellow gripper " * 200, "red can")
    [e] = estimator.estimate(frame, [long_pair], DistanceKind.GAP)
    assert e.reason is NoEstimateReason.BAD_INPUT and "tokens" in e.detail
    assert estimator.breaker.allow()   # the backend is fine: the question was not


class Scripted:
    """A stand-in model: answers are given per call; questions are recorded."""

    name = "scripted"

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.questions: list[str] = []

    def ask(self, image: np.ndarray, question: str, depth: np.ndarray | None = None) -> VLMAnswer:
        return self.ask_batch([image], [question])[0]

    def ask_batch(self, images: Any, questions: Any, depths: Any = None) -> list[VLMAnswer]:
        self.questions += questions
        return [VLMAnswer(t, parse_answer(t), 1.0) for t in self.texts[:len(questions)]]


@pytest.mark.parametrize("texts, distance, uncertainty", [
    (["1 m"], 1.0, None),                         # one value: no spread known
    (["between 1 and 2 m"], 1.5, 0.5),            # one range: its half-range
    (["1 m", "no idea", "3 m"], 2.0, 2 ** 0.5),   # the unparsed sample is left out
])
def test_estimator_statistics(sim_frame: tuple[Frame, float], texts: list[str], distance: float,
                              uncertainty: float | None) -> None:
    frame, _ = sim_frame
    [e] = VLMDistanceEstimator(VLMConfig(samples=len(texts)), vlm=Scripted(texts)).estimate(frame, [PAIR], "gap")
    assert e.valid and e.distance_m == pytest.approx(distance)
    if uncertainty is None:
        assert np.isnan(e.uncertainty_m)
    else:
        assert e.uncertainty_m == pytest.approx(uncertainty)


def test_sampled_phrasing_is_seeded(sim_frame: tuple[Frame, float]) -> None:
    frame, _ = sim_frame

    def questions(seed: int, stamp_ns: int) -> list[str]:
        vlm = Scripted(["1 m"] * 8)
        VLMDistanceEstimator(VLMConfig(samples=8, phrasing="sampled"), vlm=vlm, seed=seed).estimate(
            dataclasses.replace(frame, stamp_ns=stamp_ns), [PAIR], DistanceKind.CENTRE)
        return vlm.questions

    first = questions(0, 10)
    assert first == questions(0, 10)
    assert first != questions(0, 11) or first != questions(1, 10)
    allowed = {t.format(A="the yellow gripper", B="the red can") for t in DISTANCE_QUESTIONS[DistanceKind.CENTRE]}
    assert set(first) <= allowed and len(set(first)) > 1


def test_ask_cli_prints_answers_and_parsed_metres(fake: FakeVLMServer, capsys: pytest.CaptureFixture) -> None:
    from spatialvlm_ros.cli import main
    url = config(fake).openai.url
    status = main(["ask", "sim", "How far is the yellow gripper from the red can?", "--backend", "openai",
                   "--url", url, "--samples", "2", "--timeout", "5", "--api-key-env", KEY_ENV])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert status == 0 and len(lines) == 2
    assert all(line["valid"] and line["distance_m"] > 0 and line["answer"] for line in lines)
    assert main(["ask", "sim", "--backend", "openai", "--url", url]) == 2   # neither a question nor --pair
    # A yes/no question answered is an answer (exit 0, its label), though it holds no distance; a hedge is not.
    ask = ["ask", "sim", "Is the red can left of the blue box?", "--backend", "openai", "--url", url, "--timeout", "5",
           "--api-key-env", KEY_ENV]
    for reply, status, label, answered in (("Yes, it is.", 0, "yes", True), ("I can't tell.", 1, None, False)):
        fake.script.append(("answer", reply))
        assert main(ask) == status, reply
        [line] = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
        assert (line["label"], line["answered"], line["valid"], line["distance_m"]) == (label, answered, False, None)
    # A flag of another backend is refused, naming the backend that takes it.
    assert main(["ask", "sim", "How far?", "--backend", "compact", "--url", url]) == 2
    from spatialvlm_ros.cli import build_parser
    from spatialvlm_ros.cli.vlm import estimator_config_from_args
    with pytest.raises(ConfigError, match="--url is a setting of the openai backend, not of 'compact'"):
        args = build_parser().parse_args(["ask", "sim", "Q?", "--backend", "compact", "--url", url])
        estimator_config_from_args(args)


class ByImage(Scripted):
    """Answers by which image it is asked about: ``texts[image_index]``, images told apart by content."""

    def __init__(self, images: list[np.ndarray], texts: list[str]) -> None:
        super().__init__(texts)
        self.known = images
        self.asked: list[int] = []

    def ask_batch(self, images: Any, questions: Any, depths: Any = None) -> list[VLMAnswer]:
        self.questions += questions
        self.asked += [next(i for i, k in enumerate(self.known) if np.array_equal(k, im)) for im in images]
        return [VLMAnswer(self.texts[i], parse_answer(self.texts[i]), 1.0) for i in self.asked[-len(images):]]


def test_mirror_asks_each_sample_on_the_mirror_image_too_and_averages(sim_frame: tuple[Frame, float]) -> None:
    """Per pair: k questions on the image, the same k on its mirror; the estimate is the mean of all answers."""
    frame, _ = sim_frame
    mirrored = frame.rgb[:, ::-1]
    vlm = ByImage([frame.rgb, mirrored], ["10 cm", "20 cm"])
    estimator = VLMDistanceEstimator(VLMConfig(samples=2, mirror=True, phrasing="sampled"), vlm=vlm, seed=3)
    other = Pair("yellow gripper", "blue box")
    can, box = estimator.estimate(frame, [PAIR, other], DistanceKind.GAP)
    assert vlm.asked == [0, 0, 1, 1, 0, 0, 1, 1]
    assert vlm.questions[:2] == vlm.questions[2:4] and vlm.questions[4:6] == vlm.questions[6:]
    assert "blue box" in vlm.questions[4] and "red can" in vlm.questions[0]
    assert can.valid and can.distance_m == pytest.approx(0.15) and box.distance_m == pytest.approx(0.15)
    assert can.detail.startswith("4/4 answers parsed")
    plain = VLMDistanceEstimator(VLMConfig(samples=2), vlm=ByImage([frame.rgb, mirrored], ["10 cm", "20 cm"]))
    assert plain.estimate(frame, [PAIR], DistanceKind.GAP)[0].distance_m == pytest.approx(0.10)
