"""Image sources for the engine: ``sim:N`` (randomised MuJoCo tabletop scenes) today.

A source lists its image ids up front and loads one sample by id, so a resumed run skips finished
images without rendering or decoding them.
"""

from __future__ import annotations

import logging
import re
from typing import Protocol

import numpy as np

from spatialvlm_ros.config import SimConfig
from spatialvlm_ros.errors import InputError, SimulationError
from spatialvlm_ros.synthesis.config import SynthesisConfig
from spatialvlm_ros.synthesis.registry import Sample

logger = logging.getLogger(__name__)

SUPPORTED_INPUTS = "sim:N (N simulated tabletop scenes)"


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
    a random gripper distance, and the simulator's layout / camera / light randomisation.

    Args:
        n: number of scenes.
        cfg: the synthesis settings (``cfg.sim`` and ``cfg.seed``).
    """

    def __init__(self, n: int, cfg: SynthesisConfig) -> None:
        if n < 1:
            raise InputError(f"sim:{n}: need at least one scene")
        self.cfg = cfg
        self._ids = tuple(f"sim{i:06d}" for i in range(n))

    @property
    def image_ids(self) -> tuple[str, ...]:
        """``sim000000``, ``sim000001``, ..."""
        return self._ids

    def scene_config(self, index: int) -> SimConfig:
        """The simulator settings of scene ``index`` (deterministic in ``(cfg.seed, index)``)."""
        from spatialvlm_ros.sim import COLOURS, KINDS
        s = self.cfg.sim
        rng = np.random.default_rng([self.cfg.seed, index, 0x5151])
        colours = list(COLOURS)
        gripper = colours[int(rng.integers(len(colours)))]
        phrases: list[str] = []
        n_objects = 1 + int(rng.integers(s.min_distractors, s.max_distractors + 1))
        while len(phrases) < n_objects:
            phrase = f"{colours[int(rng.integers(len(colours)))]} {KINDS[int(rng.integers(len(KINDS)))]}"
            if phrase not in phrases:
                phrases.append(phrase)
        target_colour, target = phrases[0].split()
        return SimConfig(seed=int(rng.integers(2**31)), width=s.width, height=s.height, fovy_deg=s.fovy_deg,
                         gripper_colour=gripper, target=target, target_colour=target_colour,
                         distractors=tuple(phrases[1:]), randomise=True, n_frames=2,
                         start_gap_m=float(rng.uniform(0.03, 0.3)), end_gap_m=0.01, depth_noise=s.depth_noise)

    def load(self, image_id: str) -> Sample:
        """Build and render the scene of ``image_id``; distractors that do not fit on the table are left out."""
        from spatialvlm_ros.sim import TabletopSim
        from spatialvlm_ros.sim.surfaces import table_top_mask
        config = self.scene_config(int(image_id.removeprefix("sim")))
        while True:
            try:
                sim = TabletopSim(config)
                break
            except SimulationError as err:
                if not config.distractors or "could not place" not in str(err):
                    raise
                logger.debug("%s: %s; one distractor fewer", image_id, err)
                config = SimConfig(**{**config.__dict__, "distractors": config.distractors[:-1]})
        with sim:
            step = sim.render(0)
        attributes = {name: dict(zip(("colour", "kind"), name.split())) for name in step.frame.labels}
        return Sample(image_id=image_id, frame=step.frame, attributes=attributes,
                      support_mask=table_top_mask(step.frame, step.truth.camera_pose_world))


def open_source(spec: str, cfg: SynthesisConfig) -> Source:
    """The source named by ``--input``.

    Raises:
        InputError: malformed or not yet supported input.

    Example:
        >>> from spatialvlm_ros.synthesis.config import SynthesisConfig
        >>> len(open_source("sim:3", SynthesisConfig()).image_ids)
        3
        >>> open_source("photos/", SynthesisConfig())
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.InputError: --input photos/: image folders are not yet supported ...
    """
    match = re.fullmatch(r"sim:(\d+)", spec.strip())
    if match:
        return SimSource(int(match.group(1)), cfg)
    if spec.startswith("sim"):
        raise InputError(f"--input {spec}: expected sim:N with a whole number N, e.g. sim:100")
    kind = "rosbag2 inputs" if spec.endswith((".mcap", ".db3")) else "image folders"
    raise InputError(f"--input {spec}: {kind} are not yet supported (they need the transformers experts for "
                     f"objects and depth); supported: {SUPPORTED_INPUTS}")
