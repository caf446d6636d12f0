"""`selfcorrect evaluate`: the pipeline's evaluation outside the pipeline.

    selfcorrect evaluate --model MODEL --problems PATH [--baseline MODEL] [--output DIR]
                         [--split eval|train|all] [--samples K] [--swap-control]
                         [--preset tiny] [--set KEY=VALUE ...]

For each model (a save_pretrained folder, e.g. a pipeline Model artifact or a registry
entry, as a local path, gs:// or s3:// URL; a Hub id such as Qwen/Qwen2.5-0.5B-Instruct,
at --revision; or a .gguf file): two attempts per problem (selfcorrect.rollout; greedy unless
generate.temperature > 0; --samples K episodes per problem, which adds the sampling study),
verification with the Beam step (selfcorrect.verify.beam.run, options from `verify.*`),
then the same metric and report functions as the evaluate component; --swap-control adds
the swap control (rollout.swap_control: attempt 2 again after another problem's attempt 1,
the derangement seeded by eval.seed; one more attempt-2 generation per episode). Writes
results.json, details.json, report.md and report.html under --output.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def evaluate_models(models: dict[str, str], problems_uri: str, output_dir: str, cfg,
                    split: str = "eval", samples: int = 1, revision: str = "",
                    swap_control: bool = False) -> dict:
    """{name: model folder} -> {name: evaluate_model(...)}; writes attempts, verdicts, reports.

    samples > 1: that many episodes per problem (decode with generate.temperature > 0), and
    the summary adds the sampling study (majority over k first attempts vs k/2 corrections).
    revision: the Hub revision of a model given as a Hub id.
    """
    from selfcorrect import evaluate as ev
    from selfcorrect import report, rollout, storage
    from selfcorrect.records import Attempt, Problem, Verdict, read, write_jsonl
    from selfcorrect.verify import beam

    problems = read(problems_uri, Problem)
    todo = [p for p in problems if split == "all" or p.split == split]
    if not todo:
        raise ValueError(f"{problems_uri}: no problems with split '{split}' "
                         f"(splits present: {sorted({p.split for p in problems}) or 'none'}); "
                         "use --split all")
    g, v, e = cfg.generate, cfg.verify, cfg.eval
    out: dict[str, dict] = {}
    training: dict[str, dict] = {}
    for name, path in models.items():
        net, tok, folder = _load(cfg.model, path, revision)
        episodes = rollout.two_attempts(net, tok, todo, samples=samples, temperature=g.temperature,
                                        max_new_tokens=g.max_new_tokens,
                                        batch_size=g.batch_size, templates=cfg.prompts,
                                        seed=g.seed)
        attempts_uri = storage.join(output_dir, name, "attempts.jsonl")
        verdicts_uri = storage.join(output_dir, name, "verdicts.jsonl")
        write_jsonl(attempts_uri, [a for ep in episodes for a in ep.attempts(name)])
        beam.run(problems_uri, attempts_uri, verdicts_uri, pipeline_args=beam.pipeline_args(v),
                 timeout_s=v.timeout_s, code_concurrency=v.code_concurrency,
                 custom=v.custom)
        verdicts, attempts = read(verdicts_uri, Verdict), read(attempts_uri, Attempt)
        swap = run_swap_control(net, tok, episodes, name, problems_uri, output_dir, cfg) \
            if swap_control else None
        out[name] = ev.evaluate_model(verdicts, attempts, todo, samples=e.bootstrap_samples,
                                      confidence=e.confidence, seed=e.seed, swap=swap)
        if samples > 1:
            out[name]["summary"].update(ev.sampling_study(attempts, verdicts, samples))
        if folder and Path(folder, "metrics.json").is_file():
            training[name] = json.loads(Path(folder, "metrics.json").read_text())
    report.write(out, training, results=storage.join(output_dir, "results.json"),
                 details=storage.join(output_dir, "details.json"),
                 markdown_path=storage.join(output_dir, "report.md"),
                 html_path=storage.join(output_dir, "report.html"))
    return out


def _load(model_cfg, path: str, revision: str = ""):
    """(model, tokenizer, local folder or None) of --model/--baseline: a .gguf file, a Hub id
    (at `revision`), or a save_pretrained folder, local or remote (copied once to a cache)."""
    from selfcorrect import models as model_io

    if path.endswith(".gguf") and Path(path).is_file():
        return (*model_io.load(dataclasses.replace(model_cfg, source="gguf", path=path,
                                                   revision="")), None)
    if model_io.is_hub_id(path):
        return (*model_io.load(dataclasses.replace(model_cfg, source="hf", path=path,
                                                   revision=revision)), None)
    folder = model_io.local_source(path, "--model/--baseline")
    if not Path(folder, "config.json").is_file():
        raise FileNotFoundError(f"--model/--baseline {path}: neither a save_pretrained folder "
                                "(no config.json) nor a .gguf file")
    return (*model_io.load(model_cfg, path=folder), folder)


def run_swap_control(net, tok, episodes, name: str, problems_uri: str, output_dir: str,
                     cfg) -> dict[tuple[str, int], tuple[bool, bool]]:
    """The swap control (rollout.swap_control, derangement seeded by eval.seed): each
    episode's attempt 2 regenerated after another problem's attempt 1, verified by the Beam
    step; {(problem_id, sample): (right for its own problem, repeats the swapped-in answer)}.
    Writes <output>/<name>/swap-attempts.jsonl and swap-verdicts.jsonl."""
    from selfcorrect import rollout, storage
    from selfcorrect.evaluate import same_answer
    from selfcorrect.records import Attempt, Verdict, read, write_jsonl
    from selfcorrect.verify import beam

    g, v = cfg.generate, cfg.verify
    swapped = rollout.swap_control(net, tok, episodes, seed=cfg.eval.seed,
                                   temperature=g.temperature, max_new_tokens=g.max_new_tokens,
                                   batch_size=g.batch_size, templates=cfg.prompts,
                                   sample_seed=g.seed)
    attempts_uri = storage.join(output_dir, name, "swap-attempts.jsonl")
    verdicts_uri = storage.join(output_dir, name, "swap-verdicts.jsonl")
    write_jsonl(attempts_uri, [Attempt(e.problem.id, e.sample, 2, t.text, name, t.truncated)
                               for e, (_, t) in zip(episodes, swapped)])
    beam.run(problems_uri, attempts_uri, verdicts_uri, pipeline_args=beam.pipeline_args(v),
             timeout_s=v.timeout_s, code_concurrency=v.code_concurrency, custom=v.custom)
    right = {(x.problem_id, x.sample): x.correct for x in read(verdicts_uri, Verdict)}
    return {(e.problem.id, e.sample): (bool(right[(e.problem.id, e.sample)]),
                                       same_answer(donor.first.text, t.text))
            for e, (donor, t) in zip(episodes, swapped)}


def main(argv: list[str] | None = None) -> int:
    from selfcorrect import config
    from selfcorrect.cli import _config_args
    from selfcorrect.evaluate import markdown_ci_table

    p = argparse.ArgumentParser(
        prog="selfcorrect evaluate",
        description="Measure how well a model answers and then corrects itself: two attempts "
        "per problem (greedy unless generate.temperature > 0), each checked, then accuracy "
        "at both attempts, how often a wrong answer is fixed or a right one broken, with "
        "intervals. Writes results.json, report.md and report.html under --output; with "
        "--baseline, compares two models. Settings: the generate, verify and eval sections "
        "of --preset/--config/--set.")
    p.add_argument("--model", required=True,
                   help="the model to evaluate: a save_pretrained folder (local, gs:// or "
                        "s3://), a Hugging Face Hub id, or a .gguf file")
    p.add_argument("--revision", default="",
                   help="with a Hub id: the branch, tag or commit to load (default: main)")
    p.add_argument("--problems", required=True, help="a problems file from `selfcorrect "
                   "prepare` (JSONL or Parquet; local, gs:// or s3://)")
    p.add_argument("--baseline", help="a second model to compare with, e.g. the base model "
                                      "(the same kinds as --model)")
    p.add_argument("--output", default="eval", help="folder or gs:// prefix (default: eval)")
    p.add_argument("--split", default="eval", choices=("eval", "dev", "train", "all"),
                   help="which problems of the file (default: eval)")
    p.add_argument("--samples", type=int, default=1,
                   help="episodes per problem; >1 adds the sampling study (majority vote over "
                        "k first attempts vs k/2 self-corrections); needs generate.temperature>0")
    p.add_argument("--swap-control", action="store_true",
                   help="also regenerate attempt 2 after another problem's attempt 1 and report "
                        "P(right at t2 | wrong at t1) with the own and the swapped attempt 1")
    _config_args(p)
    args = p.parse_args(argv)
    try:
        cfg = config.load(args.preset, args.config, args.overrides)
    except config.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.samples < 1 or (args.samples > 1 and cfg.generate.temperature <= 0):
        print("error: --samples must be >= 1, and > 1 needs sampling: "
              "--set generate.temperature=1.0", file=sys.stderr)
        return 2
    models = {"model": args.model}
    if args.baseline:
        models = {"baseline": args.baseline, **models}
    try:
        out = evaluate_models(models, args.problems, args.output, cfg, split=args.split,
                              samples=args.samples, revision=args.revision,
                              swap_control=args.swap_control)
    except (ValueError, OSError) as e:   # bad records, settings or files; a Hub id not found
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_ci_table({n: r["summary"] for n, r in out.items()}))
    from selfcorrect import storage
    print(f"report: {storage.join(args.output, 'report.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
