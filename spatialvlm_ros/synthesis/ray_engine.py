"""Run the pipeline on Ray Data (``spatialvlm synthesize --engine ray``): the same stages, many workers.

The plan is ``from_items(image ids still to do) -> map_batches(_Synthesizer)`` on a pool of actors,
one CPU each; every actor builds the source's simulator / decoder and the experts once, then runs
:func:`~spatialvlm_ros.synthesis.engine.synthesize_image` per image. The driver streams the results
in image-id order (``preserve_order``) into the same :class:`DatasetWriter` the local engine uses, so
the dataset is byte-identical to ``--engine local`` with the same settings and seed, resumable in the
same way (finished images are never submitted), and held in driver memory only a few blocks at a time.
The driver writes every file, so workers on other machines need no shared filesystem.

Ray is optional: it is imported when this engine runs, and a missing install is a :class:`ConfigError`
that names the pip package.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import numpy as np

from spatialvlm_ros.errors import ConfigError, SpatialVLMError
from spatialvlm_ros.perception.registry import DEPTH_SOURCES, EMBEDDERS, FILTERS, OBJECT_EXPERTS
from spatialvlm_ros.synthesis.config import SynthesisConfig
from spatialvlm_ros.synthesis.engine import (ImageResult, ProgressCallback, RunSummary, synthesize_image,
                                             write_result)
from spatialvlm_ros.synthesis.extract import SceneExtractor
from spatialvlm_ros.synthesis.sources import Source
from spatialvlm_ros.synthesis.writer import DatasetWriter

logger = logging.getLogger(__name__)

RAY_PACKAGE = "ray[data]"
#: Images per input block: one (results stream back image by image) until a run would need more than
#: ``MAX_BLOCKS`` blocks, then more, up to ``MAX_IMAGES_PER_BLOCK`` (a lost block stays cheap to redo).
MAX_BLOCKS = 1024
MAX_IMAGES_PER_BLOCK = 32
#: Environment the workers need to render like the driver (they may start on other machines).
_FORWARDED_ENV = ("MUJOCO_GL", "PYOPENGL_PLATFORM")


def import_ray() -> ModuleType:
    """Import Ray with Ray Data, or explain how to install it.

    Raises:
        ConfigError: Ray (or its ``data`` extra) is not installed.
    """
    try:
        import ray
        import ray.data  # noqa: F401  (the extra, not just the core)
    except ImportError as err:
        raise ConfigError(f"--engine ray needs Ray Data: pip install '{RAY_PACKAGE}' (or use --engine local)") \
            from err
    return ray


class _Synthesizer:
    """The per-actor stage: built once per worker, called on batches of image ids.

    Results travel pickled (one bytes cell per image) because Ray Data would otherwise try, and fail
    noisily, to turn the result objects into Arrow columns before falling back to pickling anyway.

    Args:
        source: the images (pickled to each worker).
        cfg: the settings.
    """

    def __init__(self, source: Source, cfg: SynthesisConfig) -> None:
        self.source = source
        self.extractor = SceneExtractor(cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        ids = [str(i) for i in batch["image_id"]]
        results: list[ImageResult | SpatialVLMError] = []
        for image_id in ids:
            try:
                results.append(synthesize_image(self.source, self.extractor, image_id))
            except SpatialVLMError as err:
                # Returned, not raised: the driver first writes every earlier image (raising here would make
                # Ray drop finished results still queued), then raises it, where the local engine would.
                results.append(err)
        return {"image_id": ids, "result": [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in results]}


def run_ray(source: Source, out: Path, cfg: SynthesisConfig, on_image: ProgressCallback | None = None, *,
            address: str | None = None, num_workers: int | None = None) -> RunSummary:
    """Synthesise every image of ``source`` into ``out`` on Ray Data; same output as :func:`run_local`.

    When Ray is already initialised in this process, that cluster is used and left running; otherwise
    this connects to ``address`` (or starts a local Ray) and shuts it down before returning.

    Args:
        source: the images; it is pickled to every worker, so it must be picklable.
        out: the dataset folder; images already done there are skipped (never submitted).
        cfg: the settings.
        on_image: called on the driver after each image with its id and its number of rows (progress).
        address: a Ray cluster address (``ray://host:10001`` or ``host:6379``); None starts a local Ray.
        num_workers: worker actors, one CPU each; default the cluster's CPU count.

    Returns:
        The run's summary.

    Raises:
        ConfigError: Ray is not installed, bad expert names, ``out`` made with other settings, or
            ``num_workers`` < 1.
        InputError: an image the experts cannot use (re-raised from the worker).
        SimulationError: a scene the simulator could not build (re-raised from the worker).

    Example:
        >>> import tempfile
        >>> from spatialvlm_ros.synthesis.sources import open_source
        >>> cfg = SynthesisConfig()
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     run_ray(open_source("sim:2", cfg), Path(tmp), cfg, num_workers=0)
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: num_workers must be >= 1, got 0
    """
    if num_workers is not None and num_workers < 1:
        raise ConfigError(f"num_workers must be >= 1, got {num_workers}")
    ray = import_ray()
    _check_expert_names(cfg)
    writer = DatasetWriter(out, cfg)
    todo = []
    for image_id in source.image_ids:
        if not writer.is_done(image_id):
            todo.append(image_id)
        elif on_image is not None:
            on_image(image_id, 0)
    skipped = len(source.image_ids) - len(todo)
    processed = 0
    if todo:
        started = not ray.is_initialized()
        if started:
            _init_ray(ray, address, num_workers)
        try:
            for result in _results(ray, source, cfg, todo, num_workers):
                n_rows = write_result(writer, result)
                processed += 1
                if on_image is not None:
                    on_image(result.image_id, n_rows)
        finally:
            if started:
                ray.shutdown()
    summary = RunSummary.from_writer(processed, skipped, writer.finalize())
    logger.info("synthesised %d images on Ray (%d skipped as done): %d rows in %s", processed, skipped,
                summary.rows, out)
    return summary


def _check_expert_names(cfg: SynthesisConfig) -> None:
    """Fail on the driver, before Ray starts, on an unknown expert name (without loading any model here)."""
    experts = cfg.experts
    for registry, name in ((FILTERS, experts.filter), (OBJECT_EXPERTS, experts.objects),
                           (DEPTH_SOURCES, experts.depth), (EMBEDDERS, experts.embedder)):
        registry.get(name)


def _init_ray(ray: ModuleType, address: str | None, num_workers: int | None) -> None:
    env = {key: os.environ[key] for key in _FORWARDED_ENV if key in os.environ}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "logging_level": logging.WARNING}
    if address is None:
        # A private local Ray sized to the workers asked for; no dashboard (nothing would look at it).
        kwargs.update(num_cpus=num_workers, include_dashboard=False)
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ConfigError(f"could not start or reach Ray ({address or 'local'}): {err}") from err


def _results(ray: ModuleType, source: Source, cfg: SynthesisConfig, todo: list[str],
             num_workers: int | None) -> Iterator[ImageResult]:
    """Stream the results of ``todo`` in order; worker failures come back as this package's errors."""
    workers = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    per_block = max(1, min(MAX_IMAGES_PER_BLOCK, math.ceil(len(todo) / MAX_BLOCKS)))
    dataset = ray.data.from_items([{"image_id": i} for i in todo], override_num_blocks=math.ceil(len(todo) / per_block))
    dataset = dataset.map_batches(_Synthesizer, fn_constructor_kwargs={"source": source, "cfg": cfg},
                                  batch_size=1, batch_format="numpy", num_cpus=1,
                                  compute=ray.data.ActorPoolStrategy(size=workers))
    # This dataset's own context (a copy), so a caller's Ray Data settings are left alone. Same order as the
    # local engine, so progress and logs read the same; the CLI draws its own progress bar.
    dataset.context.execution_options.preserve_order = True
    dataset.context.enable_progress_bars = False
    # A bug in a worker reaches the driver as its own exception type, not as a generic UDF failure.
    dataset.context.raise_original_map_exception = True
    try:
        for row in dataset.iter_rows():
            result = pickle.loads(row["result"])
            if isinstance(result, SpatialVLMError):
                raise result
            yield result
    except SpatialVLMError:
        raise
    except Exception as err:  # Ray wraps errors of the actors' setup (experts) in its own types: unwrap ours
        cause = _project_error(err)
        if cause is None:
            raise
        raise cause from err


def _project_error(err: BaseException) -> SpatialVLMError | None:
    """This package's error somewhere in a Ray exception's cause chain, if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        exc = stack.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, SpatialVLMError):
            return exc
        # Ray keeps a worker's exception in ``cause`` (RayTaskError) or its first argument (ActorDiedError).
        stack += [getattr(exc, "cause", None), exc.__cause__, exc.__context__,
                  *(a for a in exc.args if isinstance(a, BaseException))]
    return None
