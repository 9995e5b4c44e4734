"""``spatialvlm reason``: a composite spatial question answered step by step, or the planner's accuracy measured."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Callable

from typing import TYPE_CHECKING

from spatialvlm_ros.cli.vlm import add_vlm_arguments, estimator_config_from_args, image_frame
from spatialvlm_ros.config import EstimatorConfig, ReasoningConfig, SpatialRewardConfig, config_path, load_config
from spatialvlm_ros.errors import InputError
from spatialvlm_ros.frame import Frame

if TYPE_CHECKING:
    from spatialvlm_ros.reasoning.tools import SpatialTools

logger = logging.getLogger(__name__)

#: First scene seed of ``--evaluate`` (spatialvlm_ros.evaluation.reasoning_benchmark.REASONING_SEED; the
#: benchmark module imports the simulator, so the parser does not import it for the default).
_EVAL_SEED = 3_000_000


def add_reason_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``spatialvlm reason``."""
    parser.add_argument("source", nargs="?", default="sim",
                        help="an image file, a rosbag2 (folder, .mcap or .db3: its first paired frame), or 'sim'")
    parser.add_argument("question", nargs="?", default=None,
                        help='e.g. "Which object is closest to the red can?"; omit with --evaluate')
    parser.add_argument("--tools", choices=["geometric", "vlm"], default="geometric",
                        help="who answers the atomic queries: the geometric estimator (RGB-D) or the spatial VLM "
                             "of estimator.vlm (RGB)")
    parser.add_argument("--planner", choices=["deterministic", "llm"], default=None,
                        help="deterministic rules or a language model (default: reasoning.planner)")
    parser.add_argument("--objects", default=None,
                        help="comma-separated object phrases in the image (default: the simulator's labels)")
    parser.add_argument("--options", default=None, help='JSON options, e.g. \'{"opening_m": 0.1}\'')
    parser.add_argument("--llm-url", default=None, help="planner llm: API base URL (reasoning.llm.url)")
    parser.add_argument("--llm-model", default=None, help="planner llm: model name (reasoning.llm.model)")
    parser.add_argument("--config", type=Path, default=None,
                        help="spatial_reward_node parameter file (default: config/spatial_reward.yaml)")
    parser.add_argument("--evaluate", action="store_true",
                        help="instead of one question: composite questions with known truth on fresh held-out "
                             "simulated scenes; prints accuracy and accuracy_by_kind as JSON on the last line")
    parser.add_argument("--questions", type=int, default=300, help="with --evaluate: how many questions")
    parser.add_argument("--seed", type=int, default=_EVAL_SEED, help="with --evaluate: the first scene seed")
    add_vlm_arguments(parser)


def _reasoning_config(args: argparse.Namespace) -> ReasoningConfig:
    overrides = {key: value for key, value in (("reasoning.planner", args.planner), ("reasoning.llm.url", args.llm_url),
                                               ("reasoning.llm.model", args.llm_model)) if value is not None}
    return load_config(SpatialRewardConfig, "spatial_reward_node", args.config or config_path("spatial_reward.yaml"),
                       overrides).reasoning


def _read_frame(source: str) -> Frame:
    path = Path(source)
    if path.is_dir() or path.suffix in (".mcap", ".db3"):
        from spatialvlm_ros.synthesis.sources import BagSource
        bag = BagSource(path)
        if not bag.image_ids():
            raise InputError(f"{source}: no paired camera frame in the bag")
        return bag.load(bag.image_ids()[0]).frame
    return image_frame(source)


def tools_factory(kind: str, estimator: EstimatorConfig,
                  objects: list[str] | None = None) -> Callable[[Frame], SpatialTools]:
    """Frame -> tools answered by the geometric estimator or by the spatial VLM that ``estimator`` configures."""
    from spatialvlm_ros.estimation.geometric import GeometricEstimator
    from spatialvlm_ros.reasoning.tools import EstimatorTools, VLMTools
    from spatialvlm_ros.vlm.registry import build_vlm
    if kind == "geometric":
        geometric = GeometricEstimator(estimator)
        return lambda frame: EstimatorTools(geometric, frame, objects)
    vlm = build_vlm(estimator.vlm)
    return lambda frame: VLMTools(vlm, frame, objects)


def reason_cli(args: argparse.Namespace) -> int:
    """Run ``spatialvlm reason``."""
    from spatialvlm_ros.evaluation.reasoning_benchmark import evaluate_reasoning
    from spatialvlm_ros.reasoning.llm import LLMPlanner
    from spatialvlm_ros.reasoning.planner import DeterministicPlanner
    reasoning = _reasoning_config(args)
    planner = LLMPlanner(reasoning.llm) if reasoning.planner == "llm" else DeterministicPlanner()
    objects = [o.strip() for o in args.objects.split(",") if o.strip()] if args.objects else None
    make_tools = tools_factory(args.tools, estimator_config_from_args(args), objects)
    options: dict[str, Any] = {"opening_m": reasoning.opening_m, **json.loads(args.options or "{}")}
    if args.evaluate:
        if not getattr(args, "verbose", False):
            logging.getLogger("spatialvlm_ros.sim").setLevel(logging.WARNING)   # a line per scene otherwise
        report = evaluate_reasoning(planner.answer, make_tools, args.questions, args.seed)
        report.update(tools=args.tools, planner=planner.name)
        for kind, accuracy in report["accuracy_by_kind"].items():
            print(f"{kind:>14}: {100 * accuracy:5.1f}% of {report['questions_by_kind'][kind]}")
        print(json.dumps(report))
        return 0
    if not args.question:
        logger.error("name a question, or pass --evaluate")
        return 2
    answer = planner.answer(args.question, make_tools(_read_frame(args.source)), options)
    for step in answer.steps:
        print(f"  {step.result.query} = {step.result.value!r}  ({step.result.note})")
    print(answer.text)
    print(json.dumps(answer.to_json()))
    return 0 if answer.valid else 1
