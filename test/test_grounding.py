"""Grounders: colour prompts and simulator segmentation, and their registry."""

import numpy as np
import pytest

from spatialvlm_ros.config import ModelsConfig
from spatialvlm_ros.errors import ConfigError, GroundingError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.perception.grounding import ColourPromptGrounder, SimSegmentationGrounder, parse_colour
from spatialvlm_ros.perception.registry import GROUNDERS

H, W = 120, 160
CAM = CameraIntrinsics.from_fov(W, H, 58.0)
GREY = (128, 128, 120)
# name -> (RGB, rows, cols). Red is split across OpenCV's hue wrap: hue ~2 on the left, ~176 on the right.
PATCHES = {
    "yellow": ((235, 210, 20), slice(10, 40), slice(10, 50)),
    "red_low": ((210, 25, 15), slice(60, 100), slice(20, 40)),
    "red_high": ((210, 20, 45), slice(60, 100), slice(40, 60)),
    "blue": ((30, 60, 200), slice(20, 50), slice(100, 140)),
    "dark_green": ((20, 110, 30), slice(70, 100), slice(100, 130)),   # shaded: value 110
}


def _frame(**overrides):
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[:] = GREY
    for colour, rows, cols in PATCHES.values():
        rgb[rows, cols] = colour
    return Frame(rgb=rgb, intrinsics=CAM, **overrides)


def _patch_mask(*names):
    mask = np.zeros((H, W), bool)
    for name in names:
        _, rows, cols = PATCHES[name]
        mask[rows, cols] = True
    return mask


@pytest.mark.parametrize("phrase, patches", [
    ("yellow gripper", ["yellow"]),
    ("the red can", ["red_low", "red_high"]),                 # both sides of the hue wrap
    ("Blue box", ["blue"]),
    ("green ball", ["dark_green"]),
])
def test_colour_prompt_finds_the_painted_object(phrase, patches):
    mask = ColourPromptGrounder().ground(_frame(), phrase)
    assert mask.dtype == bool and mask.shape == (H, W)
    np.testing.assert_array_equal(mask, _patch_mask(*patches))


def test_colour_prompt_not_visible_is_an_empty_mask():
    assert not ColourPromptGrounder().ground(_frame(), "orange cup").any()


def test_colour_prompt_drops_speckle_and_small_blobs_but_keeps_split_object():
    frame = _frame()
    rgb = frame.rgb.copy()
    rgb[5, 70] = rgb[8, 90] = rgb[110, 5] = PATCHES["yellow"][0]        # speckle
    rgb[100:106, 70:76] = PATCHES["yellow"][0]                         # 36 px blob, < 25% of the main one
    rgb[10:40, 28:32] = GREY                                           # an occluder splits the gripper in two
    mask = ColourPromptGrounder().ground(Frame(rgb=rgb, intrinsics=CAM), "yellow gripper")
    expected = _patch_mask("yellow")
    expected[10:40, 28:32] = False
    np.testing.assert_array_equal(mask, expected)


def test_colour_prompt_ignores_grey_and_dark_pixels():
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:60] = (150, 140, 140)                                         # low saturation, reddish grey
    rgb[60:] = (30, 5, 5)                                              # saturated but too dark
    assert not ColourPromptGrounder().ground(Frame(rgb=rgb, intrinsics=CAM), "red can").any()


@pytest.mark.parametrize("phrase, match", [
    ("gripper", "name a colour"),
    ("the can", "name a colour"),
    ("red can next to the blue box", "several colours"),
])
def test_colour_prompt_rejects_phrases_it_cannot_parse(phrase, match):
    with pytest.raises(GroundingError, match=match):
        ColourPromptGrounder().ground(_frame(), phrase)


@pytest.mark.parametrize("phrase, colour", [("YELLOW gripper", "yellow"), ("red-can", "red"), ("a pink cup", "pink")])
def test_parse_colour(phrase, colour):
    assert parse_colour(phrase) == colour


def test_colour_prompt_hsv_cache_follows_the_frame():
    grounder = ColourPromptGrounder()
    first = _frame()
    assert grounder.ground(first, "blue box").any()
    empty = Frame(rgb=np.zeros((H, W, 3), np.uint8), intrinsics=CAM)
    assert not grounder.ground(empty, "blue box").any()


# --- sim_segmentation -----------------------------------------------------------------------------

LABELS = {"yellow gripper": 1, "red can": 2, "blue box": 3, "Green Ball": 4, "green cube": 5}


def _sim_frame():
    seg = np.full((H, W), -1, np.int32)
    for obj_id in LABELS.values():
        seg[obj_id * 10:obj_id * 10 + 5, :] = obj_id
    return _frame(segmentation=seg, labels=LABELS)


@pytest.mark.parametrize("phrase, obj_id", [
    ("red can", 2),               # exact
    ("The Red Can", 2),           # case and article
    ("green ball", 4),            # case-insensitive label
    ("can", 2),                   # unique last word
    ("the gripper", 1),
])
def test_sim_segmentation_lookup(phrase, obj_id):
    frame = _sim_frame()
    np.testing.assert_array_equal(SimSegmentationGrounder().ground(frame, phrase), frame.segmentation == obj_id)


@pytest.mark.parametrize("phrase, match", [("mug", "no object called 'mug'.*known"), ("sphere", "no object")])
def test_sim_segmentation_unknown_name(phrase, match):
    with pytest.raises(GroundingError, match=match):
        SimSegmentationGrounder().ground(_sim_frame(), phrase)


def test_sim_segmentation_ambiguous_last_word():
    labels = {"red can": 1, "blue can": 2}
    frame = _frame(segmentation=np.zeros((H, W), np.int32), labels=labels)
    with pytest.raises(GroundingError, match="ambiguous"):
        SimSegmentationGrounder().ground(frame, "can")


def test_sim_segmentation_needs_a_segmentation_image():
    with pytest.raises(GroundingError, match="no segmentation image"):
        SimSegmentationGrounder().ground(_frame(), "red can")


# --- registry -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, cls", [("colour_prompt", ColourPromptGrounder),
                                       ("sim_segmentation", SimSegmentationGrounder)])
def test_grounders_are_built_by_config_name(name, cls):
    grounder = GROUNDERS.create(name, ModelsConfig())
    assert isinstance(grounder, cls) and grounder.name == name


def test_unknown_grounder_names_the_setting_and_the_choices():
    with pytest.raises(ConfigError, match="estimator.grounding: unknown 'owl'; registered: colour_prompt, "
                                          "sim_segmentation, open_vocab"):
        GROUNDERS.create("owl", ModelsConfig())


@pytest.mark.parametrize("kwargs, match", [({"min_saturation": 300}, "0..255"), ({"keep_ratio": 0.0}, "keep_ratio")])
def test_colour_prompt_rejects_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ColourPromptGrounder(**kwargs)
