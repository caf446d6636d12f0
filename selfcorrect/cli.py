"""selfcorrect: train a model to correct its own answers (SCoRe), locally or on Kubeflow.

Start with `selfcorrect run --preset tiny` (a tiny random model: checks that everything
runs), then point --config at your own settings: `selfcorrect config show --preset tiny`
prints every setting with its value. `selfcorrect COMMAND --help` says what a command takes.
"""
# `run`, `compile` and `config` are defined here; the other commands parse their own options
# and are found in SUBCOMMANDS (name -> "module:function", imported only when used).
from __future__ import annotations

import argparse
import difflib
import sys

from selfcorrect import __version__, extras
from selfcorrect.config import ConfigError


def _config_args(p: argparse.ArgumentParser, default_preset: str | None = None) -> None:
    """--preset (choices: the presets), --config and --set, the same on every command."""
    from selfcorrect.config import preset_names

    p.add_argument("--preset", choices=preset_names(), default=default_preset,
                   help="start from these settings" + (f" (default: {default_preset})"
                                                       if default_preset else ""))
    p.add_argument("--config", help="a YAML file of settings, applied over the preset "
                   "(see `selfcorrect config show`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one setting, applied last, e.g. --set train.stage1_steps=5 "
                        "(repeatable)")


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


def cmd_config(args) -> int:
    import yaml

    from selfcorrect import config

    # values as given (no local path made absolute): the output is a valid --config file
    cfg = config.load(args.preset, args.config, args.overrides, local=False)
    print(f"# selfcorrect {__version__}: preset {args.preset or '(none)'}"
          + (f", --config {args.config}" if args.config else "")
          + "".join(f", --set {o}" for o in args.overrides))
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), end="")
    return 0


def _warn(line: str) -> None:
    print(line, file=sys.stderr)


def _vertex_drops(cfg: dict | None) -> None:
    """Warn which resources.* keys a Vertex AI compile leaves out."""
    from selfcorrect import config
    from selfcorrect.pipelines.placement import vertex_drops

    dropped = vertex_drops(config.build(config.RunConfig, cfg))
    if dropped:
        _warn("warning: Vertex AI reads no Kubernetes platform spec; this compile drops "
              + ", ".join(dropped))


def registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", help="container registry of the images, e.g. "
                   "us-docker.pkg.dev/PROJECT/selfcorrect (default: $SELFCORRECT_REGISTRY, "
                   "else ghcr.io/selfcorrect); the image tags follow this version")


SUBCOMMANDS = {
    "prepare": ("selfcorrect.data.prepare:main",
                "turn your data (a file or a Hugging Face dataset) into a problems file"),
    "verify": ("selfcorrect.verify.cli:main",
               "check a file of model answers against the problems (on Beam, or in process)"),
    "validate": ("selfcorrect.validate:main",
                 "check a problems, answers or results file before you use it"),
    "evaluate": ("selfcorrect.evaluate_cli:main",
                 "measure how well models answer and correct themselves on a problems file"),
    "submit": ("selfcorrect.pipelines.cluster:main_submit",
               "start a training run on Kubeflow Pipelines or Vertex AI"),
    "schedule": ("selfcorrect.pipelines.cluster:main_schedule",
                 "retrain on a schedule on Kubeflow Pipelines or Vertex AI"),
    "schedules": ("selfcorrect.pipelines.cluster:main_schedules",
                  "list or delete scheduled runs"),
    "pretrain": ("selfcorrect.experiments.testbed:main",
                 "pretrain the small testbed model from scratch (for `repro`)"),
    "testbed-base": ("selfcorrect.experiments.testbed_base:main",
                     "measure the testbed's base model on dev: its checker, its Delta"),
    "repro": ("selfcorrect.experiments.repro:main",
              "reproduce the paper's comparisons on the testbed: a table and plots"),
}
COMMANDS = ("run", "compile", "config", *SUBCOMMANDS)


#: the extras each command needs before it starts (selfcorrect.extras); verify runs in process
#: without Beam, prepare's sources name their own
NEEDS = {"run": ("kfp", "train", "beam", "gx"), "compile": ("kfp",), "validate": ("gx",),
         "submit": ("kfp",), "schedule": ("kfp",), "schedules": ("kfp",),
         "evaluate": ("train", "beam"), "pretrain": ("train",), "testbed-base": ("train",),
         "repro": ("train",)}


def _delegate(name: str, argv: list[str]) -> int:
    import importlib

    module, func = SUBCOMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), func)(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="selfcorrect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"selfcorrect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="train and evaluate on this machine, start to finish",
                         description="Train and evaluate on this machine: prepare the data, "
                         "sample and check answers, train (Stage I and II), evaluate, and "
                         "promote the model when it is better. Prints the results table and "
                         "where the report and models are.")
    _config_args(run)
    comp = sub.add_parser("compile", help="write the pipeline as a YAML file for Kubeflow "
                          "Pipelines or Vertex AI",
                          description="Write the pipeline as a YAML file to upload to Kubeflow "
                          "Pipelines or Vertex AI yourself (`selfcorrect submit` does both).")
    comp.add_argument("--output", default="dist", help="folder for the YAML (default: dist)")
    comp.add_argument("--backend", choices=["kfp", "vertex"], default="kfp",
                      help="vertex: for Vertex AI Pipelines (warns which Kubernetes settings "
                           "it cannot take)")
    registry_arg(comp)
    _config_args(comp)
    conf = sub.add_parser("config", help="show the settings a command would use",
                          description="Show settings: defaults, then --preset, --config and "
                          "--set, in that order.")
    conf_sub = conf.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = conf_sub.add_parser("show", help="print every setting with its value, as YAML "
                               "(usable as a --config file)")
    _config_args(show)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, add_help=False, help=help_text)
    if argv and argv[0] in NEEDS and not {"-h", "--help"} & set(argv):
        lacking = extras.missing(*NEEDS[argv[0]])
        if lacking:
            print(extras.MissingExtra(f"selfcorrect {argv[0]}", lacking), file=sys.stderr)
            return 2
    if argv and argv[0] in SUBCOMMANDS:   # these parse their own options
        return _delegate(argv[0], argv[1:])
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(f"selfcorrect: unknown command '{argv[0]}'{hint}\ncommands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return {"run": cmd_run, "compile": cmd_compile, "config": cmd_config}[args.command](args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
