"""The perception registries: every name resolves to a factory, the offline ones build, importing is light."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from spatialvlm_ros.config import ModelsConfig
from spatialvlm_ros.errors import InputError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.perception.experts import Sample
from spatialvlm_ros.perception.registry import DEPTH_SOURCES, EMBEDDERS, FILTERS, GROUNDERS, OBJECT_EXPERTS
from spatialvlm_ros.synthesis.config import ExpertsConfig

REGISTRIES = {"grounding": GROUNDERS, "depth": DEPTH_SOURCES, "filter": FILTERS, "objects": OBJECT_EXPERTS,
              "embedder": EMBEDDERS}
#: Names whose factories load no model.
OFFLINE = {"grounding": ("colour_prompt", "sim_segmentation"), "depth": ("sensor",), "filter": ("none",),
           "objects": ("sim_oracle",), "embedder": ("char_ngram",)}


@pytest.mark.parametrize("job", REGISTRIES)
def test_every_registered_name_resolves_to_a_factory(job: str) -> None:
    registry = REGISTRIES[job]
    assert registry.names, job
    for name in registry.names:
        assert callable(registry.get(name)), (job, name)


@pytest.mark.parametrize("job", REGISTRIES)
def test_offline_experts_build_without_models(job: str) -> None:
    for name in OFFLINE[job]:
        assert REGISTRIES[job].create(name, ModelsConfig()) is not None, (job, name)


def test_the_data_engine_defaults_are_registered() -> None:
    defaults = ExpertsConfig()
    for job in ("filter", "objects", "depth", "embedder"):
        assert getattr(defaults, job) in REGISTRIES[job].names


def test_importing_the_registry_loads_no_model_library() -> None:
    code = ("import sys, spatialvlm_ros.perception.registry; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_offline_experts_do_their_jobs() -> None:
    seg = np.full((4, 6), -1, np.int32)
    seg[1:3, 1:3] = 7
    depth = np.full((4, 6), 0.8, np.float32)
    frame = Frame(rgb=np.zeros((4, 6, 3), np.uint8), depth_m=depth, segmentation=seg, labels={"red can": 7},
                  intrinsics=CameraIntrinsics.from_fov(6, 4, 60.0))
    models = ModelsConfig()
    assert FILTERS.create("none", models).keep(frame).keep
    [can] = OBJECT_EXPERTS.create("sim_oracle", models).detect(Sample("s", frame), np.random.default_rng(0)).objects
    assert can.name == "red can" and can.mask.sum() == 4 and can.attributes == {"colour": "red", "kind": "can"}
    sensor = DEPTH_SOURCES.create("sensor", models)
    got = sensor.depth(frame)
    assert got.depth_m is depth and got.intrinsics == frame.intrinsics and not got.fov_assumed
    with pytest.raises(InputError, match="needs RGB-D input"):
        sensor.depth(Frame(rgb=frame.rgb, intrinsics=frame.intrinsics))
    assert EMBEDDERS.create("char_ngram", models).embed(["red can", "can"]).shape == (2, 4096)
