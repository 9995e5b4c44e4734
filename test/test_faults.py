"""Fault injection: the node never goes silent.

Each case replays a fault measured on real node processes (``python -m spatialvlm_ros.ros.spatial_reward_node``
on the run's private DDS domain) while a camera in this process publishes at 10 Hz, and checks that

* estimates keep coming for at least 90% of the frames published during the fault, flagged with the right
  reason (never a silent gap, never a silent zero);
* /diagnostics reports it;
* valid output resumes within 2 s of the fault ending.

VLM faults are played by a local misbehaving chat-completions server (``chat_server.py``). Worker faults that
no input can cause any more (an exception in the estimator, a worker thread that dies) are injected into a node
built in this process, over the same DDS.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from chat_server import ChatCompletionsServer, Drop, Hang, Trickle, completion
from conftest import HarnessNode, NodeProcess
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from spatialvlm_ros.config import SimConfig
from spatialvlm_ros.messages.conversions import (
    camera_info_fields, depth_to_image_fields, rgb_to_image_fields, stamp_to_ns,
)
from spatialvlm_ros.sim import TabletopSim

IMAGE, DEPTH, INFO = "camera/color/image_raw", "camera/aligned_depth_to_color/image_raw", "camera/color/camera_info"
RATE_HZ = 10.0
MIN_PHASE_FRAMES = 6   # the shortest played phase (0.8 s) at 80% of the camera's rate
FAST_DIAGNOSTICS = ["-p", "diagnostics_period_s:=0.25", "-p", "diagnostics_window_s:=1.0"]
RELIABLE = ["-p", "qos.reliability:=reliable"]


def _values(status: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


# --------------------------------------------------------------------------------------------------------------
# The camera, the collected output, and the measures
# --------------------------------------------------------------------------------------------------------------

class Camera:
    """Publishes frames at 10 Hz from a background thread; ``make(stamp_ns)`` builds each (image, depth, info)."""

    def __init__(self, harness: HarnessNode, ns: str, compressed: bool, depth: bool = True) -> None:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        node = harness.node
        self.image_topic = f"/{ns}/{IMAGE}" + ("/compressed" if compressed else "")
        self.image_pub = node.create_publisher(CompressedImage if compressed else Image, self.image_topic, qos)
        self.depth_pub = node.create_publisher(Image, f"/{ns}/{DEPTH}", qos) if depth else None
        self.info_pub = node.create_publisher(CameraInfo, f"/{ns}/{INFO}", qos)
        harness.wait_for(lambda: self.image_pub.get_subscription_count() > 0, 10, f"a subscriber on {self.image_topic}")
        self.make: Callable[[int], tuple[Any, Any, Any]] | None = None
        self.published: list[tuple[int, float]] = []   # (stamp, monotonic time)
        self.wanted: dict[tuple[float, float], int] = {}   # frames each played phase should hold
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._count = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            make = self.make
            if make is not None:
                self._count += 1
                stamp_ns = 1_000_000_000 * 5000 + self._count * 100_000_000
                image, depth, info = make(stamp_ns)
                if info is not None:
                    self.info_pub.publish(info)
                if depth is not None and self.depth_pub is not None:
                    self.depth_pub.publish(depth)
                self.image_pub.publish(image)
                with self._lock:
                    self.published.append((stamp_ns, time.monotonic()))
            next_tick += 1.0 / RATE_HZ
            time.sleep(max(0.0, next_tick - time.monotonic()))

    def play(self, make: Callable[[int], tuple[Any, Any, Any]] | None, seconds: float) -> tuple[float, float]:
        """Publish with ``make`` for ``seconds``; the (start, end) monotonic times of the phase.

        The phase runs on (up to three times as long) until it holds 80% of the frames ``seconds`` should bring: a
        node in this process can starve the camera thread of the GIL, and a phase of a few frames proves little.
        """
        start = time.monotonic()
        self.make = make
        time.sleep(seconds)
        wanted, deadline = int(0.8 * RATE_HZ * seconds), start + 3 * seconds
        while len(self.stamps(start, time.monotonic())) < wanted and time.monotonic() < deadline:
            time.sleep(0.02)
        phase = (start, time.monotonic())
        self.wanted[phase] = wanted
        return phase

    def stamps(self, start: float, end: float) -> list[int]:
        with self._lock:
            return [s for s, t in self.published if start <= t < end]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Output:
    """What the node in namespace ``ns`` published.

    Its estimates by frame stamp (with their receive time), and its /diagnostics status.
    """

    def __init__(self, harness: HarnessNode, ns: str) -> None:
        self.h = harness
        self.ns = ns
        self.estimates: dict[int, tuple[float, dict[str, str]]] = {}
        self.diagnostics: list[tuple[float, Any]] = []
        self._lock = threading.Lock()
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        harness.node.create_subscription(DiagnosticArray, f"/{ns}/estimates", self._on_estimates, qos)
        harness.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos)

    def _on_estimates(self, msg: DiagnosticArray) -> None:
        with self._lock:
            self.estimates[stamp_to_ns(msg.header.stamp)] = (time.monotonic(), {
                **_values(msg.status[0]), "message": msg.status[0].message})

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.hardware_id == f"/{self.ns}/spatial_reward_node":
                with self._lock:
                    self.diagnostics.append((time.monotonic(), status))

    def answers(self, stamps: list[int]) -> list[dict[str, str]]:
        with self._lock:
            return [self.estimates[s][1] for s in stamps if s in self.estimates]

    def first_valid_after(self, t0: float) -> float:
        """Receive time of the first valid estimate received after ``t0`` (inf if none)."""
        with self._lock:
            return min((t for t, v in self.estimates.values() if t >= t0 and v["valid"] == "True"), default=np.inf)

    def statuses(self, since: float) -> list[Any]:
        with self._lock:
            return [s for t, s in self.diagnostics if t >= since]

    def wait_status(self, predicate: Callable[[Any], bool], since: float, timeout: float, what: str) -> Any:
        self.h.wait_for(lambda: any(predicate(s) for s in self.statuses(since)), timeout, what)
        return next(s for s in self.statuses(since) if predicate(s))


# What each case measured, printed at the end of the module (``pytest -s`` shows it: the README's figures).
_MEASURED: dict[str, Any] = {}
_REPORT: list[str] = []


@pytest.fixture(autouse=True)
def _measure(request: pytest.FixtureRequest) -> Iterator[None]:
    _MEASURED.clear()
    yield
    if _MEASURED:
        _REPORT.append(f"{request.node.name}: " + ", ".join(f"{k} {v}" for k, v in _MEASURED.items()))


@pytest.fixture(scope="module", autouse=True)
def _print_report() -> Iterator[None]:
    yield
    print("\nfault cases (answered / published during the fault; reasons; valid again after):")
    print("\n".join(_REPORT))


def assert_keeps_publishing(camera: Camera, out: Output, phase: tuple[float, float], reasons: set[str]) -> list[str]:
    """At least 90% of the phase's frames answered, all flagged with one of ``reasons``; the reasons seen."""
    stamps = camera.stamps(*phase)
    deadline = time.monotonic() + 3.0   # the last frames' answers are on their way (slower on a loaded machine)
    while len(out.answers(stamps)) < len(stamps) and time.monotonic() < deadline:
        time.sleep(0.05)
    answers = out.answers(stamps)
    seen = [a["reason"] for a in answers]
    counts = {r: seen.count(r) for r in sorted(set(seen))}
    _MEASURED.update(answered=f"{len(answers)}/{len(stamps)} ({100 * len(answers) / max(1, len(stamps)):.0f}%)",
                     reasons=counts)
    wanted = camera.wanted.get(phase, MIN_PHASE_FRAMES)   # a phase timed by hand: at least the shortest's
    assert len(stamps) >= wanted, f"the camera fell behind: {len(stamps)} of {wanted} frames in the phase"
    missing = [round((s - stamps[0]) / 1e9, 1) for s in stamps if s not in out.estimates]
    assert len(answers) >= 0.9 * len(stamps), \
        f"{len(answers)} of {len(stamps)} frames answered: {seen}; missing at {missing} s into the phase"
    assert all(a["valid"] == "False" for a in answers) and set(seen) <= reasons, seen
    return seen


def assert_resumes(out: Output, fault_end: float, within_s: float = 2.0) -> float:
    deadline = fault_end + within_s + 1.0
    while out.first_valid_after(fault_end) == np.inf and time.monotonic() < deadline:
        time.sleep(0.05)
    delay = out.first_valid_after(fault_end) - fault_end
    _MEASURED["resumed_s"] = f"{delay:.2f}"
    assert delay <= within_s, f"valid output resumed {delay:.2f} s after the fault ended"
    return delay


# --------------------------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim_frame() -> Any:
    with TabletopSim(SimConfig(width=160, height=120, n_frames=2)) as sim:
        return sim.render(0).frame


def _header(stamp_ns: int) -> Header:
    return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="camera_color_optical_frame")


def raw_frames(frame: Any, depth: bool = True) -> Callable[[int], tuple[Any, Any, Any]]:
    rgb_fields = rgb_to_image_fields(frame.rgb)
    depth_fields = depth_to_image_fields(frame.depth_m, "16UC1")
    info_fields = camera_info_fields(frame.intrinsics)

    def make(stamp_ns: int) -> tuple[Any, Any, Any]:
        header = _header(stamp_ns)
        return (Image(header=header, **rgb_fields), Image(header=header, **depth_fields) if depth else None,
                CameraInfo(header=header, **info_fields))
    return make


def compressed_frames(frame: Any, data: bytes | None = None, depth_offset_ns: int = 0,
                      info: dict[str, Any] | None = None) -> Callable[[int], tuple[Any, Any, Any]]:
    """PNG colour (or ``data``), 16UC1 depth stamped ``depth_offset_ns`` later, CameraInfo (or ``info``)."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
    payload = png.tobytes() if data is None else data
    depth_fields = depth_to_image_fields(frame.depth_m, "16UC1")
    info_fields = info or camera_info_fields(frame.intrinsics)

    def make(stamp_ns: int) -> tuple[Any, Any, Any]:
        return (CompressedImage(header=_header(stamp_ns), format="png", data=payload),
                Image(header=_header(stamp_ns + depth_offset_ns), **depth_fields),
                CameraInfo(header=_header(stamp_ns), **info_fields))
    return make


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A real PNG of ``width`` x ``height`` black pixels: about 1.2 MB that decodes to 1.2 GB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    # Rows of zeros, 500 at a time: after a full flush the deflate state is the same for every block, so one
    # compressed block repeats (the Adler-32 check of the zlib stream is summed over all of them).
    rows, block = 500, b"\0" * ((1 + 3 * width) * 500)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    squeeze.compress(block)
    squeeze.flush(zlib.Z_FULL_FLUSH)
    repeated = squeeze.compress(block) + squeeze.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height // rows):
        adler = zlib.adler32(block, adler)
    idat = b"\x78\xda" + repeated * (height // rows) + squeeze.flush() + struct.pack(">I", adler)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM: the peak) of process ``pid``, KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


# --------------------------------------------------------------------------------------------------------------
# Shared set-up: one harness for the module, one node process (in its own namespace) per group of cases
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def harness(ros_env: dict[str, str]) -> Iterator[HarnessNode]:
    node = HarnessNode()
    yield node
    node.close()


def _parameters(harness: HarnessNode, ns: str) -> Any:
    from rclpy.parameter_client import AsyncParameterClient
    client = AsyncParameterClient(harness.node, f"/{ns}/spatial_reward_node")
    assert client.wait_for_services(timeout_sec=10)
    return client


def _set(harness: HarnessNode, ns: str, *parameters: Parameter) -> Any:
    future = _parameters(harness, ns).set_parameters(list(parameters))
    harness.wait_for(future.done, 10, "set_parameters")
    return future.result().results[0]


def _get(harness: HarnessNode, ns: str, name: str) -> Any:
    future = _parameters(harness, ns).get_parameters([name])
    harness.wait_for(future.done, 10, "get_parameters")
    return future.result().values[0]


class Rig:
    """A node under test (a process, or None for the in-process one), its camera and its output."""

    def __init__(self, harness: HarnessNode, ns: str, node: NodeProcess | None, compressed: bool,
                 depth: bool) -> None:
        self.harness, self.ns, self.node = harness, ns, node
        self.out = Output(harness, ns)
        if node is not None:
            harness.wait_for(lambda: harness.node.count_publishers(f"/{ns}/estimates") > 0 or not node.alive(), 30,
                             "spatial_reward_node to come up")
            assert node.alive(), node.log
        self.camera = Camera(harness, ns, compressed=compressed, depth=depth)

    def set(self, *parameters: Parameter) -> Any:
        return _set(self.harness, self.ns, *parameters)

    def get(self, name: str) -> Any:
        return _get(self.harness, self.ns, name)

    def healthy(self, make: Callable[[int], tuple[Any, Any, Any]]) -> None:
        t0 = time.monotonic()
        self.camera.make = make
        deadline = t0 + 10
        while self.out.first_valid_after(t0) == np.inf:
            assert time.monotonic() < deadline, "no valid estimate from healthy input"
            time.sleep(0.05)

    def close(self) -> None:
        self.camera.make = None
        self.camera.close()
        if self.node is not None:
            assert self.node.alive(), self.node.log
            self.node.stop()


def _start(harness: HarnessNode, ros_env: dict[str, str], logs: Path, ns: str, *args: str, compressed: bool = False,
           depth: bool = True, **env: str) -> Rig:
    node = NodeProcess("spatial_reward_node", ["-r", f"__ns:=/{ns}", *RELIABLE, *FAST_DIAGNOSTICS, *args],
                       {**ros_env, **env}, logs)
    return Rig(harness, ns, node, compressed, depth)


@pytest.fixture(scope="module")
def cam(harness: HarnessNode, ros_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The geometric node on compressed colour + depth; offline, so a learned grounder fails to load."""
    rig = _start(harness, ros_env, tmp_path_factory.mktemp("cam"), "cam", "-p", "topics.transport:=compressed",
                 compressed=True, HF_HUB_OFFLINE="1")
    yield rig
    rig.close()


# --------------------------------------------------------------------------------------------------------------
# Bad images, bad camera_info, unpaired streams, silence, estimator swaps
# --------------------------------------------------------------------------------------------------------------

def test_empty_compressed_image(cam: Rig, sim_frame: Any) -> None:
    camera, out = cam.camera, cam.out
    cam.healthy(compressed_frames(sim_frame))
    phase = camera.play(compressed_frames(sim_frame, data=b""), 1.5)
    camera.make = compressed_frames(sim_frame)
    assert_keeps_publishing(camera, out, phase, {"bad_input"})
    status = out.wait_status(lambda s: "bad_input" in s.message, phase[0], 3, "/diagnostics naming bad_input")
    assert status.level == status.WARN and "empty CompressedImage" in status.message
    assert_resumes(out, phase[1])
    # The window forgets the errors: back to OK with no errors counted.
    status = out.wait_status(lambda s: s.level == s.OK, phase[1] + 1.0, 4, "/diagnostics back to OK")
    assert _values(status)["errors"] == "0" and int(_values(status)["errors_total"]) >= 10


def test_decompression_bomb_is_refused_from_its_header(cam: Rig, sim_frame: Any) -> None:
    camera, out = cam.camera, cam.out
    cam.healthy(compressed_frames(sim_frame))
    bomb = png_bomb()
    assert len(bomb) < 2_000_000
    steady_rss, _ = rss_kib(cam.node.proc.pid)
    phase = camera.play(compressed_frames(sim_frame, data=bomb), 1.0)
    camera.make = compressed_frames(sim_frame)
    assert_keeps_publishing(camera, out, phase, {"bad_input"})
    answer = out.answers(camera.stamps(*phase))[0]
    assert "PNG is 20000x20000" in answer["message"] and "over topics.max_image_pixels" in answer["message"]
    _, peak = rss_kib(cam.node.proc.pid)
    _MEASURED["peak_rss"] = f"{peak / steady_rss:.2f}x steady ({steady_rss // 1024} MB)"
    assert peak < 2 * steady_rss, f"peak RSS {peak} KiB, steady {steady_rss} KiB"
    assert_resumes(out, phase[1])
    # The cap is read per frame: set at run time, it takes effect on the next frame.
    assert cam.set(Parameter("topics.max_image_pixels", value=100)).successful
    changed = time.monotonic()
    cam.harness.wait_for(lambda: any("over topics.max_image_pixels = 100" in a["message"]
                                     for a in out.answers(camera.stamps(changed, time.monotonic()))), 3,
                         "the new cap to refuse the camera's own frames")
    assert cam.set(Parameter("topics.max_image_pixels", value=16_777_216)).successful
    assert_resumes(out, time.monotonic())


def test_camera_info_with_an_infinite_centre(cam: Rig, sim_frame: Any) -> None:
    camera, out = cam.camera, cam.out
    cam.healthy(compressed_frames(sim_frame))
    info = camera_info_fields(sim_frame.intrinsics)
    info["k"] = list(info["k"])
    info["k"][2] = float("inf")
    phase = camera.play(compressed_frames(sim_frame, info=info), 1.0)
    camera.make = compressed_frames(sim_frame)
    assert_keeps_publishing(camera, out, phase, {"no_camera_info"})
    out.wait_status(lambda s: "k[2] (cx) = inf is not finite" in s.message, phase[0], 3, "/diagnostics naming cx")
    assert_resumes(out, phase[1])


def test_colour_and_depth_that_never_pair(cam: Rig, sim_frame: Any) -> None:
    camera, out = cam.camera, cam.out
    cam.healthy(compressed_frames(sim_frame))
    phase = camera.play(compressed_frames(sim_frame, depth_offset_ns=25_000_000), 1.5)
    camera.make = compressed_frames(sim_frame)
    status = out.wait_status(lambda s: s.message.startswith("images but no pairing"), phase[0], 1,
                             "/diagnostics: images but no pairing")
    assert "stamp offset 25.0 ms" in status.message and status.level == status.WARN
    assert_resumes(out, phase[1])


def test_silence_and_the_diagnostics_period(cam: Rig, sim_frame: Any) -> None:
    camera, out = cam.camera, cam.out
    cam.healthy(compressed_frames(sim_frame))
    camera.make = None
    stopped = time.monotonic()
    status = out.wait_status(lambda s: s.level == s.STALE, stopped, 3, "/diagnostics: no images")
    assert status.message.startswith(f"no images on {IMAGE}/compressed")
    # The first STALE window may still count the last frame's pair and estimate, made just after its image
    # arrived before the window; the next one must read zero.
    out.wait_status(lambda s: s.level == s.STALE and _values(s)["output_hz"] == "0.00"
                    and _values(s)["input_hz"] == "0.00", stopped, 4, "/diagnostics: zero rates in silence")

    assert cam.set(Parameter("diagnostics_period_s", value=0.1)).successful
    changed = time.monotonic()
    time.sleep(1.2)
    count = len(out.statuses(changed + 0.2))
    assert 7 <= count <= 13, f"{count} /diagnostics in 1 s at a 0.1 s period"
    refused = cam.set(Parameter("diagnostics_period_s", value=0.0))
    assert not refused.successful and "diagnostics_period_s" in refused.reason
    assert cam.set(Parameter("diagnostics_period_s", value=0.25)).successful


def test_estimator_swap_that_cannot_load_is_refused_without_a_gap(cam: Rig, sim_frame: Any) -> None:
    camera, out = cam.camera, cam.out
    cam.healthy(compressed_frames(sim_frame))
    # Fails at once: refused by the parameter call itself, with its reason.
    instant = cam.set(Parameter("estimator.backend", value="magic"))
    assert not instant.successful and "unknown 'magic'" in instant.reason
    # Takes seconds (imports torch and transformers, then finds no checkpoint offline): accepted, built in the
    # background while the colour prompt keeps serving, then refused and set back.
    start = time.monotonic()
    accepted = cam.set(Parameter("estimator.grounding", value="open_vocab"))
    assert accepted.successful and time.monotonic() - start < 1.0
    busy = cam.set(Parameter("estimator.distance", value="centre"))
    assert not busy.successful and "in progress" in busy.reason
    cam.harness.wait_for(lambda: cam.get("estimator.grounding").string_value == "colour_prompt", 30,
                         "the refused swap to be set back")
    end = time.monotonic()
    stamps = camera.stamps(start, end - 0.3)
    answers = out.answers(stamps)
    missing = [(s - stamps[0]) / 1e9 for s in stamps if s not in out.estimates]
    _MEASURED.update(answered=f"{len(answers)}/{len(stamps)} valid during the swap", swap_s=f"{end - start:.1f}")
    assert len(answers) >= 0.9 * len(stamps) and all(a["valid"] == "True" for a in answers), \
        f"{len(answers)} of {len(stamps)} answered during the swap; missing at {missing} s"
    status = out.wait_status(lambda s: "refused" in _values(s)["last_swap_error"], start, 3,
                             "/diagnostics reporting the refused swap")
    assert "owlv2" in _values(status)["last_swap_error"]
    assert "estimator swap to geometric/open_vocab refused" in cam.node.log


# --------------------------------------------------------------------------------------------------------------
# A misbehaving VLM server
# --------------------------------------------------------------------------------------------------------------

class FaultyServer(ChatCompletionsServer):
    """Answers "About 30 cm." unless ``mode`` says how to misbehave."""

    def __init__(self) -> None:
        self.mode = "ok"
        super().__init__()

    def reply(self, path: str, headers: Any, body: dict[str, Any]) -> Any:
        mode = self.mode
        if mode == "non_utf8":
            return 200, b'{"choices": [{"message": {"content": "\xff\xfe\xfd 30 cm"}}]}'
        if mode == "nested":
            return 200, b"[" * 20_000 + b"]" * 20_000      # 40 kB, far deeper than json can recurse
        if mode == "oversize":
            return 200, completion("30 cm" + " " * 3_000_000)
        if mode == "http500":
            return 500, {"error": {"message": "internal error"}}
        if mode == "drop":
            return Drop()
        if mode == "slow":
            return Hang(30.0)
        if mode == "trickle":
            return Trickle(b'{"choices": [{"message": {"content": "30 cm"}}]}', interval_s=1.0)
        return 200, completion("About 30 cm.")


@pytest.fixture(scope="module")
def vlm(harness: HarnessNode, ros_env: dict[str, str],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rig, FaultyServer]]:
    server = FaultyServer()
    rig = _start(harness, ros_env, tmp_path_factory.mktemp("vlm"), "vlm", "-p", "topics.depth:=''",
                 "-p", "estimator.backend:=vlm", "-p", "estimator.vlm.backend:=openai",
                 "-p", f"estimator.vlm.openai.url:={server.url}", "-p", "estimator.vlm.openai.timeout_s:=0.25",
                 "-p", "estimator.vlm.openai.retries:=0", "-p", "estimator.vlm.breaker_probe_s:=0.5",
                 # The oversize body is found after 100 kB, not 1 MB: well inside the 0.25 s deadline on a busy machine.
                 "-p", "estimator.vlm.openai.max_response_bytes:=100000", depth=False)
    yield rig, server
    server.close()
    rig.close()


VLM_FAULTS = {   # mode: the reason of the first failing frames (then backend_unavailable, the breaker open)
    "non_utf8": "backend_error", "nested": "backend_error", "oversize": "backend_error", "http500": "backend_error",
    "closed_port": "backend_error", "drop": "backend_error", "slow": "timeout", "trickle": "timeout",
}


@pytest.mark.parametrize("mode", list(VLM_FAULTS))
def test_vlm_faults(vlm: tuple[Rig, FaultyServer], sim_frame: Any, mode: str) -> None:
    rig, server = vlm
    camera, out = rig.camera, rig.out
    server.mode = "ok"
    rig.healthy(raw_frames(sim_frame, depth=False))
    if mode == "closed_port":
        server.stop_listening()
    else:
        server.mode = mode
    phase = camera.play(camera.make, 2.0)
    server.mode = "ok"
    server.start_listening()
    # The first faulty request may also outlast the rig's 0.25 s deadline on a busy machine (a timeout opens the
    # breaker at once, so the fault's own reason never shows). What each fault is classified as is tested at the
    # client with a 2 s deadline (test_vlm_server.py); here: flagged, never silent, breaker open, then resumed.
    seen = assert_keeps_publishing(camera, out, phase, {VLM_FAULTS[mode], "timeout", "backend_unavailable"})
    assert {VLM_FAULTS[mode], "timeout"} & set(seen) and "backend_unavailable" in seen, seen
    out.wait_status(lambda s: "backend_unavailable" in _values(s)["invalid_reasons"], phase[0], 2,
                    "/diagnostics counting backend_unavailable")
    assert_resumes(out, phase[1])


def test_a_question_longer_than_the_compact_model_reads(harness: HarnessNode, ros_env: dict[str, str],
                                                        tmp_path: Path, sim_frame: Any) -> None:
    rig = _start(harness, ros_env, tmp_path, "compact", "-p", "topics.depth:=''", "-p", "estimator.backend:=vlm",
                 depth=False)
    try:
        rig.healthy(raw_frames(sim_frame, depth=False))
        long_pair = "very " * 150 + "yellow gripper -> red can"
        changed = time.monotonic()
        assert rig.set(Parameter("pairs", value=[long_pair])).successful
        # The phase starts once the node answers with the new pair (a loaded machine may take a few frames to
        # switch; frames in the switch are not the case under test).
        rig.harness.wait_for(lambda: any(a["reason"] == "bad_input" for a in rig.out.answers(
            rig.camera.stamps(changed, time.monotonic()))), 5, "the long question's first bad_input")
        phase = rig.camera.play(rig.camera.make, 1.5)
        assert_keeps_publishing(rig.camera, rig.out, phase, {"bad_input"})
        end = time.monotonic()
        assert rig.set(Parameter("pairs", value=["yellow gripper -> red can"])).successful
        assert_resumes(rig.out, end)
        # A target whose topic name ROS refuses (reward/<object> over 247 characters) is refused, not fatal.
        refused = rig.set(Parameter("pairs", value=["yellow gripper -> " + "very " * 60 + "red can"]))
        assert not refused.successful and "gives no valid topic name" in refused.reason
        assert "tokens" in rig.node.log
    finally:
        rig.close()


# --------------------------------------------------------------------------------------------------------------
# Start-up: clear errors naming the key, never a traceback
# --------------------------------------------------------------------------------------------------------------

def test_empty_or_malformed_parameters_are_refused_at_start(ros_env: dict[str, str], tmp_path: Path) -> None:
    cases = {"pairs:=[]": "pairs: name at least one", "topics.image:=''": "topics.image: must name",
             "topics.depth:=a//b": "topics.depth: 'a//b' is not a valid topic name"}
    nodes = {}
    for i, arg in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        nodes[arg] = NodeProcess("spatial_reward_node", ["-p", arg], ros_env, tmp_path / str(i))
    for arg, node in nodes.items():
        assert node.proc.wait(timeout=30) == 2, node.log
        assert cases[arg] in node.log and "Traceback" not in node.log, node.log
        node.stop()


# --------------------------------------------------------------------------------------------------------------
# The worker itself: an estimator that raises, a worker thread that dies (in-process node, same DDS)
# --------------------------------------------------------------------------------------------------------------

class _Raising:
    name = "raising"

    def __init__(self, serving: Any) -> None:
        self.serving = serving
        self.armed = True

    def estimate(self, frame: Any, pairs: Any, kind: Any) -> list[Any]:
        if self.armed:
            raise RecursionError("maximum recursion depth exceeded (injected)")
        return self.serving.estimate(frame, pairs, kind)


def test_estimator_exceptions_and_a_dead_worker(harness: HarnessNode, sim_frame: Any) -> None:
    import dataclasses

    from rclpy.executors import SingleThreadedExecutor

    from spatialvlm_ros.ros.spatial_reward_node import SpatialRewardNode
    node = SpatialRewardNode(context=harness.context, namespace="/inproc", parameter_overrides=[
        Parameter("qos.reliability", value="reliable"), Parameter("diagnostics_period_s", value=0.25),
        Parameter("diagnostics_window_s", value=1.0)])
    executor = SingleThreadedExecutor(context=harness.context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    rig = Rig(harness, "inproc", None, compressed=False, depth=True)
    try:
        camera, out = rig.camera, rig.out

        def without_camera_info(stamp_ns: int) -> tuple[Any, Any, Any]:
            image, depth, _info = raw_frames(sim_frame)(stamp_ns)
            return image, depth, None
        phase = camera.play(without_camera_info, 0.8)
        assert_keeps_publishing(camera, out, phase, {"no_camera_info"})
        out.wait_status(lambda s: s.message.startswith(f"no camera_info on {INFO}"), phase[0], 2,
                        "/diagnostics: no camera_info")
        rig.healthy(raw_frames(sim_frame))
        raising = _Raising(node._pipeline.estimator)
        node._pipeline = dataclasses.replace(node._pipeline, estimator=raising)
        phase = camera.play(camera.make, 1.0)
        raising.armed = False
        assert_keeps_publishing(camera, out, phase, {"internal_error"})
        [first] = out.answers(camera.stamps(*phase))[:1]
        assert first["message"].startswith("RecursionError while estimating frame ")
        assert_resumes(out, phase[1])

        # A worker that dies (here of SystemExit, which no frame handler catches) is restarted.
        process = node._process

        def die_once(*args: Any) -> None:
            node._process = process
            raise SystemExit("injected")
        node._process = die_once
        killed = time.monotonic()
        # /diagnostics has its own thread: it may say "worker stopped" a moment before the supervisor's restart.
        out.wait_status(lambda s: s.level == s.ERROR and "worker stopped" in s.message
                        and _values(s)["worker_restarts"] == "1", killed, 3,
                        "/diagnostics: worker stopped and restarted once (ERROR)")
        assert_resumes(out, killed)
    finally:
        rig.close()
        executor.shutdown(timeout_sec=5)
        node.destroy_node()
