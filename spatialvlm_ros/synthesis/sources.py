"""Image sources for the engine: ``sim:N`` simulated scenes, image folders and rosbag2 recordings.

A source lists its image ids up front and loads one sample by id, so a resumed run skips finished
images without rendering or decoding them. Ids depend on the input alone (never on the run), which
keeps runs resumable and deterministic. Every source pickles to the Ray engine's workers; a folder or
a bag is read there by path, so it must be reachable from every worker.

Image folder (``--input path/to/folder``), searched recursively, in sorted relative-path order:

* colour: ``*.png``, ``*.jpg``, ``*.jpeg`` (any case); hidden files and folders are skipped;
* depth, optional, registered to the colour image and of its size: ``<stem>.depth.png`` beside the
  image, single-channel 16-bit millimetres (0 = no reading, as ``16UC1``), or ``<stem>.depth.npy``,
  (H, W) float metres;
* intrinsics, optional: ``<stem>.intrinsics.json`` beside the image, else the nearest
  ``intrinsics.json`` in the image's folder or a parent up to the input folder, else the field of
  view ``models.depth.fallback_fovy_deg``. The JSON holds ``{"fx", "fy", "cx", "cy"}`` (pixels) or
  ``{"fovy_deg"}`` (vertical, degrees; principal point at the centre), optionally ``"width"`` and
  ``"height"``, which must match the image;
* image id: the relative path without its suffix, ``/`` replaced by ``__`` and any character other
  than letters, digits, ``.``, ``_`` and ``-`` by ``_`` (``shelf/0001.png`` -> ``shelf__0001``).

rosbag2 (``--input run.mcap``, a ``.db3`` file or a bag folder): colour (raw or compressed), registered
depth when the bag has a depth topic, and camera_info, detected as ``spatialvlm eval-bag`` detects
them; colour is paired with depth by header stamp, and every ``every_n``-th paired frame is kept.
Image id: ``<bag name>-<colour header stamp, ns>`` (``run-1700000000100000000``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol

import cv2
import numpy as np

from spatialvlm_ros.config import SimConfig, SyncConfig
from spatialvlm_ros.errors import ConfigError, InputError, SimulationError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics, pixel_centre
from spatialvlm_ros.geometry.zoom import pair_window
from spatialvlm_ros.messages.conversions import frame_from_messages
from spatialvlm_ros.perception.experts import ExactDistances, Sample
from spatialvlm_ros.synthesis.config import SynthesisConfig

if TYPE_CHECKING:
    from rosbags.highlevel import AnyReader

    from spatialvlm_ros.messages.rosbag import CameraMessages, CameraTopics
    from spatialvlm_ros.sim import TabletopSim
    from spatialvlm_ros.sim.appearance import Appearance
    from spatialvlm_ros.sim.render import GLContext

logger = logging.getLogger(__name__)

SUPPORTED_INPUTS = ("sim:N (N simulated tabletop scenes; sim-plain:N without domain randomisation; sim-around:N "
                    "with the camera anywhere around the target), an image folder, or a rosbag2 (.mcap or .db3 "
                    "file, or its folder)")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEPTH_PNG_SUFFIX = ".depth.png"      # 16-bit millimetres
DEPTH_NPY_SUFFIX = ".depth.npy"      # float metres
INTRINSICS_SUFFIX = ".intrinsics.json"
FOLDER_INTRINSICS = "intrinsics.json"
BAG_SUFFIXES = (".mcap", ".db3")

_PINHOLE_KEYS = ("fx", "fy", "cx", "cy")
_INTRINSICS_KEYS = frozenset((*_PINHOLE_KEYS, "fovy_deg", "width", "height"))
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class Source(Protocol):
    """Where samples come from."""

    @property
    def image_ids(self) -> tuple[str, ...]:
        """Ids of every image, in order."""

    def load(self, image_id: str) -> Sample:
        """Load (render, decode) one image."""


class SimSource:
    """``n`` randomised tabletop scenes, one RGB-D image each, scene ``i`` drawn from ``(seed, i)`` alone.

    Each scene has a random gripper colour, a random target and ``min..max`` random distractors
    (kinds drawn independently, so several cans or balls are common, which exercises ambiguity removal),
    a random gripper gap (within 5 cm on 30% of scenes, contact included), the simulator's layout
    randomisation, and a domain-randomised camera rig, gripper model and look
    (:mod:`spatialvlm_ros.sim.splits`, :mod:`spatialvlm_ros.sim.appearance`). On ``sim.off_path_share``
    of the scenes (not ``plain``) the gripper then tries to leave its approach line for a gap drawn from
    0-15 cm (:func:`off_path_position`); where no such pose fits in view, the scene keeps its scripted one.

    Args:
        n: number of scenes.
        cfg: the synthesis settings (``cfg.sim`` and ``cfg.seed``).
        split: ``"sim"``, the training split (default); ``"shift"``, the held-out shift
            (:func:`~spatialvlm_ros.sim.splits.shift_scene`: camera rigs, a gripper model, texture families
            and lights the training split never shows, and stronger sensor damage), for evaluation only;
            ``"plain"``, the look before domain randomisation; ``"around"``, the training split with the
            camera anywhere around the target (:mod:`spatialvlm_ros.sim.splits`).

    Raises:
        InputError: no scenes.
        ConfigError: an unknown split.
    """

    def __init__(self, n: int, cfg: SynthesisConfig, *, split: str = "sim") -> None:
        from spatialvlm_ros.sim import ALL_KINDS, COLOURS, KINDS, PALETTE
        from spatialvlm_ros.sim.splits import SPLITS
        if n < 1:
            raise InputError(f"sim:{n}: need at least one scene")
        if split not in SPLITS:
            raise ConfigError(f"split: {split!r} is not one of {list(SPLITS)}")
        self._kinds = cfg.sim.kinds or KINDS
        self._colours = cfg.sim.colours or tuple(COLOURS)
        for key, words, known in (("kinds", self._kinds, ALL_KINDS), ("colours", self._colours, PALETTE)):
            if set(words) - set(known):
                raise ConfigError(f"sim.{key}: {sorted(set(words) - set(known))} unknown; known: {', '.join(known)}")
        if len(self._kinds) * len(self._colours) < 1 + cfg.sim.max_distractors:   # each object's phrase is its own
            raise ConfigError(f"sim.kinds x sim.colours: {len(self._kinds) * len(self._colours)} phrases for up to "
                              f"{1 + cfg.sim.max_distractors} objects; add kinds or colours, or lower max_distractors")
        self.cfg = cfg
        self.split = split
        self._ids = tuple(f"sim{i:06d}" for i in range(n))
        self._gl: GLContext | None = None         # made by the first load, in the process that renders

    def __getstate__(self) -> dict[str, Any]:
        # A GL context cannot cross processes (Ray pickles the source to its workers): each makes its own.
        return {**self.__dict__, "_gl": None}

    @property
    def image_ids(self) -> tuple[str, ...]:
        """``sim000000``, ``sim000001``, ..."""
        return self._ids

    def scene_config(self, index: int) -> SimConfig:
        """The simulator settings of scene ``index`` (deterministic in ``(cfg.seed, index)``)."""
        return self.scene(index)[0]

    def scene(self, index: int) -> tuple[SimConfig, Appearance | None]:
        """The simulator settings and the look of scene ``index`` (deterministic in ``(cfg.seed, index)``)."""
        from spatialvlm_ros.sim.splits import near_contact_gap, split_scene
        s = self.cfg.sim
        # The shift split has its own stream, so its scenes share no draws with the training split's.
        rng = np.random.default_rng([self.cfg.seed, index, 0x5A1F7 if self.split == "shift" else 0x5151])
        gripper, target_colour, target, phrases = self._draw_objects(rng)
        seed = int(rng.integers(2**31))
        # plain: the gaps the data engine drew before near-contact scenes (the same draws).
        gap = float(rng.uniform(0.03, 0.3)) if self.split == "plain" else near_contact_gap(rng)
        config = SimConfig(seed=seed, width=s.width, height=s.height, fovy_deg=s.fovy_deg, gripper_colour=gripper,
                           target=target, target_colour=target_colour, distractors=tuple(phrases[1:]),
                           randomise=True, n_frames=2, start_gap_m=gap, end_gap_m=0.01, depth_noise=s.depth_noise)
        return split_scene(self.split, config, rng)

    def _draw_objects(self, rng: np.random.Generator) -> tuple[str, str, str, list[str]]:
        """The gripper's colour, the target's colour and kind, and every object phrase (target first), distinct."""
        s = self.cfg.sim
        colours, kinds = self._colours, self._kinds
        gripper = colours[int(rng.integers(len(colours)))]
        phrases: list[str] = []
        n_objects = 1 + int(rng.integers(s.min_distractors, s.max_distractors + 1))
        while len(phrases) < n_objects:
            phrase = f"{colours[int(rng.integers(len(colours)))]} {kinds[int(rng.integers(len(kinds)))]}"
            if phrase not in phrases:
                phrases.append(phrase)
        target_colour, target = phrases[0].split()
        return gripper, target_colour, target, phrases

    def load(self, image_id: str) -> Sample:
        """Build and render the scene of ``image_id``; distractors that do not fit on the table are left out."""
        from spatialvlm_ros.sim import TabletopSim
        from spatialvlm_ros.sim.render import GLContext
        from spatialvlm_ros.sim.surfaces import table_top_mask
        index = int(image_id.removeprefix("sim"))
        config, appearance = self.scene(index)
        if self._gl is None:
            # One context for all scenes: a new one and its first frame cost more than a whole frame.
            self._gl = GLContext(config.width, config.height)
        shadows = appearance is not None and any(light.shadows for light in appearance.lights)
        # Its own random stream, so that share 0 changes no scene.
        wrist = np.random.default_rng([self.cfg.seed, index, 0x3157]).random() < self.cfg.sim.wrist_share
        while True:
            try:
                # Coarser round shapes: only the look changes (not depth, labels, truth), and much faster.
                sim = TabletopSim(config, gl_context=self._gl, shadows=shadows, tessellation=(16, 8),
                                  appearance=appearance, wrist_camera=wrist)
                break
            except SimulationError as err:
                if not config.distractors or "could not place" not in str(err):
                    raise
                logger.debug("%s: %s; one distractor fewer", image_id, err)
                config = dataclasses.replace(config, distractors=config.distractors[:-1])
        with sim:
            position = None
            if self.split != "plain":     # plain: the scenes the data engine drew before off-path poses
                position = off_path_position(sim, self.cfg.sim.off_path_share,
                                             np.random.default_rng([self.cfg.seed, index, 0x0FF]))
            # render_at(trajectory[0]) is render(0): the same stamp and noise draws.
            camera = sim.n_cameras - 1 if wrist else 0
            step = sim.render_at(sim.trajectory[0] if position is None else position, camera=camera)
            if position is not None and not _gripper_in_view(step.frame, self.cfg.lifting.min_pixels,
                                                             self.cfg.judge.border_px):
                step = sim.render_at(sim.trajectory[0], camera=camera)
        frame = step.frame
        if appearance is not None:
            rgb = appearance.sensor.apply(frame.rgb, np.random.default_rng([self.cfg.seed, index, 0x1D6]))
            frame = dataclasses.replace(frame, rgb=rgb)
        frame = zoomed(frame, (sim.gripper_label, sim.target_label), self.cfg.sim.zoom_share,
                       np.random.default_rng([self.cfg.seed, index, 0x200A]))
        attributes = {name: dict(zip(("colour", "kind"), name.split())) for name in frame.labels}
        exact = ExactDistances(sim.gripper_label, dict(step.truth.gap_m), dict(step.truth.centre_m))
        return Sample(image_id=image_id, frame=frame, attributes=attributes,
                      support_mask=table_top_mask(frame, step.truth.camera_pose_world), exact=exact)


#: The data engine's jitter of the second look's window (geometry.zoom): its size is scaled within this range
#: and its centre moved up to this share of it, so the model reads windows around imprecise first-look centres.
ZOOM_SCALE = (0.8, 1.25)
ZOOM_SHIFT = 0.15


def zoomed(frame: Frame, pair: tuple[str, str], share: float, rng: np.random.Generator) -> Frame:
    """On ``share`` of scenes, ``frame`` cut to the jittered window around the two objects of ``pair``.

    Args:
        frame: a simulator frame (with segmentation and labels).
        pair: the two objects' labels (the gripper's and the target's).
        share: the share of scenes cut (``sim.zoom_share``).
        rng: the draws: whether to cut, then the jitter, and nothing else, so that share 0 changes no scene.

    Returns:
        The window (:func:`~spatialvlm_ros.geometry.zoom.pair_window` around the objects' mean pixels, which the
        compact VLM's second look crops around its first look's centres); ``frame`` itself when it is not cut
        or either object is hidden.
    """
    if rng.random() >= share or frame.segmentation is None or not set(pair) <= set(frame.labels):
        return frame
    centres = [pixel_centre(frame.segmentation == frame.labels[name]) for name in pair]
    scale, dx, dy = rng.uniform(*ZOOM_SCALE), *rng.uniform(-ZOOM_SHIFT, ZOOM_SHIFT, 2)
    if not np.all(np.isfinite(centres)):
        return frame
    window = pair_window(*centres, frame.intrinsics.width, frame.intrinsics.height, scale=scale, shift=(dx, dy))
    return frame.crop(window)


#: Off-path poses: the gap to the target (uniform up to this, metres), the elevation range of the direction
#: from the target's centre (radians; below the centre needs a low gripper), and draws before giving up.
OFF_PATH_MAX_GAP_M = 0.15
_OFF_PATH_ELEVATION = (-0.2, 1.4)
_OFF_PATH_TRIES = 20
_SCENERY_CLEARANCE_M = 0.005


def off_path_position(sim: TabletopSim, share: float, rng: np.random.Generator) -> np.ndarray | None:
    """A grasp point off the gripper's approach line, on ``share`` of scenes; None: keep the scripted pose.

    The scripted approach always aims the gripper at the target; a policy (or an operator) moves it with
    its orientation fixed and ends beside, above or in front of the target, where a monocular model that
    only saw aimed grippers misjudges the gap (it read 5-15 cm as contact in the reach env). Here the
    gripper keeps its orientation and sits on a ray from the target's centre in any direction, at a
    gap drawn uniformly up to :data:`OFF_PATH_MAX_GAP_M`, clear of the other objects and the scenery. Draws from
    ``rng`` alone, so the scene's other draws do not change. None when no draw fits.
    """
    if rng.random() >= share:
        return None
    for _ in range(_OFF_PATH_TRIES):
        azimuth, elevation = rng.uniform(-np.pi, np.pi), rng.uniform(*_OFF_PATH_ELEVATION)
        direction = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                              np.sin(elevation)])
        gap = rng.uniform(0.0, OFF_PATH_MAX_GAP_M)
        try:
            position = sim.position_at_gap(direction, gap)
        except SimulationError:
            continue
        gaps = sim.truth_at(position).gap_m
        if min(gaps.values()) >= -1e-6 and sim.scenery_gap() >= _SCENERY_CLEARANCE_M:
            return position
    return None


def _gripper_in_view(frame: Frame, min_pixels: int, border_px: int) -> bool:
    """Whether the gripper (segmentation id 0) survives extraction, so that it gets its rows.

    It needs ``lifting.min_pixels`` pixels or more, no nearer than ``judge.border_px`` to the image border
    (else the judge calls it truncated).
    """
    rows, cols = np.nonzero(frame.segmentation == 0)
    if len(rows) < min_pixels:
        return False
    height, width = frame.segmentation.shape
    return min(cols.min(), rows.min(), width - 1 - cols.max(), height - 1 - rows.max()) >= border_px


class FolderSource:
    """The images of a folder and its subfolders, with optional depth and intrinsics beside them.

    The file conventions are in this module's docstring. Listing reads no pixels; :meth:`load`
    decodes one image with its depth and intrinsics.

    Args:
        root: the folder.
        fallback_fovy_deg: vertical field of view, degrees, of images without intrinsics.

    Raises:
        InputError: ``root`` is not a folder, holds no images, or two images give one id.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = cv2.imwrite(f"{tmp}/shelf_0001.png", np.zeros((48, 64, 3), np.uint8))
        ...     sample = FolderSource(tmp, fallback_fovy_deg=53.0).load("shelf_0001")
        >>> sample.frame.rgb.shape, sample.frame.depth_m, round(sample.frame.intrinsics.fy, 1)
        ((48, 64, 3), None, 48.1)
    """

    def __init__(self, root: str | Path, *, fallback_fovy_deg: float) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: not a folder")
        found = sorted((p.relative_to(root) for p in root.rglob("*") if _is_image(p)), key=lambda rel: rel.as_posix())
        paths: dict[str, Path] = {}
        for rel in found:
            if any(part.startswith(".") for part in rel.parts):
                continue
            image_id = _UNSAFE_ID_CHARS.sub("_", rel.with_suffix("").as_posix().replace("/", "__"))
            if image_id in paths:
                raise InputError(f"{root}: {paths[image_id].relative_to(root)} and {rel} both give image id "
                                 f"{image_id!r}; rename one")
            paths[image_id] = root / rel
        if not paths:
            raise InputError(f"{root}: no images ({', '.join('*' + s for s in IMAGE_SUFFIXES)}) in the folder "
                             "or its subfolders")
        self.root = root
        self.fallback_fovy_deg = fallback_fovy_deg
        self._paths = paths
        logger.info("image folder %s: %d images", root, len(paths))

    @property
    def image_ids(self) -> tuple[str, ...]:
        """Ids of the images, in sorted relative-path order."""
        return tuple(self._paths)

    def image_path(self, image_id: str) -> Path:
        """The colour image of ``image_id``.

        Raises:
            InputError: no image has this id.
        """
        try:
            return self._paths[image_id]
        except KeyError as err:
            raise InputError(f"{image_id}: no such image in {self.root}") from err

    def depth_path(self, image_id: str) -> Path | None:
        """The depth file of ``image_id`` (``<stem>.depth.png`` or ``<stem>.depth.npy``), None without one.

        Raises:
            InputError: no image has this id, or it has both depth files.
        """
        image = self.image_path(image_id)
        found = [p for p in (image.parent / (image.stem + s) for s in (DEPTH_PNG_SUFFIX, DEPTH_NPY_SUFFIX))
                 if p.is_file()]
        if len(found) > 1:
            raise InputError(f"{image}: both {found[0].name} and {found[1].name} exist; keep one depth file")
        return found[0] if found else None

    def intrinsics_path(self, image_id: str) -> Path | None:
        """The intrinsics file of ``image_id``: its own, else the nearest folder-wide one; None without one.

        Raises:
            InputError: no image has this id.
        """
        image = self.image_path(image_id)
        own = image.parent / (image.stem + INTRINSICS_SUFFIX)
        if own.is_file():
            return own
        folder = image.parent
        while True:
            if (folder / FOLDER_INTRINSICS).is_file():
                return folder / FOLDER_INTRINSICS
            if folder == self.root:
                return None
            folder = folder.parent

    def load(self, image_id: str) -> Sample:
        """Decode the image of ``image_id`` with its depth (metres) and intrinsics.

        Raises:
            InputError: an unreadable image, depth or intrinsics file, or one of another size than the image.
        """
        image = self.image_path(image_id)
        rgb = _read_colour(image)
        height, width = rgb.shape[:2]
        depth_file = self.depth_path(image_id)
        depth_m = None
        if depth_file is not None:
            depth_m = _read_depth(depth_file)
            if depth_m.shape != (height, width):
                raise InputError(f"{depth_file}: depth is {depth_m.shape[1]}x{depth_m.shape[0]} but {image.name} is "
                                 f"{width}x{height}; depth must be registered (aligned) to the colour image")
        intrinsics_file = self.intrinsics_path(image_id)
        if intrinsics_file is None:
            logger.debug("%s: no intrinsics file; assuming a vertical field of view of %.1f deg", image_id,
                         self.fallback_fovy_deg)
            intrinsics = CameraIntrinsics.from_fov(width, height, self.fallback_fovy_deg)
        else:
            intrinsics = read_intrinsics(intrinsics_file, width, height)
        return Sample(image_id=image_id, frame=Frame(rgb=rgb, intrinsics=intrinsics, depth_m=depth_m))


class BagSource:
    """The camera frames of a rosbag2: colour (+ registered depth) + camera_info, every ``every_n``-th frame.

    Listing reads the bag once (the frames a run will see depend on the colour-depth pairing). Loading
    streams the bag from the start, and onward for increasing ids, so a run in id order reads it once
    more; an id before the last one loaded restarts the stream.

    Args:
        path: the bag folder or its ``.mcap`` / ``.db3`` file.
        every_n: keep every ``every_n``-th paired frame, starting with the first.
        sync: colour-depth pairing by header stamp (as the reward node pairs them).
        image_topic: colour topic; default detected (see :func:`~spatialvlm_ros.messages.rosbag.resolve_topics`).
        depth_topic: registered depth topic; default detected, none when the bag has no depth image
            topic; ``""`` ignores depth.
        info_topic: camera_info topic; default detected.

    Raises:
        BagError: the bag is missing or unreadable, or its camera topics cannot be told apart.
        InputError: ``every_n`` < 1, or no frame to synthesise from.
    """

    def __init__(self, path: str | Path, *, every_n: int = 1, sync: SyncConfig = SyncConfig(),
                 image_topic: str | None = None, depth_topic: str | None = None,
                 info_topic: str | None = None) -> None:
        if every_n < 1:
            raise InputError(f"{path}: every_n must be >= 1, got {every_n}")
        # The bag reader (rosbags, storage plugins) is imported only when a bag is read.
        from spatialvlm_ros.messages.rosbag import IMAGE, open_bag, resolve_topics, topic_types
        self.path = Path(path)
        self.every_n = every_n
        self.sync = sync
        with open_bag(self.path) as reader:
            if depth_topic is None and not any(m == IMAGE and "depth" in t for t, m in topic_types(reader).items()):
                depth_topic = ""
            self.topics: CameraTopics = resolve_topics(reader, image=image_topic, depth=depth_topic,
                                                       camera_info=info_topic)
            stamps = [(i, m.stamp_ns) for i, m in enumerate(self._camera_messages(reader)) if i % every_n == 0]
        if not stamps:
            raise InputError(f"{self.path}: no frames on {self.topics.image}"
                             + (f" paired with {self.topics.depth}" if self.topics.depth else ""))
        name = _UNSAFE_ID_CHARS.sub("_", self.path.name if self.path.is_dir() else self.path.stem)
        self._positions: dict[str, int] = {}
        for position, stamp_ns in stamps:
            image_id = f"{name}-{stamp_ns}"
            repeat = 0
            while image_id in self._positions:   # a repeated header stamp
                repeat += 1
                image_id = f"{name}-{stamp_ns}-{repeat}"
            self._positions[image_id] = position
        self._cursor: Iterator[tuple[int, CameraMessages]] | None = None
        self._next = 0
        logger.info("bag %s: %d frames kept (every_n %d) from %s%s", self.path, len(stamps), every_n,
                    self.topics.image, f" + {self.topics.depth}" if self.topics.depth else "")

    @property
    def image_ids(self) -> tuple[str, ...]:
        """Ids of the kept frames, in bag order."""
        return tuple(self._positions)

    def load(self, image_id: str) -> Sample:
        """Decode the frame of ``image_id`` (colour, depth in metres, intrinsics from camera_info).

        Raises:
            InputError: an unknown id, an unsupported encoding, or sizes that disagree with camera_info.
            BagError: the bag cannot be read.
        """
        try:
            position = self._positions[image_id]
        except KeyError as err:
            raise InputError(f"{image_id}: no such frame in {self.path}") from err
        messages = self._messages(position)
        try:
            frame = frame_from_messages(messages.image, messages.depth,
                                        CameraIntrinsics.from_camera_info(messages.camera_info))
        except InputError as err:
            raise InputError(f"{image_id}: {err}") from err
        return Sample(image_id=image_id, frame=frame)

    def __getstate__(self) -> dict[str, Any]:
        # An open stream does not pickle; a copy (a Ray worker's) opens its own.
        return {**self.__dict__, "_cursor": None, "_next": 0}

    def _camera_messages(self, reader: AnyReader) -> Iterator[CameraMessages]:
        from spatialvlm_ros.messages.rosbag import camera_messages
        return camera_messages(reader, self.topics, slop_ns=int(self.sync.slop_s * 1e9),
                               queue_size=self.sync.queue_size)

    def _stream(self) -> Iterator[CameraMessages]:
        # The bag closes when the stream is exhausted or dropped (generator close).
        from spatialvlm_ros.messages.rosbag import open_bag
        with open_bag(self.path) as reader:
            yield from self._camera_messages(reader)

    def _messages(self, position: int) -> CameraMessages:
        """The messages of paired frame ``position``, moving the stream forward (or restarting it)."""
        if self._cursor is None or position < self._next:
            self._cursor = enumerate(self._stream())
            self._next = 0
        for index, messages in self._cursor:
            self._next = index + 1
            if index == position:
                return messages
        raise InputError(f"{self.path}: frame {position} is gone; did the bag change since it was listed?")


def read_intrinsics(path: Path, width: int, height: int) -> CameraIntrinsics:
    """Intrinsics of a ``width`` x ``height`` image from a JSON file of the folder convention.

    Args:
        path: JSON ``{"fx", "fy", "cx", "cy"}`` (pixels) or ``{"fovy_deg"}`` (vertical, degrees),
            optionally with ``"width"`` and ``"height"``.
        width: image width, pixels.
        height: image height, pixels.

    Raises:
        InputError: unreadable or malformed JSON, unknown or missing keys, bad numbers, or another image size.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = Path(tmp, "intrinsics.json")
        ...     _ = path.write_text('{"fx": 600, "fy": 600, "cx": 319.5, "cy": 239.5}')
        ...     read_intrinsics(path, 640, 480).fx
        600.0
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not readable JSON: {err}") from err
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object with fx, fy, cx, cy or fovy_deg, got {type(data).__name__}")
    unknown = sorted(set(data) - _INTRINSICS_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown keys {unknown}; expected fx, fy, cx, cy or fovy_deg, and width, height")
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{path}: {key} must be a finite number, got {value!r}")
    size = (data.get("width", width), data.get("height", height))
    if size != (width, height):
        raise InputError(f"{path}: intrinsics are for {size[0]}x{size[1]} images, the image is {width}x{height}")
    pinhole = [key for key in _PINHOLE_KEYS if key in data]
    if "fovy_deg" in data:
        if pinhole:
            raise InputError(f"{path}: give either fx, fy, cx, cy or fovy_deg, not both")
        if not 0 < data["fovy_deg"] < 180:
            raise InputError(f"{path}: fovy_deg must be in (0, 180), got {data['fovy_deg']}")
        return CameraIntrinsics.from_fov(width, height, data["fovy_deg"])
    if len(pinhole) < len(_PINHOLE_KEYS):
        missing = [key for key in _PINHOLE_KEYS if key not in data]
        raise InputError(f"{path}: missing {missing}; give fx, fy, cx, cy (pixels) or fovy_deg (degrees)")
    try:
        return CameraIntrinsics(fx=float(data["fx"]), fy=float(data["fy"]), cx=float(data["cx"]),
                                cy=float(data["cy"]), width=width, height=height)
    except InputError as err:
        raise InputError(f"{path}: {err}") from err


def open_source(spec: str, cfg: SynthesisConfig) -> Source:
    """The source named by ``--input``: ``sim:N``, an image folder, or a rosbag2 (file or folder).

    ``sim:N`` scenes are domain-randomised (:class:`SimSource`); ``sim-plain:N`` are drawn with the look the
    data engine had before (the ``plain`` split, :mod:`spatialvlm_ros.sim.splits`).

    Image folders and bags hold no segmentation, so they need a learned objects expert; an input
    without depth (or a folder with some images without it) needs a depth expert other than ``sensor``.

    Raises:
        InputError: a malformed or missing input, or experts that cannot use it.
        BagError: an unreadable bag, or one whose camera topics cannot be told apart.

    Example:
        >>> from spatialvlm_ros.synthesis.config import SynthesisConfig
        >>> len(open_source("sim:3", SynthesisConfig()).image_ids)
        3
        >>> open_source("photos/", SynthesisConfig())
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.InputError: --input photos/: no such file or folder; expected sim:N ...
    """
    text = spec.strip()
    match = re.fullmatch(r"sim(?:-(plain|around))?:(\d+)", text)
    if match:
        return SimSource(int(match.group(2)), cfg, split=match.group(1) or "sim")
    path = Path(text).expanduser()
    if not path.exists():
        if text.startswith("sim"):
            raise InputError(f"--input {spec}: expected sim:N with a whole number N, e.g. sim:100")
        raise InputError(f"--input {spec}: no such file or folder; expected {SUPPORTED_INPUTS}")
    is_bag = path.suffix in BAG_SUFFIXES or (path.is_dir() and (
        (path / "metadata.yaml").is_file() or any(p.suffix in BAG_SUFFIXES for p in path.iterdir())))
    if not is_bag and not path.is_dir():
        raise InputError(f"--input {spec}: not a folder, .mcap or .db3 file; expected {SUPPORTED_INPUTS}")
    if cfg.experts.objects == "sim_oracle":
        raise InputError(f"--input {spec}: objects expert sim_oracle needs simulator frames; "
                         "use experts.objects: open_vocab")
    source: BagSource | FolderSource
    if is_bag:
        source = BagSource(path)
        without_depth = [] if source.topics.depth else list(source.image_ids)
    else:
        source = FolderSource(path, fallback_fovy_deg=cfg.models.depth.fallback_fovy_deg)
        without_depth = [image_id for image_id in source.image_ids if source.depth_path(image_id) is None]
    if without_depth and cfg.experts.depth == "sensor":
        raise InputError(f"--input {spec}: {len(without_depth)} of {len(source.image_ids)} images have no depth "
                         f"(e.g. {without_depth[0]}); depth expert sensor needs RGB-D input; "
                         "use experts.depth: monocular")
    return source


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(IMAGE_SUFFIXES) and not name.endswith(DEPTH_PNG_SUFFIX) and path.is_file()


def _read_bytes(path: Path) -> np.ndarray:
    try:
        return np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err}") from err


def _decode(path: Path, flags: int) -> np.ndarray:
    data = _read_bytes(path)
    try:
        image = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as err:
        raise InputError(f"{path}: cannot decode the image: {err}") from err
    if image is None:
        raise InputError(f"{path}: cannot decode the image (empty, corrupt, or not a PNG / JPEG)")
    return image


def _read_colour(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB: grey is expanded, alpha dropped, 16-bit colour reduced to 8 bits."""
    return cv2.cvtColor(_decode(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _read_depth(path: Path) -> np.ndarray:
    """(H, W) float32 metres from ``<stem>.depth.png`` (16-bit millimetres) or ``<stem>.depth.npy`` (metres)."""
    if path.name.endswith(DEPTH_NPY_SUFFIX):
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: not a readable .npy array: {err}") from err
        if not isinstance(depth, np.ndarray) or depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
            raise InputError(f"{path}: depth .npy must be an (H, W) float array of metres, got "
                             f"{getattr(depth, 'shape', '?')} {getattr(depth, 'dtype', type(depth).__name__)}")
        return depth.astype(np.float32)
    depth = _decode(path, cv2.IMREAD_UNCHANGED)
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise InputError(f"{path}: depth PNG must be single-channel 16-bit millimetres, got "
                         f"{depth.dtype} with {1 if depth.ndim == 2 else depth.shape[2]} channels")
    return depth.astype(np.float32) * np.float32(0.001)
