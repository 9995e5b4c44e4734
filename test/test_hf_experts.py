"""Tests of the transformers experts (spatialvlm_ros.perception.hf) and the experts built on them.

The model hub is unreachable, so every model here is a TINY one with RANDOM weights, built from a config
in the test, saved with ``save_pretrained`` to a temporary folder and reloaded through the experts' own
``from_pretrained`` with ``HF_HUB_OFFLINE=1``. Random weights give meaningless predictions: these tests
check the output contract (types, shapes, dtypes, ranges, units, ordering, error messages) and the
code paths, never what only a trained model could get right (which box is the can, which label wins).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor,  # noqa: E402
                          CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, DepthAnythingConfig,
                          DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessorPil, Owlv2Config,
                          Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor, PreTrainedTokenizerFast,
                          SamConfig, SamImageProcessorPil, SamModel, SamProcessor)

from spatialvlm_ros.config import (  # noqa: E402
    DEFAULT_FOVY_DEG, CaptionerConfig, ClipConfig, DepthModelConfig, DetectorConfig, EstimatorConfig, ModelsConfig,
    SegmenterConfig, SimConfig,
)
from spatialvlm_ros.errors import ConfigError, GroundingError, InputError  # noqa: E402
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, Pair  # noqa: E402
from spatialvlm_ros.estimation.geometric import GeometricEstimator  # noqa: E402
from spatialvlm_ros.frame import Frame  # noqa: E402
from spatialvlm_ros.perception.experts import Detections, FilterVerdict, Sample  # noqa: E402
from spatialvlm_ros.perception.hf import (KEEP_LABELS, BoxSegmenter, ClipSceneFilter,  # noqa: E402
                                          ClipTextEmbedder, MonocularDepth, OpenVocabDetector, RegionCaptioner,
                                          clean_caption, nms)
from spatialvlm_ros.perception.open_vocab import OpenVocabGrounder, OpenVocabObjects  # noqa: E402
from spatialvlm_ros.perception.registry import (DEPTH_SOURCES, EMBEDDERS, FILTERS, GROUNDERS,  # noqa: E402
                                                OBJECT_EXPERTS)
from spatialvlm_ros.sim import TabletopSim  # noqa: E402
from spatialvlm_ros.synthesis.config import ExpertsConfig, SynthesisConfig  # noqa: E402
from spatialvlm_ros.synthesis.engine import run_local  # noqa: E402
from spatialvlm_ros.synthesis.sources import open_source  # noqa: E402

WORDS = ("a photo of an iphone indoor outdoor scene the red can yellow gripper table top floor object thing on "
         "container tool toy close-up single product white background artwork painting screenshot graphical user "
         "interface text sketch").split()


def _tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the few words the tests use."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", sep_token="</s>", cls_token="<s>", model_max_length=16)


def _text(vocab_size: int, **extra: int) -> dict[str, int]:
    return dict(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                **extra)


def _vision(image_size: int) -> dict[str, int]:
    return dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                image_size=image_size, patch_size=16)


def _build(root: Path) -> dict[str, str]:
    """Save one tiny random checkpoint per expert under ``root``; returns role -> folder."""
    # Seeded: an unseeded random detector sometimes predicts only sub-pixel boxes (dropped), which made the
    # detector's contract test fail about one run in three.
    torch.manual_seed(0)
    tok = _tokenizer()
    n = len(tok)
    paths = {role: str(root / role) for role in ("detector", "segmenter", "captioner", "clip", "depth", "relative")}
    owl = Owlv2ForObjectDetection(Owlv2Config(text_config=_text(n), vision_config=_vision(64), projection_dim=16))
    owl.save_pretrained(paths["detector"])
    Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size={"height": 64, "width": 64}),
                   tokenizer=tok).save_pretrained(paths["detector"])
    sam = SamModel(SamConfig(
        vision_config=dict(_vision(64), output_channels=16, window_size=2, global_attn_indexes=[0], mlp_dim=32,
                           num_pos_feats=8),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=16)))
    sam.save_pretrained(paths["segmenter"])
    SamProcessor(image_processor=SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
                 ).save_pretrained(paths["segmenter"])
    blip = BlipForConditionalGeneration(BlipConfig(text_config=_text(n, encoder_hidden_size=16, sep_token_id=2),
                                                   vision_config=_vision(32), projection_dim=8))
    blip.save_pretrained(paths["captioner"])
    BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(paths["captioner"])
    clip = CLIPModel(CLIPConfig(text_config=_text(n), vision_config=_vision(32), projection_dim=8))
    clip.save_pretrained(paths["clip"])
    clip_images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=clip_images, tokenizer=tok).save_pretrained(paths["clip"])
    for role, kind in (("depth", "metric"), ("relative", "relative")):
        backbone = Dinov2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=4, num_attention_heads=2,
                                image_size=28, patch_size=14, out_indices=[1, 2, 3, 4],
                                reshape_hidden_states=False)
        depth = DepthAnythingForDepthEstimation(DepthAnythingConfig(
            backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=8,
            head_hidden_size=8, depth_estimation_type=kind, max_depth=20, patch_size=14))
        depth.save_pretrained(paths[role])
        DPTImageProcessorPil(size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14
                             ).save_pretrained(paths[role])
    return paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, offline: None) -> dict[str, str]:
    return _build(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="module")
def models_cfg(tiny: dict[str, str]) -> ModelsConfig:
    # Threshold 0: random detectors score near 0.5, and every path past the threshold must run.
    return ModelsConfig(detector=DetectorConfig(checkpoint=tiny["detector"], threshold=0.0, max_objects=4),
                        segmenter=SegmenterConfig(tiny["segmenter"]), captioner=CaptionerConfig(tiny["captioner"]),
                        clip=ClipConfig(tiny["clip"]), depth=DepthModelConfig(tiny["depth"]), local_files_only=True)


@pytest.fixture(scope="module")
def frame() -> Frame:
    with TabletopSim(SimConfig(width=160, height=120, n_frames=2)) as sim:
        return sim.render(1).frame


@pytest.fixture(scope="module")
def detector(models_cfg: ModelsConfig) -> OpenVocabDetector:
    return OpenVocabDetector.from_pretrained(models_cfg.detector.checkpoint, local_files_only=True, threshold=0.0,
                                             nms_iou=0.5)


@pytest.fixture(scope="module")
def segmenter(models_cfg: ModelsConfig) -> BoxSegmenter:
    return BoxSegmenter.from_pretrained(models_cfg.segmenter.checkpoint, local_files_only=True)


@pytest.fixture(scope="module")
def clip_filter(models_cfg: ModelsConfig) -> ClipSceneFilter:
    return ClipSceneFilter.from_pretrained(models_cfg.clip.checkpoint, local_files_only=True)


@pytest.fixture(scope="module")
def depth_model(models_cfg: ModelsConfig) -> MonocularDepth:
    return MonocularDepth.from_pretrained(models_cfg.depth.checkpoint, local_files_only=True)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ----------------------------------------------------------------------------- NMS

BOXES = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [21, 20, 31, 30]], float)


@pytest.mark.parametrize("scores, iou, groups, expected", [
    ([0.9, 0.8, 0.7, 0.6, 0.5], 0.5, None, [0, 3]),            # overlaps suppressed, disjoint kept
    ([0.5, 0.8, 0.7, 0.6, 0.9], 0.5, None, [4, 1]),            # best score wins, output best first
    ([0.9, 0.8, 0.7, 0.6, 0.5], 1.0, None, [0, 1, 2, 3, 4]),   # IoU must be strictly above the threshold
    ([0.9, 0.9, 0.9, 0.6, 0.6], 0.5, None, [0, 3]),            # ties keep input order
    ([0.9, 0.8, 0.7, 0.6, 0.5], 0.5, [0, 1, 1, 0, 1], [0, 1, 3, 4]),  # groups never suppress each other
])
def test_nms_on_crafted_boxes(scores: list[float], iou: float, groups: list[int] | None,
                              expected: list[int]) -> None:
    keep = nms(BOXES, np.array(scores), iou, None if groups is None else np.array(groups))
    assert keep.dtype == np.int64 and keep.tolist() == expected


def test_nms_edge_cases() -> None:
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    with pytest.raises(InputError, match="2 boxes but 1 scores"):
        nms(BOXES[:2], np.ones(1), 0.5)
    with pytest.raises(InputError, match="iou_threshold"):
        nms(BOXES, np.ones(5), 1.5)


# ----------------------------------------------------------------------------- loading

def test_wrong_path_names_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(ConfigError, match="no_such_model.*does not exist"):
        OpenVocabDetector.from_pretrained(missing)


def test_folder_without_a_checkpoint_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"segmenter: cannot load '{tmp_path}'"):
        BoxSegmenter.from_pretrained(str(tmp_path))


def test_hub_id_offline_without_cache_is_a_clear_error(offline: None) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(ConfigError, match="cannot load 'spatialvlm-test/not-cached'.*offline"):
        ClipTextEmbedder.from_pretrained("spatialvlm-test/not-cached")


@pytest.mark.parametrize("option, match", [({"dtype": "float64"}, "dtype"), ({"device": "tpu:x"}, "device")])
def test_bad_device_or_dtype(tiny: dict[str, str], option: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ClipTextEmbedder.from_pretrained(tiny["clip"], **option)


def test_relative_depth_model_is_refused(tiny: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="relative depth"):
        MonocularDepth.from_pretrained(tiny["relative"])


# ----------------------------------------------------------------------------- experts

def test_detector_contract(detector: OpenVocabDetector, frame: Frame) -> None:
    found = detector.detect(frame.rgb, ["yellow gripper", "red can"])
    assert found.queries == ("yellow gripper", "red can") and len(found) >= 1
    assert found.boxes.shape == (len(found), 4) and found.boxes.dtype == np.float32
    assert found.scores.dtype == np.float32 and found.labels.dtype == np.int64
    assert np.all((found.scores >= 0) & (found.scores <= 1)) and np.all(np.diff(found.scores) <= 0)
    assert set(found.labels.tolist()) <= {0, 1}
    x0, y0, x1, y1 = found.boxes.T
    assert np.all((0 <= x0) & (x0 <= x1) & (x1 <= 160) & (0 <= y0) & (y0 <= y1) & (y1 <= 120))
    for i in range(len(found)):
        for j in range(i + 1, len(found)):
            assert _iou(found.boxes[i], found.boxes[j]) <= detector.nms_iou + 1e-6


def test_detector_threshold_and_input_checks(models_cfg: ModelsConfig, frame: Frame) -> None:
    strict = OpenVocabDetector.from_pretrained(models_cfg.detector.checkpoint, local_files_only=True, threshold=1.0)
    assert len(strict.detect(frame.rgb, ["red can"])) == 0   # a sigmoid never reaches 1
    with pytest.raises(InputError, match="non-empty queries"):
        strict.detect(frame.rgb, [])
    with pytest.raises(InputError, match="uint8"):
        strict.detect(frame.rgb.astype(np.float32), ["red can"])
    with pytest.raises(InputError, match="groups"):
        strict.detect(frame.rgb, ["red can"], groups=[0, 1])


def test_segmenter_contract(segmenter: BoxSegmenter, frame: Frame) -> None:
    boxes = np.array([[10, 10, 60, 80], [70, 20, 150, 110]], np.float32)
    out = segmenter.segment(frame.rgb, boxes)
    assert out.masks.shape == (2, 120, 160) and out.masks.dtype == bool
    assert out.scores.shape == (2,) and out.scores.dtype == np.float32
    assert segmenter._embedding is not None and segmenter._embedding[0]() is frame.rgb  # reused per image
    empty = segmenter.segment(frame.rgb, np.zeros((0, 4)))
    assert empty.masks.shape == (0, 120, 160) and empty.scores.shape == (0,)
    with pytest.raises(InputError, match=r"\(N, 4\)"):
        segmenter.segment(frame.rgb, np.zeros(4))


@pytest.mark.parametrize("raw, expected", [
    ("A photo of a red soda can on a wooden table", "red soda can on a wooden"),
    ("the yellow gripper.", "yellow gripper"),
    ("arafed can", "arafed can"),
    ("", ""),
])
def test_clean_caption(raw: str, expected: str) -> None:
    assert clean_caption(raw) == expected


def test_captioner_contract(models_cfg: ModelsConfig, frame: Frame) -> None:
    captioner = RegionCaptioner.from_pretrained(models_cfg.captioner.checkpoint, local_files_only=True,
                                                max_new_tokens=4)
    out = captioner.caption(frame.rgb, np.array([[10, 10, 60, 80], [150, 110, 160, 120]], float))
    assert len(out.captions) == len(out.raw) == 2
    assert all(isinstance(c, str) and len(c.split()) <= 6 for c in out.captions)
    assert captioner.caption(frame.rgb, np.zeros((0, 4))).captions == ()


def test_clip_filter_contract(clip_filter: ClipSceneFilter, frame: Frame) -> None:
    verdict = clip_filter.classify(frame.rgb)
    assert clip_filter.labels[:2] == KEEP_LABELS and len(clip_filter.labels) == 9
    assert verdict.probs.shape == (9,) and verdict.probs.dtype == np.float32
    assert np.all(verdict.probs >= 0) and verdict.probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert verdict.label == verdict.labels[int(verdict.probs.argmax())]
    assert verdict.keep == (verdict.label in KEEP_LABELS)
    assert clip_filter.keep(frame) == FilterVerdict(keep=verdict.keep, label=verdict.label)


def test_clip_text_embedder_contract(models_cfg: ModelsConfig) -> None:
    emb = ClipTextEmbedder.from_pretrained(models_cfg.clip.checkpoint, local_files_only=True)
    vectors = emb.embed(["red can", "yellow gripper", "red can"])
    assert vectors.shape == (3, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)   # deterministic
    assert emb.embed([]).shape == (0, 8)


def test_depth_contract(depth_model: MonocularDepth, frame: Frame) -> None:
    given = depth_model.estimate(frame.rgb, frame.intrinsics)
    assert given.depth_m.shape == (120, 160) and given.depth_m.dtype == np.float32
    assert np.all(np.isfinite(given.depth_m)) and np.all(given.depth_m > 0)   # metres, positive
    assert given.intrinsics == frame.intrinsics and not given.fov_assumed
    guessed = depth_model.estimate(frame.rgb)
    assert guessed.fov_assumed and guessed.intrinsics.width == 160 and guessed.intrinsics.height == 120
    assert guessed.intrinsics.fy == pytest.approx(60 / np.tan(np.deg2rad(DEFAULT_FOVY_DEG) / 2))
    from_frame = depth_model.depth(frame)
    np.testing.assert_array_equal(from_frame.depth_m, given.depth_m)
    assert from_frame.intrinsics == frame.intrinsics and not from_frame.fov_assumed
    with pytest.raises(InputError, match="intrinsics are 160x120, image is 80x60"):
        depth_model.estimate(frame.rgb[:60, :80].copy(), frame.intrinsics)


# ----------------------------------------------------------------------------- plug-ins

def test_grounder_returns_a_frame_sized_bool_mask(detector: OpenVocabDetector, segmenter: BoxSegmenter,
                                                  models_cfg: ModelsConfig, frame: Frame) -> None:
    grounder = OpenVocabGrounder(detector, segmenter)
    mask = grounder.ground(frame, "the red can")
    assert mask.shape == (120, 160) and mask.dtype == bool
    strict = OpenVocabDetector.from_pretrained(models_cfg.detector.checkpoint, local_files_only=True, threshold=1.0)
    nothing = OpenVocabGrounder(strict, segmenter).ground(frame, "the red can")
    assert nothing.shape == (120, 160) and not nothing.any()
    with pytest.raises(GroundingError, match="empty phrase"):
        grounder.ground(frame, "  ")


def test_open_vocab_is_registered_for_the_estimator(models_cfg: ModelsConfig, frame: Frame) -> None:
    grounder = GROUNDERS.create("open_vocab", models_cfg)
    assert isinstance(grounder, OpenVocabGrounder) and grounder.name == "open_vocab"
    assert grounder.ground(frame, "yellow gripper").shape == (120, 160)


@pytest.mark.parametrize("with_depth", [True, False])
def test_geometric_estimator_with_open_vocab_never_crashes(models_cfg: ModelsConfig, frame: Frame,
                                                           with_depth: bool) -> None:
    est = GeometricEstimator(EstimatorConfig(grounding="open_vocab", monocular_depth=True, models=models_cfg))
    assert isinstance(est.grounder, OpenVocabGrounder) and isinstance(est.depth_source, MonocularDepth)
    # Without depth, the estimator takes the monocular depth source's.
    step = frame if with_depth else dataclasses.replace(frame, depth_m=None)
    pairs = [Pair.parse("yellow gripper -> red can")]
    [estimate] = est.estimate(step, pairs, DistanceKind.GAP)
    assert isinstance(estimate, DistanceEstimate)
    if estimate.valid:
        assert np.isfinite(estimate.distance_m) and estimate.distance_m >= 0
    else:
        assert estimate.reason is not None and estimate.detail


def test_objects_expert_contract(detector: OpenVocabDetector, segmenter: BoxSegmenter, models_cfg: ModelsConfig,
                                 frame: Frame) -> None:
    captioner = RegionCaptioner.from_pretrained(models_cfg.captioner.checkpoint, local_files_only=True,
                                                max_new_tokens=4)
    expert = OpenVocabObjects(detector, segmenter, captioner, object_queries=("object", "toy"),
                              support_queries=("table top",), max_objects=3)
    out = expert.detect(Sample(image_id="sim0", frame=frame), np.random.default_rng(0))
    assert isinstance(out, Detections) and len(out.objects) <= 3
    for det in out.objects:
        assert det.mask.shape == (120, 160) and det.mask.dtype == bool and det.mask.any()
        assert det.name in ("object", "toy") and 1 <= len(det.caption.split()) <= 6
        assert 0 <= float(det.attributes["score"]) <= 1
    assert len({d.object_id for d in out.objects}) == len(out.objects)
    assert out.support_mask is None or (out.support_mask.shape == (120, 160) and out.support_mask.dtype == bool)


def test_registries_build_the_transformers_experts(models_cfg: ModelsConfig, frame: Frame) -> None:
    sample = Sample(image_id="sim0", frame=frame)
    assert isinstance(FILTERS.create("clip", models_cfg).keep(frame), FilterVerdict)
    objects = OBJECT_EXPERTS.create("open_vocab", models_cfg)
    assert isinstance(objects, OpenVocabObjects) and objects.max_objects == 4
    assert isinstance(objects.detect(sample, np.random.default_rng(0)), Detections)
    source = DEPTH_SOURCES.create("monocular", models_cfg)
    assert isinstance(source, MonocularDepth)
    depth = source.depth(frame)
    assert depth.depth_m.shape == (120, 160) and depth.intrinsics == frame.intrinsics and not depth.fov_assumed
    fov_models = dataclasses.replace(models_cfg, depth=dataclasses.replace(models_cfg.depth, intrinsics="default_fov"))
    assumed = DEPTH_SOURCES.create("monocular", fov_models).depth(frame)
    assert assumed.fov_assumed and assumed.intrinsics.fy == pytest.approx(60 / np.tan(np.deg2rad(DEFAULT_FOVY_DEG) / 2))
    assert EMBEDDERS.create("clip_text", models_cfg).embed(["red can"]).shape == (1, 8)


def test_whole_pipeline_runs_offline_through_the_tiny_models(models_cfg: ModelsConfig, tmp_path: Path) -> None:
    """An image folder (no depth, no segmentation) through filter, objects, depth and embedder experts.

    Random weights make arbitrary decisions (the filter may drop an image, detections are noise), so this
    checks that the whole data engine runs on learned experts, offline, and writes a well-formed dataset.
    """
    images = tmp_path / "images"
    images.mkdir()
    with TabletopSim(SimConfig(width=160, height=120, n_frames=3, randomise=True, seed=4)) as sim:
        for i in range(3):
            cv2.imwrite(str(images / f"view{i}.png"), cv2.cvtColor(sim.render(i).frame.rgb, cv2.COLOR_RGB2BGR))
    experts = ExpertsConfig(filter="clip", objects="open_vocab", depth="monocular", embedder="clip_text")
    cfg = SynthesisConfig(models=models_cfg, experts=experts)
    out = tmp_path / "dataset"
    summary = run_local(open_source(str(images), cfg), out, cfg)
    assert summary.processed == 3 and summary.images + summary.filtered == 3
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert len(rows) == summary.rows
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"] and row["question_type"]
    assert run_local(open_source(str(images), cfg), out, cfg).skipped == 3     # resumable
