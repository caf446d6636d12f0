"""`selfcorrect run | compile | ...`: one entry point; each subcommand lives with its module.

`run` and `compile` are defined here; the others parse their own options and are found in
SUBCOMMANDS (name -> "module:function", imported only when used).
"""
from __future__ import annotations

import argparse
import sys

from selfcorrect import __version__
from selfcorrect.config import ConfigError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a preset from selfcorrect/presets (tiny, demo, testbed, "
                   "cluster-1.5b, cluster-7b)")
    p.add_argument("--config", help="a YAML run configuration file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set train.stage1_steps=5 (repeatable)")


def cmd_run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from selfcorrect import config, evaluate
    from selfcorrect.pipelines.local import run_local

    cfg = config.load(args.preset, args.config, args.overrides)
    console = Console(file=sys.stdout)   # the real stdout: a local run redirects sys.stdout
    console.print(f"[bold]selfcorrect {__version__}[/]: running the SCoRe pipeline locally "
                  f"({cfg.name}, model {cfg.model.name or cfg.model.source})")
    out = run_local(cfg, console=console)
    table = Table(title=f"Self-correction on {int(out['results']['base']['n'])} eval problems (%)")
    table.add_column("model")
    for key in evaluate.METRICS:
        table.add_column(evaluate.LABELS[key], justify="right")
    for name, m in out["results"].items():
        table.add_row(name, *(f"{100 * m[k]:+.1f}" if k.startswith("delta") else f"{100 * m[k]:.1f}"
                              for k in evaluate.METRICS))
    console.print(table)
    import shutil
    from pathlib import Path
    for html in sorted(Path(out["run_dir"]).glob("evaluate*/html")):
        named = Path(out["run_dir"], "report.html")    # KFP artifact paths have no suffix
        shutil.copyfile(html, named)
        console.print(f"report: [bold]{named}[/]", soft_wrap=True)
    for decision in sorted(Path(out["run_dir"]).glob("decide-promotion*/decision")):
        console.print(decision.read_text().strip().splitlines()[0].lstrip("# ").replace("*", ""))
    console.print(f"pipeline finished in {out['seconds']:.0f} s")
    console.print(f"artifacts: [bold]{out['run_dir']}[/]")
    return 0


def cmd_compile(args) -> int:
    from selfcorrect import images

    with images.use_registry(args.registry):
        from selfcorrect.pipelines.compile import compile_pipeline

        cfg = None
        if args.preset or args.config or args.overrides:
            from selfcorrect import cluster_checks, config

            loaded = config.load(args.preset, args.config, args.overrides, local=False)
            # the rules submit refuses on, as warnings: a local compile stays valid
            cluster_checks.report(loaded, _warn, backend=args.backend)
            cfg = loaded.to_dict()
        vertex = args.backend == "vertex"
        if vertex:
            _vertex_drops(cfg)
        print(compile_pipeline(args.output, cfg, kubernetes_platform=not vertex))
    return 0


def _warn(line: str) -> None:
    print(line, file=sys.stderr)


def _vertex_drops(cfg: dict | None) -> None:
    """Warn which resources.* keys a Vertex AI compile leaves out."""
    from selfcorrect import config
    from selfcorrect.train.resources import vertex_drops

    dropped = vertex_drops(config.build(config.RunConfig, cfg))
    if dropped:
        _warn("warning: Vertex AI reads no Kubernetes platform spec; this compile drops "
              + ", ".join(dropped))


def registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", help="container registry of the images, e.g. "
                   "us-docker.pkg.dev/PROJECT/selfcorrect (default: $SELFCORRECT_REGISTRY, "
                   "else ghcr.io/selfcorrect); the tags follow the code (selfcorrect.images)")


SUBCOMMANDS = {
    "verify": ("selfcorrect.verify.beam:main", "verify attempts with the Beam step"),
    "validate": ("selfcorrect.validate:main", "check a dataset with its GX suite"),
    "submit": ("selfcorrect.pipelines.cluster:main_submit", "upload this version and start a run on KFP or Vertex"),
    "schedule": ("selfcorrect.pipelines.cluster:main_schedule", "create a recurring run pinned to this version"),
    "schedules": ("selfcorrect.pipelines.cluster:main_schedules", "list or delete recurring runs"),
    "evaluate": ("selfcorrect.evaluate_cli:main", "evaluate model folders on a problems file"),
    "prepare": ("selfcorrect.data.prepare:main", "build Problem JSONL from a problem source"),
    "pretrain": ("selfcorrect.testbed:main", "pretrain the testbed model from scratch (chain task)"),
    "testbed-base": ("selfcorrect.testbed_base:main", "the testbed base model on dev: checker, Delta"),
    "repro": ("selfcorrect.repro:main", "the paper's rows on the testbed: table and plots"),
}


def _delegate(name: str, argv: list[str]) -> int:
    import importlib

    module, func = SUBCOMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), func)(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="selfcorrect", description=__doc__)
    parser.add_argument("--version", action="version", version=f"selfcorrect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline locally through kfp.local")
    _config_args(run)
    comp = sub.add_parser("compile", help="compile the pipeline to versioned IR YAML")
    comp.add_argument("--output", default="dist", help="folder for the YAML (default: dist)")
    comp.add_argument("--backend", choices=["kfp", "vertex"], default="kfp",
                      help="vertex: without the Kubernetes platform spec (warns what it drops)")
    registry_arg(comp)
    _config_args(comp)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, add_help=False, help=help_text)
    if argv and argv[0] in SUBCOMMANDS:   # these parse their own options
        return _delegate(argv[0], argv[1:])
    args = parser.parse_args(argv)
    try:
        return {"run": cmd_run, "compile": cmd_compile}[args.command](args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
