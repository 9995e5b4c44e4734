"""spatial_reward_node: camera frames in, gripper-to-object distance and a dense reward out.

Subscribes (relative names, remap freely; while active):
    ``topics.image`` (sensor_msgs/Image, or ``<image>/compressed`` CompressedImage),
    ``topics.depth`` (sensor_msgs/Image 16UC1 mm or 32FC1 m, registered to colour; "" = none),
    ``topics.camera_info`` (sensor_msgs/CameraInfo).
Publishes:
    ``reward`` (std_msgs/Float32): the pairs' rewards combined;
    ``reward/<object>`` and ``distance/<object>`` (std_msgs/Float32) per pair (distance NaN when invalid);
    ``estimates`` (diagnostic_msgs/DiagnosticArray, header = the source frame's): per pair the
    distance, uncertainty, validity, reason, reward and latencies;
    ``markers`` (visualization_msgs/MarkerArray): the measured segment and its length;
    ``/diagnostics`` (diagnostic_msgs/DiagnosticArray): rates, latency, valid ratio, drops and errors over a
    sliding window (``diagnostics_window_s``), and what is wrong when something is.

Also answers free-text spatial questions about the latest frame: ``~/question`` (std_msgs/String, the
question or JSON ``{"question": ..., "options": {...}, "id": ...}``) -> ``~/answer`` (std_msgs/String, JSON:
see :mod:`spatialvlm_ros.ros.questions`), on a thread of its own with the planner of ``reasoning.planner``.

A lifecycle node (``rclpy.lifecycle``; services ``<node>/change_state``, ``<node>/get_state``):

* unconfigured: parameters are declared and checked; nothing is loaded;
* configure: builds the estimator (loads its models; the load time and resident memory are logged),
  the planner and the output publishers; -> inactive;
* activate: subscribes to the camera and publishes; deactivate: unsubscribes and stops publishing, keeping
  the estimator; cleanup: releases the estimator, the planner and the publishers (-> unconfigured);
  shutdown: the same from any state (-> finalized).

``autostart`` (default true, read at start) configures and activates at start. ``/diagnostics`` publishes in
every state (from a thread of its own, so also while a model loads) and names the state.

Latest frame wins: callbacks only park the newest colour/depth pair; one worker thread decodes and
estimates it, so a slow estimate drops frames instead of building a backlog.

The worker never dies of a frame: any exception while processing one becomes a flagged
``internal_error`` estimate (exception type, frame stamp) and the next frame is processed. A supervisor
timer restarts the worker should it ever stop, and /diagnostics says ERROR. An estimator parameter changed
on a configured node builds the new estimator in a background thread: the old one keeps serving until the
new one is ready, and one that fails to build is refused and its parameters set back.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import gc
import math
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Deque, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.type_support import check_for_type_support
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float32, String
from visualization_msgs.msg import Marker, MarkerArray

from spatialvlm_ros.config import EstimatorConfig, ReasoningConfig, SpatialRewardConfig, to_flat
from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.types import DistanceEstimate, NoEstimateReason, Pair
from spatialvlm_ros.estimation import (DistanceEstimator, build_error, build_estimator, loads_models,
                                       preflight_estimator)
from spatialvlm_ros.estimation.vlm import VLMDistanceEstimator
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.messages.conversions import frame_from_messages, intrinsics_from_camera_info, stamp_to_ns
from spatialvlm_ros.perception.colours import colour_table
from spatialvlm_ros.reasoning.llm import LLMPlanner
from spatialvlm_ros.reasoning.planner import DeterministicPlanner
from spatialvlm_ros.reasoning.tools import EstimatorTools, SpatialTools, VLMTools
from spatialvlm_ros.reward import CombinedReward, MultiPairReward, build_reward
from spatialvlm_ros.ros import params
from spatialvlm_ros.ros.gripper_source import GripperSource
from spatialvlm_ros.ros.questions import Question, QuestionDesk, answer_payload, dumps, parse_question, refusal
from spatialvlm_ros.ros.sync import make_synchronizer

NODE_NAME = "spatial_reward_node"
# Read once at start: changing them would mean re-creating subscriptions mid-stream.
FIXED_AT_START = ("topics.", "qos.", "sync.", "autostart")
# ... except these, read per frame.
SETTABLE_AT_RUNTIME = ("topics.max_image_pixels",)
SUPERVISOR_PERIOD_S = 0.2      # worker health, estimator swaps
LOG_EVERY_S = 2.0              # the same (pair, reason) is logged at most this often
IDLE_WAIT_S = 2.0              # deactivate waits this long at most for the worker to finish its frame
SWAP_WAIT_S = 0.05             # a swap ready within this is answered at once (the executor waits that long)
# Reasons that count as errors in /diagnostics; the others (not_visible, no_depth, ...) describe the scene.
ERROR_REASONS = frozenset({NoEstimateReason.BAD_INPUT, NoEstimateReason.NO_CAMERA_INFO, NoEstimateReason.TIMEOUT,
                           NoEstimateReason.BACKEND_ERROR, NoEstimateReason.BACKEND_UNAVAILABLE,
                           NoEstimateReason.INTERNAL_ERROR})
# Lifecycle states in which the node is configured (it holds an estimator and its publishers).
CONFIGURED = frozenset({"inactive", "active", "activating", "deactivating"})
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
# What configure and activate publish and subscribe. Their C type support (shared libraries, loaded on first use
# and never unloaded) is loaded at start, as imports are, rather than counted as memory cleanup failed to return.
LIFECYCLE_MESSAGE_TYPES = (Float32, MarkerArray, CameraInfo, Image, CompressedImage)


@dataclass(frozen=True)
class _Pipeline:
    """What one frame goes through; swapped whole when a parameter changes (never half-updated).

    ``estimator`` is None while the node is unconfigured; ``config.estimator`` is always the serving one's
    (or, unconfigured, the one configure will build).
    """

    config: SpatialRewardConfig
    estimator: DistanceEstimator | None
    reward: MultiPairReward


class _Swap:
    """An estimator being built in a background thread (the executor never waits for a model to load)."""

    def __init__(self, config: EstimatorConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self.estimator: DistanceEstimator | None = None
        self.error = ""
        self.cancelled = False
        self.thread = threading.Thread(target=self._build, name="estimator_build", daemon=True)
        self.thread.start()

    def _build(self) -> None:
        if loads_models(self.config):      # a build that fails never imports torch into the serving process
            self.error = preflight_estimator(self.config)
            if self.error or self.cancelled:
                return
        try:
            self.estimator = build_estimator(self.config)
        except Exception as err:   # noqa: BLE001 - any failure refuses the swap, with its reason
            self.error = build_error(err)

    def done(self, wait_s: float = 0.0) -> bool:
        self.thread.join(timeout=wait_s)
        return not self.thread.is_alive()

    def describe(self) -> str:
        return f"{_estimator_name(self.config)} (loading for {time.monotonic() - self.started:.1f} s)"


def _estimator_name(config: EstimatorConfig) -> str:
    if config.backend == "vlm":
        return f"vlm/{config.vlm.backend}"
    return f"{config.backend}/{config.grounding}"


class _Events:
    """Timestamped events (monotonic seconds) of one kind, forgotten once older than the horizon."""

    def __init__(self) -> None:
        self.items: Deque[tuple[float, Any]] = collections.deque()

    def add(self, t: float, value: Any, horizon_s: float) -> None:
        self.items.append((t, value))
        while self.items and self.items[0][0] < t - horizon_s:
            self.items.popleft()

    def since(self, t0: float) -> list[Any]:
        return [v for t, v in self.items if t >= t0]

    def count(self, t0: float) -> int:
        return sum(1 for t, _ in self.items if t >= t0)

    def last(self) -> tuple[float, Any] | None:
        return self.items[-1] if self.items else None


class _Stats:
    """What /diagnostics reports: totals since start, and events over the sliding window (thread-safe)."""

    KINDS = ("colour", "depth", "pairs", "camera_info", "out", "dropped", "estimates", "errors", "latency",
             "restarts", "swap_failures", "internal_errors", "questions", "answers", "refusals")

    def __init__(self, window_s: float) -> None:
        self.lock = threading.Lock()
        self.window_s = window_s
        self.started = time.monotonic()
        self.totals = collections.Counter()
        self.events = {kind: _Events() for kind in self.KINDS}

    def add(self, kind: str, value: Any = None, t: float | None = None) -> None:
        t = time.monotonic() if t is None else t
        with self.lock:
            self.totals[kind] += 1
            # Twice the window: a shorter window set at run time still has its events.
            self.events[kind].add(t, value, max(2 * self.window_s, 10.0))


def _rate(count: int, span_s: float) -> float:
    return count / span_s if span_s > 0 else 0.0


class SpatialRewardNode(LifecycleNode):
    """Measures gripper-to-object distances in camera frames and publishes a dense reward; answers questions."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._threads_stop = threading.Event()      # set when the node goes: diagnostics and questions end
        for msg_type in LIFECYCLE_MESSAGE_TYPES:
            check_for_type_support(msg_type)
        self.unknown_parameters = params.declare_config_parameters(self, SpatialRewardConfig)
        for name in self.unknown_parameters:
            self.get_logger().error(f"unknown parameter {name!r} ignored (see config/spatial_reward.yaml)")
        config = params.read_config(self, SpatialRewardConfig)
        self._check_topic_names(config)             # a bad name stops the node now, whatever autostart says
        self._stats = _Stats(config.diagnostics_window_s)
        self._camera_info_key: Any = None
        self._camera_info_error = ""
        self._intrinsics: CameraIntrinsics | None = None
        self._slot: tuple[Any, Any, int] | None = None
        self._slot_cv = threading.Condition()
        self._stopping = False
        self._last_logged: dict[Any, float] = {}
        self._busy: tuple[float, int] | None = None     # (since, frame stamp) while the worker is on a frame
        self._worker: threading.Thread | None = None
        self._worker_death = ""
        self._swap: _Swap | None = None
        self._last_swap_error = ""
        self._subscriptions_made: list[Any] = []        # the camera subscriptions while active
        self._sync_keepalive: Any = None
        self._sync_kind = ""
        self._outputs: _Outputs | None = None            # the lifecycle publishers while configured
        self._latest_frame: Frame | None = None          # the last frame the worker decoded (for questions)
        self._planner: Any = None
        self._lifecycle_error = ""                      # why the last transition failed
        self._loading: tuple[float, str] | None = None  # (since, estimator) while configure builds
        self._load_figures: dict[str, str] = {}
        self._image_topic, self._depth_topic = _image_topic(config), config.topics.depth

        self._pipeline = _Pipeline(config, None, build_reward(config.reward, config.pairs))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._answer_pub = self.create_publisher(String, "~/answer", reliable)
        self._desk = QuestionDesk(self._answer, self._publish_answer, self._question_error)
        self.create_subscription(String, "~/question", self._on_question, reliable)
        self._gripper_source = GripperSource(self, config.estimator.gripper)   # estimator.gripper.source: pose
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diag_wake = threading.Event()
        self._diag_thread = threading.Thread(target=self._diagnostics_loop, name="diagnostics", daemon=True)
        self._diag_thread.start()
        self._supervisor = self.create_timer(SUPERVISOR_PERIOD_S, self._supervise)
        self._start_worker()
        start = ("autostart: configuring and activating" if config.autostart
                 else "autostart false: unconfigured, waiting for change_state")
        self.get_logger().info(
            f"measuring {[str(p) for p in config.pairs]} ({config.estimator.distance}, "
            f"{_estimator_name(config.estimator)}); image {self._image_topic}, depth {config.topics.depth or '(none)'}"
            f"; resident memory {_rss_mb():.1f} MB; {start}")
        if config.autostart:
            for transition, trigger in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
                if trigger() != SUCCESS:     # exit 2 from main(), naming the problem
                    why = self._lifecycle_error or f"{transition} failed (see the log)"
                    self.destroy_node()
                    raise ConfigError(why)

    # ------------------------------------------------------------------ lifecycle
    def lifecycle_state(self) -> str:
        """The current lifecycle state's label (unconfigured, inactive, active, finalized, or a transition's)."""
        try:
            return self._state_machine.current_state[1]
        except Exception:   # noqa: BLE001 - the state machine is gone (the node is being destroyed)
            return "finalized"

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Build the estimator (its models), the planner and the output publishers."""
        config = self._pipeline.config
        name = _estimator_name(config.estimator)
        rss_before, started = _rss_mb(), time.monotonic()
        self._loading = (started, name)
        self._publish_diagnostics()
        step = f"cannot build the estimator ({name})"
        try:
            estimator = build_estimator(config.estimator)
            step = f"cannot make the {config.reasoning.planner} planner"
            planner = _make_planner(config.reasoning)
            step = "cannot create the publishers"
            self._make_outputs(config.pairs)
        except Exception as err:   # noqa: BLE001 - configure fails, naming why; the node stays unconfigured
            self._loading = None
            self._destroy_outputs()
            return self._failed("configure", f"{step}: {build_error(err)}")
        load_s, rss_after = time.monotonic() - started, _rss_mb()
        self._pipeline = _Pipeline(config, estimator, build_reward(config.reward, config.pairs))
        self._planner = planner
        self._loading = None
        self._lifecycle_error = ""
        self._load_figures = {"load_s": f"{load_s:.3f}", "rss_mb_before_configure": f"{rss_before:.1f}",
                              "rss_mb_after_configure": f"{rss_after:.1f}"}
        self.get_logger().info(f"configured: estimator {name} built in {load_s:.2f} s; planner {planner.name}; "
                               f"resident memory {rss_before:.1f} -> {rss_after:.1f} MB")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the publishers, then subscribe to the camera (questions wait for a fresh frame)."""
        self._latest_frame = None
        result = super().on_activate(state)
        if result != SUCCESS:
            return result
        try:
            self._subscribe(self._pipeline.config)
        except Exception as err:   # noqa: BLE001 - activate fails, naming why; the node stays inactive
            super().on_deactivate(state)
            self._unsubscribe()
            return self._failed("activate", f"{type(err).__name__}: {err}")
        self._lifecycle_error = ""
        self.get_logger().info(f"active: image {self._image_topic}, depth {self._depth_topic or '(none)'}, "
                               f"pairing by {self._sync_kind}")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop publishing; the estimator stays loaded."""
        self._unsubscribe()
        result = super().on_deactivate(state)
        self.get_logger().info("inactive: unsubscribed, publishing stopped; the estimator stays loaded")
        return result

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the estimator, the planner and the publishers (back to unconfigured)."""
        self._release()
        self.get_logger().info(f"unconfigured: estimator released; resident memory {_rss_mb():.1f} MB")
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: unsubscribe, release everything (-> finalized)."""
        self._unsubscribe()
        self._release()
        self.get_logger().info(f"finalized (from {state.label}); resident memory {_rss_mb():.1f} MB")
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release what it made and go back to unconfigured."""
        self.get_logger().error(f"lifecycle error in a transition from {state.label}; releasing everything")
        self._unsubscribe()
        self._release()
        return SUCCESS

    def _failed(self, transition: str, why: str) -> TransitionCallbackReturn:
        self._lifecycle_error = f"{transition} failed: {why}"
        self.get_logger().error(self._lifecycle_error)
        return FAILURE

    def _release(self) -> None:
        """Drop the estimator, a swap in progress, the planner, the last frame and the publishers; return memory.

        A swap in progress is dropped, but its settings (the parameters already say them) are what the next
        configure builds.
        """
        self._drop_configured()
        # Only now, with _drop_configured's locals (the old pipeline, hence the estimator) gone: collected and
        # trimmed from within it, the estimator and its colour table outlived the trim (+4.5 MB after cleanup).
        colour_table.cache_clear()   # the colour prompt's lookup table (4.4 MB), rebuilt by the next configure
        gc.collect()
        _trim_heap()
        self._load_figures["rss_mb_after_cleanup"] = f"{_rss_mb():.1f}"

    def _drop_configured(self) -> None:
        """:meth:`_release` but for returning the memory: drops the node's references."""
        pipeline, swap = self._pipeline, self._swap
        config = pipeline.config
        if swap is not None:
            swap.cancelled = True
            self._swap = None
            config = dataclasses.replace(config, estimator=swap.config)
        self._destroy_outputs()
        self._pipeline = dataclasses.replace(pipeline, config=config, estimator=None)
        self._planner = None
        self._latest_frame = None
        self._intrinsics, self._camera_info_key, self._camera_info_error = None, None, ""

    def _make_outputs(self, pairs: Sequence[Pair]) -> None:
        """The lifecycle publishers (disabled until activate): reward, estimates, markers and per pair."""
        self._outputs = _Outputs(self.create_lifecycle_publisher(Float32, "reward", 10),
                                 self.create_lifecycle_publisher(DiagnosticArray, "estimates", 10),
                                 self.create_lifecycle_publisher(MarkerArray, "markers", 10), {})
        self._ensure_pair_publishers(pairs)

    def _destroy_outputs(self) -> None:
        outputs, self._outputs = self._outputs, None
        if outputs is None:
            return
        for pub in (outputs.reward, outputs.estimates, outputs.markers,
                    *(p for pair in outputs.pairs.values() for p in pair)):
            self.destroy_lifecycle_publisher(pub)

    # ------------------------------------------------------------------ questions
    def _on_question(self, msg: String) -> None:
        """Queue a question for the desk's thread; refuse at once when inactive or malformed."""
        q = parse_question(msg.data)
        state = self.lifecycle_state()
        self._stats.add("questions", None)
        if q.error:
            self._publish_answer(refusal(q, "bad_question", q.error, state))
        elif state != "active":
            self._publish_answer(refusal(q, "inactive", f"the node is {state}: questions are answered when it is "
                                                        "active", state))
        else:
            self._desk.submit(q, state)

    def _answer(self, q: Question) -> dict[str, Any]:
        """Answer ``q`` about the latest decoded frame with the serving estimator (on the desk's thread)."""
        state = self.lifecycle_state()
        pipeline, frame, planner = self._pipeline, self._latest_frame, self._planner
        if state != "active":
            return refusal(q, "inactive", f"the node is {state}: questions are answered when it is active", state)
        if frame is None:
            return refusal(q, "no_frame", "no camera frame has been decoded yet", state)
        if pipeline.estimator is None or planner is None:
            return refusal(q, "backend_unavailable", "no estimator is loaded", state, frame.stamp_ns, frame.frame_id)
        config = pipeline.config
        options: dict[str, Any] = {"opening_m": config.reasoning.opening_m, **q.options}
        objects = [str(o) for o in options.get("objects") or _pair_phrases(config.pairs)]
        answer = planner.answer(q.question, _tools(pipeline.estimator, frame, objects), options)
        return answer_payload(q, answer, frame.stamp_ns, frame.frame_id, state)

    def _publish_answer(self, payload: dict[str, Any]) -> None:
        self._answer_pub.publish(String(data=dumps(payload)))
        self._stats.add("answers" if payload["valid"] else "refusals", payload["latency_ms"])

    def _question_error(self, text: str) -> None:
        if self._should_log(("question",)):
            self.get_logger().error(f"question: {text}")

    # ------------------------------------------------------------------ inputs
    def _check_topic_names(self, config: SpatialRewardConfig) -> None:
        """A topic name rclpy refuses is a configuration error naming its key, not a traceback (at start)."""
        for key, topic in (("topics.image", _image_topic(config)), ("topics.depth", config.topics.depth),
                           ("topics.camera_info", config.topics.camera_info)):
            if topic:
                try:
                    self.resolve_topic_name(topic)
                except Exception as err:   # noqa: BLE001 - rclpy raises several kinds for a bad name
                    raise ConfigError(f"{key}: {topic!r} is not a valid topic name: {err}") from err
        self._check_pair_topics(config.pairs)

    def _check_pair_topics(self, pairs: Sequence[Pair]) -> None:
        for pair in pairs:
            for topic in (f"reward/{pair.slug}", f"distance/{pair.slug}"):
                try:
                    self.resolve_topic_name(topic)
                except Exception as err:   # noqa: BLE001 - rclpy raises several kinds for a bad name
                    raise ConfigError(f"pairs: the object {pair.target!r} gives no valid topic name "
                                      f"(reward/{pair.slug[:40]}...): {err}".splitlines()[0]) from err

    def _subscribe(self, config: SpatialRewardConfig) -> None:
        """Subscribe to camera_info and the images (activate)."""
        reliability = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
                       "reliable": ReliabilityPolicy.RELIABLE}[config.qos.reliability]
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=config.qos.depth, reliability=reliability)
        image_type = CompressedImage if config.topics.transport == "compressed" else Image
        made = self._subscriptions_made
        made.append(self.create_subscription(CameraInfo, config.topics.camera_info, self._on_camera_info, qos))
        if config.topics.depth:
            self._sync_kind, self._sync_keepalive, subs = make_synchronizer(
                self, (image_type, self._image_topic, qos), (Image, config.topics.depth, qos),
                self._on_frame, config.sync.slop_s, config.sync.queue_size, tap=self._on_stream)
            made.extend(subs)
        else:
            self._sync_kind, self._sync_keepalive = "none (monocular)", None
            made.append(self.create_subscription(image_type, self._image_topic, self._on_monocular, qos))

    def _unsubscribe(self) -> None:
        """Destroy the camera subscriptions, drop a parked frame and let the worker finish its own (deactivate)."""
        made, self._subscriptions_made = self._subscriptions_made, []
        for sub in made:
            self.destroy_subscription(sub)
        self._sync_keepalive = None
        with self._slot_cv:
            self._slot = None
        deadline = time.monotonic() + IDLE_WAIT_S
        while self._busy is not None and time.monotonic() < deadline:
            time.sleep(0.005)

    def _on_stream(self, index: int, msg: Any) -> None:
        """Every colour (0) and depth (1) message before pairing: tells "no images" from "never paired"."""
        try:
            stamp = stamp_to_ns(msg.header.stamp)
        except Exception:   # noqa: BLE001 - a message without a usable stamp still arrived
            stamp = 0
        self._stats.add("colour" if index == 0 else "depth", stamp)

    def _on_monocular(self, msg: Any) -> None:
        self._on_stream(0, msg)
        self._on_frame(msg, None)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._stats.add("camera_info")
        key = (msg.width, msg.height, tuple(msg.k))
        if key == self._camera_info_key:
            return
        self._camera_info_key = key
        try:
            self._intrinsics = intrinsics_from_camera_info(msg)
            self._camera_info_error = ""
        except InputError as err:
            self._intrinsics = None
            self._camera_info_error = f"bad camera_info on {self._pipeline.config.topics.camera_info!r}: {err}"
            self._warn(("camera_info",), self._camera_info_error, None)

    def _on_frame(self, image_msg: Any, depth_msg: Any) -> None:
        """Park the newest pair for the worker; an unprocessed older pair is dropped (latest wins)."""
        with self._slot_cv:
            if self._slot is not None:
                self._stats.add("dropped")
            self._slot = (image_msg, depth_msg, time.time_ns())
            self._slot_cv.notify()
        self._stats.add("pairs")

    # ------------------------------------------------------------------ worker
    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._work_guarded, name="spatial_reward_worker", daemon=True)
        self._worker.start()

    def _work_guarded(self) -> None:
        """The worker loop; should it ever end by an exception, record why (the supervisor restarts it)."""
        try:
            self._work()
        except BaseException as err:   # noqa: BLE001 - recorded and reported; the supervisor restarts the worker
            self._worker_death = f"{type(err).__name__}: {err}"
            self.get_logger().error("the worker thread stopped:\n" + "".join(traceback.format_exception(err)))

    def _work(self) -> None:
        while True:
            with self._slot_cv:
                while self._slot is None and not self._stopping:
                    self._slot_cv.wait()
                if self._stopping:
                    return
                item, self._slot = self._slot, None
            stamp_ns = _stamp_or_zero(item[0])
            self._busy = (time.monotonic(), stamp_ns)
            try:
                self._process(*item)
            except Exception as err:   # noqa: BLE001 - publishing or bookkeeping failed: count it, go on
                self._internal_error(err, stamp_ns, "while publishing")
            finally:
                self._busy = None
                # Not kept while waiting: the last frame's messages (2 MB at 640x480) outlived cleanup here.
                del item

    def _process(self, image_msg: Any, depth_msg: Any, received_ns: int) -> None:
        pipeline = self._pipeline
        config = pipeline.config
        stamp_ns = _stamp_or_zero(image_msg)
        frame_id = getattr(getattr(image_msg, "header", None), "frame_id", "")
        try:
            estimates = self._estimate(pipeline, image_msg, depth_msg, stamp_ns, frame_id)
        except Exception as err:   # noqa: BLE001 - whatever a frame does, the next one is processed
            detail = self._internal_error(err, stamp_ns, "while estimating")
            estimates = [DistanceEstimate.invalid(p, config.estimator.distance, NoEstimateReason.INTERNAL_ERROR,
                                                  detail, stamp_ns=stamp_ns, frame_id=frame_id)
                         for p in config.pairs]
        combined = pipeline.reward.update(estimates)
        node_latency_ms = (time.time_ns() - received_ns) / 1e6
        outputs = self._outputs
        if outputs is not None:                # None: cleaned up while this frame was on its way
            self._publish(outputs, config, image_msg.header, estimates, combined, node_latency_ms)
        now = time.monotonic()
        self._stats.add("out", t=now)
        self._stats.add("latency", node_latency_ms, t=now)
        for est in estimates:
            self._stats.add("estimates", (est.valid, est.reason.value if est.reason else ""), t=now)
            if not est.valid:
                if est.reason in ERROR_REASONS:
                    self._stats.add("errors", f"{est.reason.value}: {est.detail}", t=now)
                if est.reason is NoEstimateReason.ABSTAINED:         # the model declined: not an error
                    if self._should_log((str(est.pair), est.reason)):
                        self.get_logger().info(f"frame {stamp_ns}: {est.pair}: abstained: {est.detail}")
                elif est.reason is not NoEstimateReason.INTERNAL_ERROR:   # logged with its traceback already
                    self._warn((str(est.pair), est.reason), f"{est.pair}: {est.reason.value}: {est.detail}",
                               stamp_ns)

    def _estimate(self, pipeline: _Pipeline, image_msg: Any, depth_msg: Any, stamp_ns: int,
                  frame_id: str) -> list[DistanceEstimate]:
        config = pipeline.config
        kind = config.estimator.distance

        def flagged(reason: NoEstimateReason, detail: str) -> list[DistanceEstimate]:
            return [DistanceEstimate.invalid(p, kind, reason, detail, stamp_ns=stamp_ns, frame_id=frame_id)
                    for p in config.pairs]

        intrinsics = self._intrinsics
        if intrinsics is None:
            return flagged(NoEstimateReason.NO_CAMERA_INFO, self._camera_info_error
                           or f"no valid CameraInfo received on {config.topics.camera_info!r} yet")
        try:
            frame = frame_from_messages(image_msg, depth_msg, intrinsics, config.topics.max_image_pixels)
            frame = self._gripper_source.attach(frame)      # the robot's gripper pose at the image stamp
        except InputError as err:
            return flagged(NoEstimateReason.BAD_INPUT, str(err))
        self._latest_frame = frame           # what ~/question is answered about
        if pipeline.estimator is None:
            return flagged(NoEstimateReason.BACKEND_UNAVAILABLE, "no estimator: the node is not configured")
        estimates = pipeline.estimator.estimate(frame, config.pairs, kind)
        if len(estimates) != len(config.pairs):
            raise RuntimeError(f"estimator {pipeline.estimator.name!r} returned {len(estimates)} estimates for "
                               f"{len(config.pairs)} pairs")
        return estimates

    def _internal_error(self, err: BaseException, stamp_ns: int, where: str) -> str:
        """Count and log (rate-limited, with the traceback) an unexpected exception; its one-line detail."""
        detail = f"{type(err).__name__} {where} frame {stamp_ns}: {err}"
        self._stats.add("internal_errors", detail)
        key = ("internal", type(err).__name__, where)
        if self._should_log(key):
            self.get_logger().error(f"internal error (the node goes on with the next frame): {detail}\n"
                                    + "".join(traceback.format_exception(err)).rstrip())
        return detail

    def _should_log(self, key: Any) -> bool:
        now = time.monotonic()
        if now - self._last_logged.get(key, -math.inf) >= LOG_EVERY_S:
            self._last_logged[key] = now
            return True
        return False

    def _warn(self, key: Any, text: str, stamp_ns: int | None) -> None:
        """Log a problem with the frame stamp, each key (pair and reason) at most every 2 s (a bad stream repeats)."""
        if self._should_log(key):
            self.get_logger().warning(text if stamp_ns is None else f"frame {stamp_ns}: {text}")

    # ------------------------------------------------------------------ supervision
    def _supervise(self) -> None:
        """Restart a worker that stopped; finish estimator swaps (on the executor: parameters change here)."""
        try:
            self._check_worker_and_swap()
        except Exception as err:   # noqa: BLE001 - the supervisor itself must not take the node down
            if self._should_log(("supervisor", type(err).__name__)):
                self.get_logger().error(f"supervisor: {type(err).__name__}: {err}")

    def _check_worker_and_swap(self) -> None:
        worker = self._worker
        if worker is not None and not worker.is_alive() and not self._stopping:
            death = self._worker_death or "no exception recorded"
            self.get_logger().error(f"the worker thread stopped ({death}); restarting it")
            self._stats.add("restarts", death)
            self._worker_death = ""
            self._start_worker()
        swap = self._swap
        if swap is not None and swap.done():
            self._finish_swap()

    def _finish_swap(self) -> None:
        swap, self._swap = self._swap, None
        assert swap is not None
        if swap.cancelled:
            return
        pipeline = self._pipeline
        if pipeline.estimator is None:         # cleaned up meanwhile: configure builds what the parameters say
            return
        if swap.error:
            self._last_swap_error = f"estimator swap to {_estimator_name(swap.config)} refused: {swap.error}"
            self._stats.add("swap_failures", self._last_swap_error)
            self.get_logger().error(f"{self._last_swap_error}; {_estimator_name(pipeline.config.estimator)} "
                                    "keeps serving and the parameters are set back")
            self._revert_estimator_parameters(pipeline.config.estimator)
            return
        self._pipeline = dataclasses.replace(
            pipeline, config=dataclasses.replace(pipeline.config, estimator=swap.config), estimator=swap.estimator)
        self.get_logger().info(f"estimator now {_estimator_name(swap.config)} "
                               f"(built in {time.monotonic() - swap.started:.1f} s)")

    def _revert_estimator_parameters(self, serving: EstimatorConfig) -> None:
        flat = to_flat(SpatialRewardConfig(estimator=serving))
        back = [Parameter(name, value=value) for name, value in flat.items()
                if name.startswith("estimator.") and params.plain(self.get_parameter(name).value) != value]
        if back:
            results = self.set_parameters(back)
            failed = [r.reason for r in results if not r.successful]
            if failed:
                self.get_logger().error(f"could not set the estimator parameters back: {failed}")

    # ------------------------------------------------------------------ outputs
    def _ensure_pair_publishers(self, pairs: Sequence[Pair]) -> None:
        """Publishers ``reward/<object>`` and ``distance/<object>`` per pair; a name ROS refuses is a ConfigError.

        Unconfigured, only the names are checked (configure makes the publishers). One made while active is
        enabled at once, like those activate enabled.
        """
        outputs = self._outputs
        if outputs is None:
            self._check_pair_topics(pairs)
            return
        for pair in pairs:
            if pair.slug not in outputs.pairs:
                try:
                    made = (self.create_lifecycle_publisher(Float32, f"reward/{pair.slug}", 10),
                            self.create_lifecycle_publisher(Float32, f"distance/{pair.slug}", 10))
                except Exception as err:   # noqa: BLE001 - rclpy raises several kinds for a bad name
                    raise ConfigError(f"pairs: the object {pair.target!r} gives no valid topic name "
                                      f"(reward/{pair.slug[:40]}...): {err}".splitlines()[0]) from err
                if outputs.reward.is_activated:
                    for pub in made:
                        pub.on_activate(LifecycleState("active", 3))
                outputs.pairs[pair.slug] = made

    @staticmethod
    def _publish(outputs: "_Outputs", config: SpatialRewardConfig, header: Any, estimates: list[DistanceEstimate],
                 combined: CombinedReward, node_latency_ms: float) -> None:
        if combined.defined or config.reward.invalid_policy == "nan":
            outputs.reward.publish(Float32(data=float(combined.reward)))
        out = DiagnosticArray(header=header)
        markers = MarkerArray()
        for i, est in enumerate(estimates):
            step = combined.steps.get(est.pair)
            reward_pub, distance_pub = outputs.pairs[est.pair.slug]
            distance_pub.publish(Float32(data=float(est.distance_m)))
            if step is not None:
                reward_pub.publish(Float32(data=float(step.reward)))
            out.status.append(_estimate_status(est, step, node_latency_ms))
            if config.publish_markers:
                markers.markers.extend(_segment_markers(header, i, est))
        outputs.estimates.publish(out)
        if markers.markers:
            outputs.markers.publish(markers)

    def _diagnosis(self) -> tuple[int, str, dict[str, str]]:
        """Level, message and values of /diagnostics, over the last ``diagnostics_window_s``."""
        config = self._pipeline.config
        s = self._stats
        now = time.monotonic()
        window = config.diagnostics_window_s
        s.window_s = window
        t0 = now - window
        span = min(window, now - s.started)
        with s.lock:
            ev = s.events
            colour, depth = ev["colour"].since(t0), ev["depth"].since(t0)
            pairs, out = ev["pairs"].count(t0), ev["out"].count(t0)
            latencies = ev["latency"].since(t0)
            estimates = ev["estimates"].since(t0)
            errors = ev["errors"].since(t0)
            restarts = ev["restarts"].since(t0)
            swap_failures = ev["swap_failures"].since(t0)
            camera_infos = ev["camera_info"].count(t0)
            dropped = ev["dropped"].count(t0)
            questions = ev["questions"].count(t0)
            answer_ms = ev["answers"].since(t0)
            totals = dict(s.totals)
        lat = np.array(latencies) if latencies else np.array([np.nan])
        answer_lat = np.array(answer_ms) if answer_ms else np.array([np.nan])
        valid_ratio = float(np.mean([v for v, _ in estimates])) if estimates else float("nan")
        reasons = collections.Counter(r for v, r in estimates if not v)
        abstained = reasons.get(NoEstimateReason.ABSTAINED.value, 0)
        # The model declining is no fault of the node's: the valid ratio that warns leaves abstentions out.
        decided = [v for v, r in estimates if r != NoEstimateReason.ABSTAINED.value]
        decided_ratio = float(np.mean(decided)) if decided else 1.0
        swap = self._swap
        state = self.lifecycle_state()
        loading = self._loading
        if self._pipeline.estimator is not None:
            estimator = _estimator_name(config.estimator)
        else:
            estimator = "(loading)" if loading is not None else "(none: not configured)"
        values = {
            "state": state,
            "input_hz": f"{_rate(pairs, span):.2f}", "output_hz": f"{_rate(out, span):.2f}",
            "colour_hz": f"{_rate(len(colour), span):.2f}",
            "depth_hz": f"{_rate(len(depth), span):.2f}" if self._depth_topic else "",
            "latency_ms_p50": f"{np.percentile(lat, 50):.2f}", "latency_ms_p95": f"{np.percentile(lat, 95):.2f}",
            "valid_ratio": f"{valid_ratio:.3f}",
            "invalid_reasons": ",".join(f"{r}:{n}" for r, n in reasons.most_common()),
            "errors": str(len(errors)), "dropped": str(dropped),
            "last_error": errors[-1] if errors else "",
            "window_s": f"{window:g}",
            "frames_received": str(totals.get("pairs", 0)), "frames_processed": str(totals.get("out", 0)),
            "frames_dropped": str(totals.get("dropped", 0)), "errors_total": str(totals.get("errors", 0)),
            "internal_errors_total": str(totals.get("internal_errors", 0)),
            "worker_restarts": str(totals.get("restarts", 0)),
            "estimator": estimator,
            "estimator_swap": swap.describe() if swap is not None else "",
            "last_swap_error": self._last_swap_error,
            "unknown_parameters": ",".join(self.unknown_parameters),
            "abstain_rate": f"{abstained / len(estimates):.3f}" if estimates else "nan",
            "questions": str(questions), "questions_total": str(totals.get("questions", 0)),
            "answer_ms_p50": f"{np.percentile(answer_lat, 50):.2f}",
            "answer_ms_p95": f"{np.percentile(answer_lat, 95):.2f}",
            "rss_mb": f"{_rss_mb():.1f}",
            **self._load_figures,
            "last_lifecycle_error": self._lifecycle_error,
        }
        if state != "active":   # not an error: the node does what its state says
            if loading is not None:
                return (DiagnosticStatus.OK, f"{state}: building estimator {loading[1]} for "
                        f"{now - loading[0]:.1f} s", values)
            if self._lifecycle_error:
                return DiagnosticStatus.WARN, f"{state}: {self._lifecycle_error}", values
            return DiagnosticStatus.OK, _STATE_MESSAGES.get(state, state), values
        worker, busy = self._worker, self._busy
        stall_s = _stall_limit_s(config)
        if worker is None or not worker.is_alive():
            return DiagnosticStatus.ERROR, f"worker stopped ({self._worker_death or 'restarting'})", values
        if restarts:
            return (DiagnosticStatus.ERROR, f"worker stopped and was restarted ({restarts[-1]}); "
                    f"{totals.get('restarts', 0)} restarts so far", values)
        if busy is not None and now - busy[0] > stall_s:
            return (DiagnosticStatus.ERROR, f"worker stalled: busy on frame {busy[1]} for {now - busy[0]:.1f} s "
                    f"(> {stall_s:.0f} s)", values)
        if not colour:
            return DiagnosticStatus.STALE, f"no images on {self._image_topic} for {window:g} s", values
        if self._depth_topic and not depth:
            return (DiagnosticStatus.WARN, f"images on {self._image_topic} but no depth on {self._depth_topic} "
                    f"for {window:g} s", values)
        if self._depth_topic and not pairs:
            offset = _stamp_offset_ms(colour, depth)
            return (DiagnosticStatus.WARN, f"images but no pairing colour/depth (stamp offset {offset:.1f} ms; "
                    f"sync.slop_s {1e3 * config.sync.slop_s:g} ms)", values)
        if self._intrinsics is None:
            if self._camera_info_error:
                return DiagnosticStatus.WARN, self._camera_info_error, values
            return (DiagnosticStatus.WARN, f"no camera_info on {config.topics.camera_info} "
                    f"({camera_infos} messages in {window:g} s)", values)
        if swap_failures:
            return DiagnosticStatus.WARN, swap_failures[-1], values
        if errors or decided_ratio < 0.5 or self.unknown_parameters:
            if reasons:
                reason, n = reasons.most_common(1)[0]
                message = f"{n} of {len(estimates)} estimates in {window:g} s invalid, mostly {reason}"
                if errors:
                    message += f"; last error: {errors[-1]}"
            else:
                message = errors[-1] if errors else "unknown parameters: " + values["unknown_parameters"]
            return DiagnosticStatus.WARN, message, values
        if abstained:
            return (DiagnosticStatus.OK, f"ok; the model abstained on {abstained} of {len(estimates)} estimates "
                    f"in {window:g} s", values)
        return DiagnosticStatus.OK, "ok", values

    def _diagnostics_loop(self) -> None:
        """Publish /diagnostics every ``diagnostics_period_s``, in every state, also while a transition runs.

        A thread of its own rather than an executor timer: configure may hold the executor for as long as a
        model takes to load. A new period takes effect at once (``_diag_wake``).
        """
        next_at = time.monotonic() + self._pipeline.config.diagnostics_period_s
        while not self._threads_stop.is_set():
            woken = self._diag_wake.wait(max(0.0, next_at - time.monotonic()))
            if self._threads_stop.is_set():
                return
            period = self._pipeline.config.diagnostics_period_s
            if woken:
                self._diag_wake.clear()
                next_at = time.monotonic() + period
                continue
            try:
                self._publish_diagnostics()
            except Exception as err:   # noqa: BLE001 - e.g. the context shut down under us (SIGINT)
                if not rclpy.ok(context=self.context):
                    return
                if self._should_log(("diagnostics", type(err).__name__)):
                    self.get_logger().error(f"/diagnostics not published: {type(err).__name__}: {err}")
            next_at = max(next_at + period, time.monotonic())

    def _publish_diagnostics(self) -> None:
        try:
            level, message, values = self._diagnosis()
        except Exception as err:   # noqa: BLE001 - a diagnosis that fails is itself reported
            level, message, values = DiagnosticStatus.ERROR, f"diagnostics failed: {type(err).__name__}: {err}", {}
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: spatial reward", message=message,
                                  hardware_id=self.get_fully_qualified_name(),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, changed: list[Any]) -> Any:
        """Validate a runtime change; apply it, start an estimator swap, or refuse it (never raises)."""
        try:
            return self._set_parameters(changed)
        except Exception as err:   # noqa: BLE001 - a parameter call must never take the node down
            self.get_logger().error(f"parameter change refused: {type(err).__name__}: {err}")
            return params.set_result(False, f"{type(err).__name__}: {err}")

    def _set_parameters(self, changed: list[Any]) -> Any:
        """Validate a runtime change through the typed config; apply it, start an estimator swap, or refuse it.

        Reward, pairs, markers and diagnostics settings apply at once. An estimator setting starts a build in
        a background thread; the current estimator serves until it is ready. A build that fails within
        ``SWAP_WAIT_S`` is refused here with its reason; one that fails later is reported in the log and
        /diagnostics and its parameters are set back.
        """
        pipeline = self._pipeline
        requested = pipeline.config if self._swap is None else dataclasses.replace(
            pipeline.config, estimator=self._swap.config)
        try:
            config = params.updated_config(requested, changed, FIXED_AT_START, SETTABLE_AT_RUNTIME)
            reward = pipeline.reward
            if (config.reward, config.pairs) != (pipeline.config.reward, pipeline.config.pairs):
                reward = build_reward(config.reward, config.pairs)
            self._ensure_pair_publishers(config.pairs)
        except ConfigError as err:
            self.get_logger().warning(f"parameter change refused: {err}")
            return params.set_result(False, str(err))
        serving = pipeline.config.estimator
        estimator = pipeline.estimator
        planner = self._planner
        if config.reasoning != pipeline.config.reasoning and planner is not None:
            try:
                planner = _make_planner(config.reasoning)
            except ConfigError as err:
                self.get_logger().warning(f"parameter change refused: {err}")
                return params.set_result(False, str(err))
        if config.estimator != requested.estimator:
            if self._loading is not None:
                return params.set_result(False, f"configure is building estimator {self._loading[1]}; set "
                                                "estimator.* again when it is done")
            if estimator is None:                      # unconfigured: configure builds what the parameters say
                serving = config.estimator
            elif self._swap is not None:
                if config.estimator == serving:        # back to what serves: forget the pending swap
                    self._swap.cancelled = True
                    self._swap = None
                else:
                    reason = (f"an estimator swap to {self._swap.describe()} is in progress; set estimator.* "
                              "again when it is done")
                    return params.set_result(False, reason)
            else:
                swap = _Swap(config.estimator)
                if swap.done(SWAP_WAIT_S):
                    if swap.error:
                        reason = f"estimator swap to {_estimator_name(config.estimator)} refused: {swap.error}"
                        self.get_logger().warning(f"parameter change refused: {reason}")
                        return params.set_result(False, reason)
                    serving, estimator = config.estimator, swap.estimator
                else:
                    self._swap = swap
                    self.get_logger().info(f"building estimator {_estimator_name(config.estimator)} in the "
                                           f"background; {_estimator_name(serving)} serves until it is ready")
        self._pipeline = _Pipeline(dataclasses.replace(config, estimator=serving), estimator, reward)
        self._planner = planner
        if config.diagnostics_period_s != pipeline.config.diagnostics_period_s:
            self._diag_wake.set()
        if config.pairs != pipeline.config.pairs:
            self.get_logger().info(f"now measuring {[str(p) for p in config.pairs]}")
        return params.set_result(True)

    def destroy_node(self) -> None:
        """Stop the threads, release the estimator, then the node (also after a constructor that failed half-way).

        Whatever the lifecycle state: the camera subscriptions and the estimator go as on shutdown, without
        the transition (the context may already be shut down, e.g. after SIGINT).
        """
        stop = getattr(self, "_threads_stop", None)
        if stop is not None:
            stop.set()
        diag_wake = getattr(self, "_diag_wake", None)
        if diag_wake is not None:
            diag_wake.set()
        worker = getattr(self, "_worker", None)
        if worker is not None:
            with self._slot_cv:
                self._stopping = True
                self._slot_cv.notify()
            worker.join(timeout=2.0)
        desk = getattr(self, "_desk", None)
        if desk is not None:
            desk.close()
        diag = getattr(self, "_diag_thread", None)
        if diag is not None:
            diag.join(timeout=2.0)
        if getattr(self, "_pipeline", None) is not None:
            try:
                self._unsubscribe()
                self._release()
            except Exception as err:   # noqa: BLE001 - the node goes anyway
                self.get_logger().warning(f"releasing on destroy: {type(err).__name__}: {err}")
        # rclpy's LifecycleNode leaves its state machine to the garbage collector, whose finalizer then touches
        # the destroyed node: in a process forked later (multiprocessing), that is a segmentation fault.
        machine = getattr(self, "_state_machine", None)
        if machine is not None:
            machine.destroy_when_not_in_use()
        super().destroy_node()


@dataclass
class _Outputs:
    """The lifecycle publishers of a configured node (enabled while active)."""

    reward: Any
    estimates: Any
    markers: Any
    pairs: dict[str, tuple[Any, Any]]


_STATE_MESSAGES = {
    "unconfigured": "unconfigured: waiting for configure (no estimator loaded)",
    "inactive": "inactive: configured, waiting for activate (not subscribed, not publishing)",
    "finalized": "finalized: shut down; stop the process",
}


def _image_topic(config: SpatialRewardConfig) -> str:
    return config.topics.image + ("/compressed" if config.topics.transport == "compressed" else "")


def _make_planner(config: ReasoningConfig) -> Any:
    """The planner ``reasoning.planner`` names (LLMPlanner raises ConfigError for an unset API key variable)."""
    return LLMPlanner(config.llm) if config.planner == "llm" else DeterministicPlanner()


def _pair_phrases(pairs: Sequence[Pair]) -> list[str]:
    """The objects the pairs name, grippers first, each once: the candidates a question compares by default."""
    return list(dict.fromkeys([p.gripper for p in pairs] + [p.target for p in pairs]))


def _tools(estimator: DistanceEstimator, frame: Frame, objects: list[str]) -> SpatialTools:
    """The atomic queries on ``frame``: a VLM estimator's model asked in words, else the estimator's geometry."""
    if isinstance(estimator, VLMDistanceEstimator):
        return VLMTools(estimator.vlm, frame, objects)
    return EstimatorTools(estimator, frame, objects)


def _rss_mb() -> float:
    """Resident memory of this process (VmRSS), MB; NaN where /proc is not there."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def _trim_heap() -> None:
    """Give freed heap pages back to the system (glibc's malloc_trim), so RSS shows what cleanup freed."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _stamp_or_zero(msg: Any) -> int:
    try:
        return stamp_to_ns(msg.header.stamp)
    except Exception:   # noqa: BLE001 - a message without a usable stamp is still a frame
        return 0


def _stamp_offset_ms(colour: list[int], depth: list[int]) -> float:
    """Signed offset (depth - colour) between the latest colour stamp and its nearest depth stamp, ms."""
    last = colour[-1]
    nearest = min(depth, key=lambda d: abs(d - last))
    return (nearest - last) / 1e6


def _stall_limit_s(config: SpatialRewardConfig) -> float:
    """How long one frame may take before the worker counts as stalled: 10 s, plus a VLM's own deadline."""
    if config.estimator.backend != "vlm":
        return 10.0
    vlm = config.estimator.vlm
    return 10.0 + 2 * (vlm.openai.timeout_s if vlm.backend == "openai" else vlm.transformers.max_time_s)


def _estimate_status(est: DistanceEstimate, step: Any, node_latency_ms: float) -> DiagnosticStatus:
    values = {
        "distance_m": est.distance_m, "uncertainty_m": est.uncertainty_m, "kind": est.kind.value,
        "valid": est.valid, "reason": est.reason.value if est.reason else "",
        "reward": step.reward if step is not None else float("nan"),
        "filtered_distance_m": step.distance_m if step is not None else float("nan"),
        "estimator_ms": est.latency_ms, "node_latency_ms": node_latency_ms,
    }
    return DiagnosticStatus(
        level=DiagnosticStatus.OK if est.valid else DiagnosticStatus.WARN, name=str(est.pair),
        message="ok" if est.valid else est.detail, hardware_id=est.pair.slug,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def _segment_markers(header: Any, index: int, est: DistanceEstimate) -> list[Marker]:
    """A line between the measured points and a text label; DELETE markers when invalid."""
    line = Marker(header=header, ns=f"spatial/{est.pair.slug}", id=2 * index)
    text = Marker(header=header, ns=f"spatial/{est.pair.slug}", id=2 * index + 1)
    if not est.valid or est.gripper_point is None or est.target_point is None:
        line.action = text.action = Marker.DELETE
        return [line, text]
    a, b = Point(x=est.gripper_point[0], y=est.gripper_point[1], z=est.gripper_point[2]), \
        Point(x=est.target_point[0], y=est.target_point[1], z=est.target_point[2])
    line.type, line.action, line.points = Marker.LINE_LIST, Marker.ADD, [a, b]
    line.scale.x = 0.005
    line.color.r, line.color.g, line.color.a = 0.1, 1.0, 1.0
    line.pose.orientation.w = text.pose.orientation.w = 1.0
    text.type, text.action, text.text = Marker.TEXT_VIEW_FACING, Marker.ADD, f"{est.distance_m * 100:.1f} cm"
    text.pose.position = Point(x=(a.x + b.x) / 2, y=(a.y + b.y) / 2 - 0.03, z=(a.z + b.z) / 2)
    text.scale.z = 0.03
    text.color.r = text.color.g = text.color.b = text.color.a = 1.0
    return [line, text]


def main(args: list[str] | None = None) -> None:
    """Console entry point: ``spatial_reward_node --ros-args --params-file config/spatial_reward.yaml``.

    Exits 2, naming the problem, on a configuration that cannot work (a missing or unreadable parameter
    file, a bad value, an estimator that cannot be built); never with a traceback.
    """
    try:
        rclpy.init(args=args)
    except Exception as err:   # noqa: BLE001 - rcl refuses the arguments (e.g. a parameter file it cannot parse)
        print(f"[FATAL] [{NODE_NAME}]: bad arguments: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from err
    node = None
    try:
        node = SpatialRewardNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ConfigError as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"bad configuration: {err}")
        raise SystemExit(2) from err
    except RuntimeError:
        # rclpy's own race on SIGINT: the context can shut down between spin's check and its wait set, which then
        # raises RCLError ("the given context is not valid") instead of ExternalShutdownException.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
