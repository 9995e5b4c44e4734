"""``spatialvlm synthesize``: run the data engine from the command line with a progress bar."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from spatialvlm_ros.synthesis.config import load_synthesis_config
from spatialvlm_ros.synthesis.engine import RunSummary, run_local
from spatialvlm_ros.synthesis.sources import open_source


def synthesize_cli(args: argparse.Namespace) -> int:
    """Run ``spatialvlm synthesize`` (arguments from :func:`spatialvlm_ros.cli.build_parser`).

    ``--engine local`` runs in this process; ``--engine ray`` runs on Ray Data, on the cluster at
    ``--ray-address`` or on a local Ray started (and stopped) for the run. Both write the same dataset.
    Prints the run summary as JSON on the last line.

    Raises:
        ConfigError: bad settings, or ``--engine ray`` without Ray installed.
        InputError: an unsupported ``--input``.
    """
    cfg = load_synthesis_config(args.config, {"seed": args.seed} if args.seed is not None else None)
    if args.exact_per_image is not None:
        cfg = dataclasses.replace(cfg, questions=dataclasses.replace(cfg.questions,
                                                                     exact_per_image=args.exact_per_image))
    for key in ("off_path_share", "zoom_share", "wrist_share"):
        if getattr(args, key, None) is not None:
            cfg = dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, **{key: getattr(args, key)}))
    for key, every in (("kinds", "ALL_KINDS"), ("colours", "PALETTE")):
        words = getattr(args, key, None)
        if words:
            import spatialvlm_ros.sim as sim
            words = tuple(getattr(sim, every)) if words == ["all"] else tuple(words)
            cfg = dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, **{key: words}))
    source = open_source(args.input, cfg)
    if args.engine == "ray":
        # Fail on a missing Ray before drawing a progress bar.
        from spatialvlm_ros.synthesis.ray_engine import import_ray, run_ray
        import_ray()
    if not getattr(args, "verbose", False):
        # One simulator per image would log a line each; the progress bar says enough.
        logging.getLogger("spatialvlm_ros.sim").setLevel(logging.WARNING)
    columns = (TextColumn("[bold]synthesize"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rows]} QA"),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("images", total=len(source.image_ids), rows=0)
        rows = 0

        def advance(image_id: str, n_rows: int) -> None:
            nonlocal rows
            rows += n_rows
            progress.update(task, advance=1, rows=rows)

        summary: RunSummary
        if args.engine == "ray":
            summary = run_ray(source, args.out, cfg, on_image=advance, address=args.ray_address,
                              num_workers=args.ray_workers)
        else:
            summary = run_local(source, args.out, cfg, on_image=advance)
    print(json.dumps({"out": str(args.out), "engine": args.engine, **dataclasses.asdict(summary)}))
    return 0
