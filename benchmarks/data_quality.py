"""Data quality of the data engine: every synthesised answer scored against the simulator's exact truth.

Held-out tabletop scenes (synthesis seed 2,000,000 by default, far from any training seed) are rendered once
(the default tessellation, so drawn cans and balls are within 0.6% of their true shapes), and each object's
exact box is built from its MuJoCo geoms (surfaces sampled densely, in the true canonical frame of the table
plane z = 0.75 m) with the engine's own box definition (min-area footprint rectangle, longer side = width,
height along up). The engine then runs on the same images under three expert conditions:

* ``clean``: the simulator's exact masks and depth;
* ``bleed``: every mask grown by one pixel (a segmenter bleeding into the background);
* ``noisy``: realistic experts: each mask grown or eroded by 0-``--mask-px`` pixels (drawn per object),
  depth with RealSense-like noise (``--depth-sigma`` at 1 m, growing with z^2) and missing readings at
  depth edges (``--edge-dropout``). The noise wrappers live here (an ObjectsExpert and a DepthSource around
  the simulator oracle and the sensor); they are benchmark experts, not registered ones.

Each condition runs with the judge on (the shipped settings) and off. Every emitted answer is scored:

* qualitative (predicate, choice, classify): the label is wrong when the relation's sign on the true boxes
  disagrees with it (an exact tie counts as wrong: the answer asserts a difference that is not there);
* quantitative (quantity, difference): the spoken number (after rounding) over the true value, within
  [0.75, 1.25] (SpatialRGPT-Bench's +-25%; a true 0 needs a 0); ``measured_*`` is the same for the
  engine's unrounded measurement;
* objects: each kept object's width and height over the truth (ratio medians, MAE).

Last line JSON: the noisy condition with the judge on at the top level (``label_error_rate``,
``within_0.75_1.25x``, ``width_ratio_median``, ``height_ratio_median``, ``kept_fraction``), the same with the
judge off under ``judge_off``, every condition under ``conditions``, and ``geometry_ms_per_image`` (scene
extraction of one 320x240 image: oracle experts, support plane, lifting, judge; CPU time of one thread).

Usage: MUJOCO_GL=osmesa python benchmarks/data_quality.py [--images 60] [--seed 2000000] [--smoke]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # one thread: before numpy loads
    os.environ.setdefault(_var, "1")

import dataclasses  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections import defaultdict  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from spatialvlm_ros.config import DepthNoiseConfig  # noqa: E402
from spatialvlm_ros.errors import SimulationError  # noqa: E402
from spatialvlm_ros.frame import Frame  # noqa: E402
from spatialvlm_ros.geometry.plane import Plane, canonical_frame  # noqa: E402
from spatialvlm_ros.perception.experts import DepthPrediction, Detections, ObjectsExpert, Sample  # noqa: E402
from spatialvlm_ros.sim import TabletopSim, apply_depth_noise  # noqa: E402
from spatialvlm_ros.sim.render import GLContext  # noqa: E402
from spatialvlm_ros.sim.scene import TABLE_TOP_Z  # noqa: E402
from spatialvlm_ros.sim.surfaces import table_top_mask  # noqa: E402
from spatialvlm_ros.synthesis.config import SynthesisConfig, load_synthesis_config  # noqa: E402
from spatialvlm_ros.synthesis.engine import synthesize_image  # noqa: E402
from spatialvlm_ros.synthesis.extract import SceneExtractor, image_rng  # noqa: E402
from spatialvlm_ros.synthesis.lifting import upright_box  # noqa: E402
from spatialvlm_ros.synthesis.questions import (CLASSIFY_PAIRS, TYPES_BY_NAME, QAPair, quantity_truth,  # noqa: E402
                                                relation_truth)
from spatialvlm_ros.synthesis.records import Box3D, SceneRecord  # noqa: E402
from spatialvlm_ros.synthesis.sources import SimSource  # noqa: E402

from _common import BenchmarkParser, emit, median  # noqa: E402

# ``within_0.75_1.25x`` is emitted too; FIGURES names its twin ``within_25pct`` (a figure path splits on dots).
FIGURES = ("label_error_rate", "within_25pct", "width_ratio_median", "height_ratio_median", "kept_fraction",
           "judge_off.label_error_rate", "judge_off.within_25pct", "judge_off.width_ratio_median",
           "judge_off.height_ratio_median", "judge_off.kept_fraction",
           "conditions.clean.judge_off.width_ratio_median", "conditions.clean.judge_off.height_ratio_median",
           "conditions.clean.judge_off.width_mae_cm", "conditions.clean.judge_off.height_mae_cm",
           "conditions.bleed.judge_off.width_within_25pct", "geometry_ms_per_image")

BAND = (0.75, 1.25)
_SPHERE_POINTS = 600


# ------------------------------------------------------------------------------------------------ truth

def _fibonacci_sphere(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * k / n)
    azimuth = np.pi * (1 + 5 ** 0.5) * k
    spiral = np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)
    return np.concatenate([spiral, np.eye(3), -np.eye(3)])          # the poles too: a ball's exact extremes


_SPHERE = _fibonacci_sphere(_SPHERE_POINTS)
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 720, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 720, endpoint=False))], axis=1)


def geom_surface(model: mujoco.MjModel, data: mujoco.MjData, geom: int) -> np.ndarray:
    """(N, 3) world points whose convex hull is the geom (boxes: corners; round shapes: dense samples)."""
    kind, size = int(model.geom_type[geom]), model.geom_size[geom]
    if kind == mujoco.mjtGeom.mjGEOM_BOX:
        local = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * size
    elif kind == mujoco.mjtGeom.mjGEOM_CYLINDER:
        rim = _CIRCLE * size[0]
        local = np.concatenate([np.column_stack([rim, np.full(len(rim), z)]) for z in (-size[1], size[1])])
    elif kind == mujoco.mjtGeom.mjGEOM_SPHERE:
        local = _SPHERE * size[0]
    elif kind == mujoco.mjtGeom.mjGEOM_CAPSULE:
        local = np.concatenate([_SPHERE * size[0] + [0.0, 0.0, z] for z in (-size[1], size[1])])
    else:
        raise SimulationError(f"geom type {kind} has no surface sampler")
    return data.geom_xpos[geom] + local @ data.geom_xmat[geom].reshape(3, 3).T


def true_boxes(sim: TabletopSim, camera_pose_world: np.ndarray) -> dict[int, Box3D]:
    """Segmentation label -> the object's exact box in the true canonical frame of the table plane."""
    rotation, eye = camera_pose_world[:3, :3], camera_pose_world[:3, 3]
    # Table plane z_world = TABLE_TOP_Z in the optical frame: row 2 of the rotation . p + eye_z - z_table = 0.
    frame = canonical_frame(Plane(normal=rotation[2].copy(), offset=float(eye[2] - TABLE_TOP_Z),
                                  inliers=np.ones(0, bool)))
    assert frame is not None
    model, data = sim.model, sim.data
    labels = {"gripper": 0, **{f"obj{i}": i + 1 for i in range(len(sim.layout.objects))}}
    points: dict[int, list[np.ndarray]] = defaultdict(list)
    for geom in range(model.ngeom):
        body = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, int(model.geom_bodyid[geom]))
        if body in labels:
            points[labels[body]].append(geom_surface(model, data, geom))
    out = {}
    for label, chunks in points.items():
        cam = (np.concatenate(chunks) - eye) @ rotation             # world -> optical
        out[label] = upright_box(frame.to_canonical(cam))          # the camera stands at the origin
    return out


class TruthSource:
    """``sim:N`` scenes of :class:`SimSource`, rendered once, with every object's exact box beside each sample."""

    def __init__(self, n: int, cfg: SynthesisConfig) -> None:
        self.inner = SimSource(n, cfg)
        self.samples: dict[str, Sample] = {}
        self.truth: dict[str, dict[int, Box3D]] = {}
        self.kinds: dict[str, dict[int, str]] = {}
        gl = GLContext(cfg.sim.width, cfg.sim.height)
        for image_id in self.inner.image_ids:
            config = self.inner.scene_config(int(image_id.removeprefix("sim")))
            while True:
                try:
                    sim = TabletopSim(config, gl_context=gl, shadows=False)
                    break
                except SimulationError as err:
                    if not config.distractors or "could not place" not in str(err):
                        raise
                    config = dataclasses.replace(config, distractors=config.distractors[:-1])
            with sim:
                step = sim.render(0)
                self.truth[image_id] = true_boxes(sim, step.truth.camera_pose_world)
            labels = step.frame.labels
            self.kinds[image_id] = {label: name.split()[-1] for name, label in labels.items()}
            attributes = {name: dict(zip(("colour", "kind"), name.split())) for name in labels}
            self.samples[image_id] = Sample(image_id=image_id, frame=step.frame, attributes=attributes,
                                            support_mask=table_top_mask(step.frame, step.truth.camera_pose_world))
        gl.close()

    @property
    def image_ids(self) -> tuple[str, ...]:
        """The scenes' ids."""
        return self.inner.image_ids

    def load(self, image_id: str) -> Sample:
        """The rendered sample (rendered once, in the constructor)."""
        return self.samples[image_id]


# ------------------------------------------------------------------------------------------------ noisy experts

def _noise_rng(seed: int, image_id: str, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(image_id.encode()), salt])


class NoisyMasks:
    """An objects expert around another whose masks grow or erode by ``low..high`` pixels, drawn per object."""

    def __init__(self, inner: ObjectsExpert, low: int, high: int, seed: int) -> None:
        self.inner, self.low, self.high, self.seed = inner, low, high, seed

    def detect(self, sample: Sample, rng: np.random.Generator) -> Detections:
        """The inner expert's detections, each mask grown (k > 0) or eroded (k < 0) by k pixels."""
        found = self.inner.detect(sample, rng)
        noise = _noise_rng(self.seed, sample.image_id, 1)
        objects = []
        for det in found.objects:
            k = int(noise.integers(self.low, self.high + 1))
            mask = det.mask.astype(np.uint8)
            if k:
                kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(k) + 1, 2 * abs(k) + 1))
                mask = (cv2.dilate if k > 0 else cv2.erode)(mask, kernel)
            objects.append(dataclasses.replace(det, mask=mask > 0))
        return Detections(objects=tuple(objects), support_mask=found.support_mask)


class NoisyDepth:
    """A depth source: the frame's depth with RealSense-like noise and missing readings at depth edges."""

    def __init__(self, noise: DepthNoiseConfig, seed: int) -> None:
        self.noise, self.seed = noise, seed

    def depth(self, frame: Frame) -> DepthPrediction:
        """The frame's depth, noisy (deterministic in the depth image)."""
        assert frame.depth_m is not None
        rng = np.random.default_rng([self.seed, zlib.crc32(frame.depth_m.tobytes())])
        return DepthPrediction(depth_m=apply_depth_noise(frame.depth_m, self.noise, rng), intrinsics=frame.intrinsics)


# ------------------------------------------------------------------------------------------------ scoring

def _holds(pair: QAPair) -> bool:
    """Whether the answer says relation ``first`` holds for (A, B)."""
    if pair.family == "predicate":
        return pair.truth_label == "yes"
    if pair.family == "choice":
        return pair.truth_label == str(pair.object_ids[0])
    return pair.truth_label == CLASSIFY_PAIRS[TYPES_BY_NAME[pair.question_type].relation][0]


def score_pair(pair: QAPair, truth: dict[int, Box3D]) -> dict[str, Any]:
    """What one answer gets right, against the true boxes."""
    qtype = TYPES_BY_NAME[pair.question_type]
    a = truth[pair.object_ids[0]]
    b = truth[pair.object_ids[1]] if len(pair.object_ids) > 1 else None
    if qtype.qualitative:
        first = CLASSIFY_PAIRS[qtype.relation][0] if qtype.family == "classify" else qtype.relation
        evidence = relation_truth(first, a, b)
        return {"qualitative": True, "wrong": evidence == 0 or (evidence > 0) != _holds(pair)}
    true = quantity_truth(qtype.relation, a, b) if qtype.family == "quantity" else relation_truth(qtype.relation, a, b)

    def within(value: float) -> bool:
        return value == 0 if abs(true) < 1e-9 else BAND[0] <= value / true <= BAND[1]

    return {"qualitative": False, "within": within(pair.answer_value_m), "measured_within": within(pair.truth_m),
            "type": qtype.name}


def _rate(values: list[bool]) -> float:
    return float(np.mean(values)) if values else math.nan


def run_condition(source: TruthSource, cfg: SynthesisConfig, objects: ObjectsExpert | None,
                  depth: NoisyDepth | None) -> dict[str, Any]:
    """Synthesise every image with these experts and score the answers and boxes."""
    extractor = SceneExtractor(cfg)
    if objects is not None:
        extractor.objects = objects
    if depth is not None:
        extractor.depth = depth
    labels_wrong: list[bool] = []
    within: list[bool] = []
    measured_within: list[bool] = []
    width_ratio, height_ratio, width_err, height_err = [], [], [], []
    per_kind: dict[str, list[float]] = defaultdict(list)
    by_type: dict[str, list[bool]] = defaultdict(list)
    candidates = kept = 0
    for image_id in source.image_ids:
        result = synthesize_image(source, extractor, image_id)
        truth, kinds = source.truth[image_id], source.kinds[image_id]
        scene: SceneRecord | None = result.scene
        assert scene is not None
        candidates += result.counts.get("candidates", 0)
        kept += result.counts.get("kept", 0)
        for obj in scene.objects:
            true = truth[obj.object_id]
            width_ratio.append(obj.box.width_m / true.width_m)
            width_err.append(abs(obj.box.width_m - true.width_m))
            per_kind[kinds[obj.object_id]].append(obj.box.width_m / true.width_m)
            if scene.canonicalised:
                height_ratio.append(obj.box.height_m / true.height_m)
                height_err.append(abs(obj.box.height_m - true.height_m))
        for pair in result.pairs:
            scored = score_pair(pair, truth)
            if scored["qualitative"]:
                labels_wrong.append(scored["wrong"])
            else:
                within.append(scored["within"])
                measured_within.append(scored["measured_within"])
                by_type[scored["type"]].append(scored["within"])
    return {
        "label_error_rate": _rate(labels_wrong), "qualitative_answers": len(labels_wrong),
        "within_0.75_1.25x": _rate(within), "within_25pct": _rate(within),
        "measured_within_0.75_1.25x": _rate(measured_within),
        "quantitative_answers": len(within),
        "kept_fraction": kept / candidates if candidates else math.nan, "candidates": candidates,
        "width_ratio_median": median(width_ratio), "height_ratio_median": median(height_ratio),
        "width_mae_cm": 100 * float(np.mean(width_err)) if width_err else math.nan,
        "height_mae_cm": 100 * float(np.mean(height_err)) if height_err else math.nan,
        "width_within_25pct": _rate([BAND[0] <= r <= BAND[1] for r in width_ratio]),
        "height_within_25pct": _rate([BAND[0] <= r <= BAND[1] for r in height_ratio]),
        "objects": len(width_ratio),
        "width_ratio_median_by_kind": {k: median(v) for k, v in sorted(per_kind.items())},
        "within_0.75_1.25x_by_type": {k: _rate(v) for k, v in sorted(by_type.items())},
    }


def geometry_ms(source: TruthSource, cfg: SynthesisConfig, passes: int = 3) -> float:
    """Median CPU milliseconds of scene extraction (oracle experts, support plane, lifting, judge) per image.

    CPU time of this one-thread process (``time.process_time``), the best of ``passes`` per image: other
    processes sharing the machine do not inflate it.
    """
    extractor = SceneExtractor(cfg)
    best = dict.fromkeys(source.image_ids, math.inf)
    for _ in range(passes):
        for image_id in source.image_ids:
            sample, rng = source.load(image_id), image_rng(cfg.seed, image_id)
            start = time.process_time()
            extractor.extract(sample, rng)
            best[image_id] = min(best[image_id], (time.process_time() - start) * 1e3)
    return float(np.median(list(best.values())))


def main() -> None:
    """Command-line entry point."""
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--images", type=int, default=60, smoke=2)
    parser.add_argument("--seed", type=int, default=2_000_000, help="synthesis seed of the held-out scenes")
    parser.add_argument("--mask-px", type=int, default=2, help="noisy masks grow or erode by up to this many pixels")
    parser.add_argument("--depth-sigma", type=float, default=0.002, help="noisy depth sigma at 1 m, metres")
    parser.add_argument("--edge-dropout", type=float, default=0.5, help="noisy depth: edge pixels without a reading")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("spatialvlm_ros.sim").setLevel(logging.WARNING)
    cv2.setNumThreads(1)
    base = load_synthesis_config(overrides={"seed": args.seed})
    source = TruthSource(args.images, base)
    from spatialvlm_ros.perception.offline import SimOracle
    noise = DepthNoiseConfig(enabled=True, sigma_at_1m_m=args.depth_sigma, edge_dropout=args.edge_dropout)
    conditions = {
        "clean": (None, None),
        "bleed": (NoisyMasks(SimOracle(), 1, 1, args.seed), None),
        "noisy": (NoisyMasks(SimOracle(), -args.mask_px, args.mask_px, args.seed), NoisyDepth(noise, args.seed)),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, (objects, depth) in conditions.items():
        results[name] = {}
        for judged in (True, False):
            cfg = dataclasses.replace(base, judge=dataclasses.replace(base.judge, enabled=judged))
            results[name]["judge_on" if judged else "judge_off"] = run_condition(source, cfg, objects, depth)
    ms = geometry_ms(source, base)
    print(f"{'condition':<20} {'label err':>9} {'+-25%':>7} {'meas +-25%':>10} {'kept':>6} {'width r':>8} "
          f"{'height r':>8} {'w MAE cm':>8} {'h MAE cm':>8} {'w +-25%':>8}")
    for name, by_judge in results.items():
        for judged, r in by_judge.items():
            print(f"{name + '/' + judged:<20} {r['label_error_rate']:>9.3%} {r['within_0.75_1.25x']:>7.1%} "
                  f"{r['measured_within_0.75_1.25x']:>10.1%} {r['kept_fraction']:>6.1%} "
                  f"{r['width_ratio_median']:>8.3f} "
                  f"{r['height_ratio_median']:>8.3f} {r['width_mae_cm']:>8.2f} {r['height_mae_cm']:>8.2f} "
                  f"{r['width_within_25pct']:>8.1%}")
    print(f"geometry (extraction) ms per {base.sim.width}x{base.sim.height} image, one thread: {ms:.1f}")
    top = results["noisy"]["judge_on"]
    keys = ("label_error_rate", "within_0.75_1.25x", "within_25pct", "measured_within_0.75_1.25x",
            "width_ratio_median", "height_ratio_median", "kept_fraction")
    emit({**{k: top[k] for k in keys}, "judge_off": {k: results["noisy"]["judge_off"][k] for k in keys},
          "images": args.images, "seed": args.seed, "geometry_ms_per_image": ms, "conditions": results})


if __name__ == "__main__":
    main()
