"""The colour vocabulary (CIELAB directions) and the colour-prompt grounder's use of it."""

import cv2
import numpy as np
import pytest

from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.perception import colours
from spatialvlm_ros.perception.grounding import ColourPromptGrounder

H, W = 120, 160
CAM = CameraIntrinsics.from_fov(W, H, 58.0)
BACKGROUND = (128, 128, 120)

# An everyday sRGB look of each chromatic word, lit and shaded.
LOOKS = {
    "red": [(200, 30, 30), (110, 15, 15)],
    "orange": [(245, 130, 20), (150, 75, 10)],
    "brown": [(125, 75, 35), (85, 50, 22)],
    "yellow": [(240, 210, 30), (150, 130, 15)],
    "beige": [(225, 205, 165), (170, 155, 125)],
    "green": [(40, 160, 50), (20, 90, 28)],
    "cyan": [(20, 190, 210), (10, 110, 125)],
    "blue": [(30, 60, 200), (15, 30, 110)],
    "purple": [(120, 40, 170), (70, 22, 100)],
    "magenta": [(210, 30, 160), (120, 15, 90)],
    "pink": [(245, 150, 190), (160, 95, 120)],
}


def _jpeg(rgb: np.ndarray, quality: int = 90) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _patch_frame(colour_lit, colour_shaded) -> tuple[Frame, np.ndarray]:
    """A two-tone patch (lit top, shaded bottom: one object) on a grey background."""
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[:] = BACKGROUND
    rgb[30:60, 50:110] = colour_lit
    rgb[60:90, 50:110] = colour_shaded
    truth = np.zeros((H, W), bool)
    truth[30:90, 50:110] = True
    return Frame(rgb=rgb, intrinsics=CAM), truth


@pytest.mark.parametrize("word", sorted(LOOKS))
def test_each_chromatic_word_grounds_its_patch_lit_and_shaded(word):
    frame, truth = _patch_frame(*LOOKS[word])
    mask = ColourPromptGrounder().ground(frame, f"the {word} thing")
    assert _iou(mask, truth) > 0.97, word


@pytest.mark.parametrize("word", sorted(LOOKS))
def test_each_chromatic_word_survives_a_jpeg_round_trip(word):
    frame, truth = _patch_frame(*LOOKS[word])
    jpeg = Frame(rgb=_jpeg(frame.rgb), intrinsics=CAM)
    assert _iou(ColourPromptGrounder().ground(jpeg, f"{word} object"), truth) > 0.9, word


@pytest.mark.parametrize("word", sorted(LOOKS))
def test_a_patch_is_not_grounded_by_another_word(word):
    frame, _ = _patch_frame(*LOOKS[word])
    grounder = ColourPromptGrounder()
    wrong = [other for other in LOOKS if other != word and grounder.ground(frame, f"{other} thing").sum() > 100]
    # Orange and brown are one family (lightness tells them apart per object): each may take the other.
    assert set(wrong) <= set(colours.family(word)) - {word}, (word, wrong)


def test_orange_and_yellow_separate():
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[:] = BACKGROUND
    rgb[20:60, 20:70] = (240, 205, 25)                    # yellow gripper
    rgb[20:60, 70:120] = (235, 120, 15)                   # orange ball, touching it
    rgb = _jpeg(rgb)
    frame = Frame(rgb=rgb, intrinsics=CAM)
    yellow, orange = np.zeros((H, W), bool), np.zeros((H, W), bool)
    yellow[20:60, 20:70] = True
    orange[20:60, 70:120] = True
    grounder = ColourPromptGrounder()
    masks = grounder.ground_all(frame, ["yellow gripper", "orange ball"])
    assert _iou(masks["yellow gripper"], yellow) > 0.9 and _iou(masks["orange ball"], orange) > 0.9
    # Alone, "yellow" still leaves the orange object out: the vocabulary's nearest word is orange there.
    assert not (grounder.ground(frame, "yellow gripper") & orange).sum() > 20


def test_ground_all_reports_an_unknown_phrase_without_failing_the_others():
    frame, truth = _patch_frame(*LOOKS["blue"])
    masks = ColourPromptGrounder().ground_all(frame, ["blue box", "gripper"])
    assert _iou(masks["blue box"], truth) > 0.97
    assert isinstance(masks["gripper"], Exception) and "name a colour" in str(masks["gripper"])


# --- achromatic objects standing on a table -----------------------------------------------------

TABLE_Y = 0.25          # the table 0.25 m below the optical centre; the camera looks down at it
TABLE_RGB = (165, 155, 138)
WALL_RGB = (200, 200, 196)


def _table_scene(objects, tilt_deg=30.0):
    """Ray-cast a table (beige-grey), a grey back wall and axis-aligned boxes on the table.

    ``objects``: (rgb, (x0, x1), (z0, z1), height). The camera is pitched down by ``tilt_deg``.
    Returns the frame and the per-object truth masks.
    """
    cam = CameraIntrinsics.from_fov(320, 240, 58.0)
    u, v = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    rays_cam = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones(u.shape)], axis=-1)
    t = np.deg2rad(tilt_deg)
    pitch = np.array([[1, 0, 0], [0, np.cos(t), np.sin(t)], [0, -np.sin(t), np.cos(t)]])   # camera -> level
    rays = rays_cam @ pitch.T
    with np.errstate(divide="ignore", invalid="ignore"):
        table = np.where(rays[..., 1] > 0, TABLE_Y / rays[..., 1], np.inf)
        wall = np.where(rays[..., 2] > 0, 2.0 / rays[..., 2], np.inf)
        hits = [wall, table]
        for _, (x0, x1), (z0, z1), height in objects:
            lo, hi = np.array([x0, TABLE_Y - height, z0]), np.array([x1, TABLE_Y, z1])
            a, b = lo / rays, hi / rays
            near = np.minimum(a, b).max(axis=-1)
            far = np.maximum(a, b).min(axis=-1)
            hits.append(np.where((near <= far) & (near > 0), near, np.inf))
    hits = np.stack(hits)
    ids = np.argmin(hits, axis=0)
    rgb = np.array([WALL_RGB, TABLE_RGB] + [o[0] for o in objects], np.uint8)[ids]
    depth = (hits.min(axis=0) * rays_cam[..., 2]).astype(np.float32)       # ray parameter -> optical z
    frame = Frame(rgb=rgb, intrinsics=cam, depth_m=depth)
    return frame, [ids == k + 2 for k in range(len(objects))]


ACHROMATIC_SCENE = [((245, 245, 242), (-0.16, -0.08), (0.50, 0.56), 0.06),    # white box
                    ((22, 22, 24), (-0.04, 0.03), (0.52, 0.58), 0.08),        # black box
                    ((120, 120, 122), (0.07, 0.14), (0.48, 0.55), 0.05)]      # grey box


@pytest.mark.parametrize("jpeg", [False, True], ids=["raw", "jpeg"])
@pytest.mark.parametrize("k, word", [(0, "white"), (1, "black"), (2, "grey")])
def test_achromatic_objects_on_a_table_are_found(k, word, jpeg):
    frame, truths = _table_scene(ACHROMATIC_SCENE)
    if jpeg:
        frame = Frame(rgb=_jpeg(frame.rgb), intrinsics=frame.intrinsics, depth_m=frame.depth_m)
    mask = ColourPromptGrounder().ground(frame, f"the {word} box")
    assert _iou(mask, truths[k]) > 0.85, (word, mask.sum(), truths[k].sum())


def test_achromatic_words_compete_by_lightness():
    frame, truths = _table_scene(ACHROMATIC_SCENE)
    masks = ColourPromptGrounder().ground_all(frame, ["white box", "grey box", "black box"])
    for k, word in enumerate(("white", "black", "grey")):
        assert _iou(masks[f"{word} box"], truths[k]) > 0.85, word


def test_the_table_and_wall_are_not_white_or_grey_objects():
    frame, _ = _table_scene([])
    grounder = ColourPromptGrounder()
    for word in ("white", "grey", "silver", "beige"):
        assert grounder.ground(frame, f"{word} cup").sum() == 0, word


def test_gray_is_grey_and_the_vocabulary_is_complete():
    assert colours.parse_colour("a gray mug") == "grey"
    for word in ("white", "black", "grey", "silver", "brown", "beige", "pink", "purple", "orange", "yellow", "green",
                 "cyan", "blue", "red"):
        assert word in colours.INDEX
