"""`selfcorrect verify`: judge a file of attempts against its problems, write the verdicts.

    selfcorrect verify --problems P --attempts A --output V [--dead-letters D] [Beam options]

On Beam (selfcorrect.verify.beam, any runner) when the [beam] extra is installed; in this
process, one attempt after the other, with `--in-process` or when Beam is not installed (the
light `pip install selfcorrect`). Both call the one verifier (selfcorrect.verify.verify), write
the same sorted verdicts and send what the verifier itself fails on to the dead letters.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from selfcorrect import extras, records, storage
from selfcorrect.records import Attempt, Problem, Verdict


def dead_letter(stage: str, error: str, attempt: Attempt) -> dict:
    """A record of an attempt the step could not judge, with enough to replay it."""
    return {"stage": stage, "error": error, "problem_id": attempt.problem_id,
            "sample": attempt.sample, "turn": attempt.turn, "attempt": dataclasses.asdict(attempt)}


def join_error(problem_id: str, problems: set) -> str:
    """Why an attempt of `problem_id` cannot be joined to one of `problems` (not exactly one)."""
    return (f"no problem with id {problem_id!r}" if not problems
            else f"{len(problems)} different problems share the id {problem_id!r}")


def read_inputs(problems_uri: str, attempts_uri: str, strict: bool = False):
    """The problems and attempts (JSONL or Parquet); bad rows raise RecordError naming file,
    row and field. strict: empty files and one id for two different problems are errors too."""
    problems = records.read(problems_uri, Problem)
    attempts = records.read(attempts_uri, Attempt)
    if not strict:
        return problems, attempts
    for uri, rows in ((problems_uri, problems), (attempts_uri, attempts)):
        if not rows:
            raise records.RecordError(uri, None, None, "no records: the file is empty")
    first: dict[str, int] = {}
    for row, p in enumerate(problems, start=1):
        if p.id in first and p != problems[first[p.id] - 1]:
            raise records.RecordError(problems_uri, row, "id", f"duplicate id {p.id!r} with other "
                                                               f"content (first at row {first[p.id]})")
        first.setdefault(p.id, row)
    return problems, attempts


def write_results(output_uri: str, verdicts: list[Verdict], dead: list[dict],
                  dead_letter_uri: str | None) -> dict:
    """Write verdicts sorted by (problem_id, sample, turn) (Parquet for a .parquet name) and the
    dead letters (JSONL) when a location is given; return the counts."""
    verdicts = sorted(verdicts, key=lambda v: (v.problem_id, v.sample, v.turn))
    dead = sorted(dead, key=lambda d: (d["problem_id"], d["sample"], d["turn"]))
    records.write(output_uri, verdicts, cls=Verdict)
    if dead_letter_uri:
        storage.write_text(dead_letter_uri, "".join(json.dumps(d, sort_keys=True) + "\n" for d in dead))
    return {"verdicts": len(verdicts), "correct": sum(v.correct for v in verdicts),
            "dead_letters": len(dead)}


def run_in_process(problems_uri: str, attempts_uri: str, output_uri: str, *,
                   dead_letter_uri: str | None = None, timeout_s: float = 10.0,
                   strict: bool = False, custom: str = "") -> dict:
    """What verify.beam.run does, in this process: the same verdicts, dead letters and counts.
    custom: "module:function" of your check (verify.custom), imported first (ConfigError)."""
    from tqdm import tqdm

    from selfcorrect.verify import verify_attempt

    if custom:
        from selfcorrect.verify.custom import load_check

        load_check(custom)

    problems, attempts = read_inputs(problems_uri, attempts_uri, strict)
    by_id: dict[str, set[Problem]] = {}
    for p in problems:
        by_id.setdefault(p.id, set()).add(p)
    verdicts, dead = [], []
    for attempt in tqdm(attempts, desc="verify", unit="attempt", disable=len(attempts) < 1000):
        found = by_id.get(attempt.problem_id, set())
        if len(found) != 1:
            dead.append(dead_letter("join", join_error(attempt.problem_id, found), attempt))
            continue
        try:
            verdicts.append(verify_attempt(next(iter(found)), attempt, timeout_s=timeout_s,
                                           custom=custom))
        except Exception as e:  # noqa: BLE001 - the verifier's own failure, never the attempt's
            dead.append(dead_letter("verify", f"{type(e).__name__}: {e}", attempt))
    return write_results(output_uri, verdicts, dead, dead_letter_uri)


def distinct_outputs(inputs: dict[str, str], outputs: dict[str, str | None]) -> None:
    """ValueError when an output file is an input file or the other output."""
    given = [(k, u) for k, u in outputs.items() if u]
    for i, (label, uri) in enumerate(given):
        for other, other_uri in [*inputs.items(), *given[:i]]:
            if storage.same_location(uri, other_uri):
                raise ValueError(f"{uri}: --{label.replace(' ', '-')} is the same file as --"
                                 f"{other.replace(' ', '-')}; it would be replaced")


def parser() -> argparse.ArgumentParser:
    from selfcorrect.cli import _config_args

    p = argparse.ArgumentParser(
        prog="selfcorrect verify", description="Check each answer in a file of attempts "
        "against its problem and write one verdict per answer (correct or not, and why). "
        "Runs as an Apache Beam pipeline when selfcorrect[beam] is installed: on this machine by "
        "default, or on Dask, Dataflow, Flink or Spark; without Beam, or with --in-process, in "
        "this process. Settings: the verify section of --preset/--config/--set (see "
        "`selfcorrect config show`); a flag below, when given, wins over it. Options not "
        "listed here go to Beam, e.g. --direct_num_workers 4 (default: one per CPU the "
        "container may use); --runner DaskRunner --dask_client_address tcp://HOST:8786 "
        "--temp_location /shared/tmp (a path the client, scheduler and workers share); "
        "--runner DataflowRunner --project P --region R --temp_location gs://B/tmp.")
    _config_args(p)
    p.add_argument("--problems", required=True, help="Problem records (JSONL or Parquet, path or gs://)")
    p.add_argument("--attempts", required=True, help="Attempt records (JSONL or Parquet)")
    p.add_argument("--output", required=True, help="where to write Verdict records (JSONL; Parquet for a .parquet name)")
    p.add_argument("--dead-letters", default=None,
                   help="where to write attempts the verifier could not judge (JSONL)")
    p.add_argument("--timeout-s", type=float,
                   help="seconds one code answer may run (default: verify.timeout_s, 10)")
    p.add_argument("--code-concurrency", type=int,
                   help="code answers each Beam worker runs at once (default: "
                        "verify.code_concurrency, 2)")
    p.add_argument("--custom", metavar="MODULE:FUNCTION",
                   help="your own check instead of the built-in ones, e.g. "
                        "mypkg.checks:exact_match (default: verify.custom; docs/usage.md)")
    p.add_argument("--in-process", action="store_true",
                   help="verify in this process, without Beam (the default when Beam is not installed)")
    return p


def _settings(args):
    """The verify section of --preset/--config/--set, the flags given winning over it."""
    from selfcorrect import config

    flags = {"timeout_s": args.timeout_s, "code_concurrency": args.code_concurrency,
             "custom": args.custom}
    settings = dataclasses.asdict(config.load(args.preset, args.config, args.overrides).verify)
    return config.build(config.VerifyConfig, {**settings, **{k: x for k, x in flags.items()
                                                             if x is not None}}, "verify.")


def main(argv: list[str] | None = None, *, in_process: bool | None = None) -> int:
    from selfcorrect.config import ConfigError

    args, beam_args = parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    local = args.in_process if in_process is None else in_process
    if not local and extras.missing("beam"):
        if in_process is False or beam_args:
            print(f"verify: {extras.MissingExtra('Beam verification', ['beam'])}"
                  + (f" (Beam options given: {' '.join(beam_args)})" if beam_args else ""),
                  file=sys.stderr)
            return 2
        print("verify: Beam is not installed (selfcorrect[beam]): verifying in this process",
              file=sys.stderr)
        local = True
    if local and beam_args:
        print(f"verify: --in-process takes no Beam options: {' '.join(beam_args)}", file=sys.stderr)
        return 2
    try:
        v = _settings(args)
        distinct_outputs({"problems": args.problems, "attempts": args.attempts},
                         {"output": args.output, "dead letters": args.dead_letters})
        if local:
            counts = run_in_process(args.problems, args.attempts, args.output,
                                    dead_letter_uri=args.dead_letters, timeout_s=v.timeout_s,
                                    strict=True, custom=v.custom)
        else:
            from selfcorrect.verify import beam

            counts = beam.run(args.problems, args.attempts, args.output,
                              beam.pipeline_args(v, beam_args), dead_letter_uri=args.dead_letters,
                              timeout_s=v.timeout_s, code_concurrency=v.code_concurrency,
                              strict=True, custom=v.custom)
    except ConfigError as e:            # a bad setting; the custom check does not import
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # a bad record, a missing file, a missing location
        print(f"verify: {e}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0
