"""The Beam step: verify every attempt against its problem with the shared verifier.

    {"problems": PCollection[Problem], "attempts": PCollection[Attempt]}
        | VerifyAttempts(timeout_s)
    -> {"verdicts": PCollection[Verdict], "dead_letters": PCollection[dict]}

A wrong answer, a crashing or hostile completion is a Verdict (reward 0, with its reason).
What is the verifier's own fault (verify() raising, an attempt naming an unknown problem) goes
to the dead-letter output, counted by a Beam counter, and the pipeline goes on.

`run()` reads JSONL or Parquet records (records.read tells them apart by content), runs the
pipeline (DirectRunner, one worker process per core by default; any Beam option passes
through, e.g. `--runner DataflowRunner --project ...`) and writes the verdicts as JSONL
sorted by (problem_id, sample, turn).

CLI: `selfcorrect verify --problems PATH --attempts PATH --output PATH [Beam options...]`
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import uuid

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from selfcorrect import records, storage
from selfcorrect.records import Attempt, Problem, Verdict

NAMESPACE = "selfcorrect.verify"
DEAD_LETTERS = "dead_letters"
DEFAULT_ARGS = ["--direct_running_mode=multi_processing", "--direct_num_workers=0"]  # 0: per core
_LOCAL_RUNNERS = {"directrunner", "direct", "bundlebaseddirectrunner", "switchingdirectrunner"}


def dead_letter(stage: str, error: str, attempt: Attempt) -> dict:
    """A record of an attempt the step could not judge, with enough to replay it."""
    return {"stage": stage, "error": error, "problem_id": attempt.problem_id,
            "sample": attempt.sample, "turn": attempt.turn, "attempt": dataclasses.asdict(attempt)}


class JoinFn(beam.DoFn):
    """(problem_id, {"problems": [...], "attempts": [...]}) -> (Problem, Attempt) per attempt.

    Attempts whose problem is missing (or ambiguous: two different problems, one id) go to
    the dead-letter output.
    """

    def __init__(self):
        super().__init__()
        self.unmatched = Metrics.counter(NAMESPACE, "attempts_without_problem")

    def process(self, element):
        problem_id, grouped = element
        problems, attempts = set(grouped["problems"]), list(grouped["attempts"])
        if len(problems) == 1:
            problem = problems.pop()
            for attempt in attempts:
                yield problem, attempt
            return
        why = (f"no problem with id {problem_id!r}" if not problems
               else f"{len(problems)} different problems share the id {problem_id!r}")
        for attempt in attempts:
            self.unmatched.inc()
            yield TaggedOutput(DEAD_LETTERS, dead_letter("join", why, attempt))


class VerifyFn(beam.DoFn):
    """[(Problem, Attempt), ...] -> Verdict each, through selfcorrect.verify.verify().

    Takes batches (see VerifyAttempts): math attempts are checked one after the other (they
    hold the GIL); code attempts run `code_concurrency` sandboxes at a time from a thread
    pool, since a code verdict is mostly a child process's time, not this one's.
    """

    def __init__(self, timeout_s: float = 10.0, code_concurrency: int = 2):
        super().__init__()
        self.timeout_s = timeout_s
        self.code_concurrency = max(1, int(code_concurrency))
        self.verified = Metrics.counter(NAMESPACE, "verdicts")
        self.correct = Metrics.counter(NAMESPACE, "correct")
        self.errors = Metrics.counter(NAMESPACE, "verifier_errors")
        self._pool = None

    def setup(self):
        # the heavy imports and the sandbox probe, once per worker instead of per element
        import concurrent.futures

        import math_verify  # noqa: F401
        import sympy  # noqa: F401

        from selfcorrect.verify import code

        code.network_isolation_available()
        if self.code_concurrency > 1:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.code_concurrency, thread_name_prefix="selfcorrect-sandbox")

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _judge(self, pair):
        from selfcorrect.verify import verify_attempt

        problem, attempt = pair
        try:
            return verify_attempt(problem, attempt, timeout_s=self.timeout_s), None
        except Exception as e:  # the verifier's own failure: never the attempt's
            return None, dead_letter("verify", f"{type(e).__name__}: {e}", attempt)

    def process(self, batch):
        batch = list(batch)
        code = [pair for pair in batch if pair[0].task == "code"]
        if self._pool is not None and len(code) > 1:
            judged = dict(zip(map(id, code), self._pool.map(self._judge, code)))
        else:
            judged = {}
        for pair in batch:
            verdict, dead = judged.get(id(pair)) or self._judge(pair)
            if dead is not None:
                self.errors.inc()
                yield TaggedOutput(DEAD_LETTERS, dead)
                continue
            self.verified.inc()
            if verdict.correct:
                self.correct.inc()
            yield verdict


class VerifyAttempts(beam.PTransform):
    """{"problems": PCollection[Problem], "attempts": PCollection[Attempt]} ->
    {"verdicts": PCollection[Verdict], "dead_letters": PCollection[dict]}.

    code_concurrency: sandboxes a worker runs at once (default 2); a batch of attempts is
    at most max_batch attempts.
    """

    def __init__(self, timeout_s: float = 10.0, code_concurrency: int = 2, max_batch: int = 16):
        super().__init__()
        self.timeout_s = timeout_s
        self.code_concurrency = code_concurrency
        self.max_batch = max_batch

    def expand(self, inputs):
        problems = inputs["problems"] | "KeyProblems" >> beam.Map(lambda p: (p.id, p))
        attempts = inputs["attempts"] | "KeyAttempts" >> beam.Map(lambda a: (a.problem_id, a))
        joined = (
            {"problems": problems, "attempts": attempts}
            | "Group" >> beam.CoGroupByKey()
            | "Join" >> beam.ParDo(JoinFn()).with_outputs(DEAD_LETTERS, main="pairs"))
        checked = (
            joined.pairs
            | "Spread" >> beam.Reshuffle()  # one problem's many attempts over many workers
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.max_batch)
            | "Verify" >> beam.ParDo(VerifyFn(self.timeout_s, self.code_concurrency))
            .with_outputs(DEAD_LETTERS, main="verdicts"))
        dead = ((joined[DEAD_LETTERS], checked[DEAD_LETTERS])
                | "DeadLetters" >> beam.Flatten())
        return {"verdicts": checked.verdicts, "dead_letters": dead}


def run(problems_uri: str, attempts_uri: str, output_uri: str,
        pipeline_args: list[str] | None = None, dead_letter_uri: str | None = None,
        timeout_s: float = 10.0, code_concurrency: int = 2, strict: bool = False) -> dict:
    """Verify the attempts in attempts_uri; write verdicts to output_uri (sorted JSONL).

    Returns counts: {"verdicts", "correct", "dead_letters"}. Dead letters are written to
    dead_letter_uri when given (JSONL), else only counted (and logged by Beam's counter).
    strict=True (the CLI): an input file without records, or two different problems with one
    id, is a RecordError before anything runs, instead of an empty run or dead letters.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    problems, attempts = read_inputs(problems_uri, attempts_uri, strict)
    options = PipelineOptions(DEFAULT_ARGS + list(pipeline_args or []))
    _default_worker_image(options)
    staging = _staging_dir(output_uri, options)
    try:
        with beam.Pipeline(options=options) as p:
            out = ({"problems": p | "ReadProblems" >> beam.Create(problems),
                    "attempts": p | "ReadAttempts" >> beam.Create(attempts)}
                   | "VerifyAttempts" >> VerifyAttempts(timeout_s, code_concurrency))
            (out["verdicts"] | "VerdictJson" >> beam.Map(lambda v: json.dumps(dataclasses.asdict(v)))
             | "WriteVerdicts" >> beam.io.WriteToText(f"{staging}/verdicts"))
            (out["dead_letters"] | "DeadJson" >> beam.Map(json.dumps)
             | "WriteDeadLetters" >> beam.io.WriteToText(f"{staging}/dead_letters"))
        verdicts = sorted((records.from_dict(Verdict, json.loads(line), output_uri, i)
                           for i, line in enumerate(_read_shards(f"{staging}/verdicts"), 1)),
                          key=lambda v: (v.problem_id, v.sample, v.turn))
        dead = sorted((json.loads(line) for line in _read_shards(f"{staging}/dead_letters")),
                      key=lambda d: (d["problem_id"], d["sample"], d["turn"]))
    finally:
        _remove(staging)
    records.write(output_uri, verdicts, cls=Verdict)   # Parquet for a .parquet name
    if dead_letter_uri:
        storage.write_text(dead_letter_uri, "".join(json.dumps(d) + "\n" for d in dead))
    return {"verdicts": len(verdicts), "correct": sum(v.correct for v in verdicts),
            "dead_letters": len(dead)}


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


def main(argv: list[str] | None = None) -> int:
    """`selfcorrect verify --problems PATH --attempts PATH --output PATH [Beam options...]`"""
    parser = argparse.ArgumentParser(
        prog="selfcorrect verify", description="Verify attempts with the Beam step. Options "
        "not listed here go to Beam, e.g. --runner DataflowRunner --project P --region R "
        "--temp_location gs://B/tmp, or --direct_num_workers 4.")
    parser.add_argument("--problems", required=True, help="Problem records (JSONL or Parquet, path or gs://)")
    parser.add_argument("--attempts", required=True, help="Attempt records (JSONL or Parquet)")
    parser.add_argument("--output", required=True, help="where to write Verdict records (JSONL; Parquet for a .parquet name)")
    parser.add_argument("--dead-letters", default=None,
                        help="where to write attempts the verifier could not judge (JSONL)")
    parser.add_argument("--timeout-s", type=float, default=10.0,
                        help="wall-clock limit per code run (default: 10)")
    parser.add_argument("--code-concurrency", type=int, default=2,
                        help="code sandboxes each Beam worker runs at once (default: 2)")
    args, beam_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        _distinct_outputs({"problems": args.problems, "attempts": args.attempts},
                          {"output": args.output, "dead letters": args.dead_letters})
        counts = run(args.problems, args.attempts, args.output, beam_args,
                     dead_letter_uri=args.dead_letters, timeout_s=args.timeout_s,
                     code_concurrency=args.code_concurrency, strict=True)
    except (ValueError, OSError) as e:  # a bad record, a missing file, a missing location
        print(f"verify: {e}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


def _distinct_outputs(inputs: dict[str, str], outputs: dict[str, str | None]) -> None:
    """ValueError when an output file is an input file or the other output."""
    given = [(k, u) for k, u in outputs.items() if u]
    for i, (label, uri) in enumerate(given):
        for other, other_uri in [*inputs.items(), *given[:i]]:
            if storage.same_location(uri, other_uri):
                raise ValueError(f"{uri}: --{label.replace(' ', '-')} is the same file as --"
                                 f"{other.replace(' ', '-')}; it would be replaced")


def _default_worker_image(options) -> None:
    """On Dataflow, workers run the verifier image (containers/verifier.Dockerfile, named by
    selfcorrect.images) unless --sdk_container_image names another: they need selfcorrect,
    math-verify and util-linux's unshare, and the Beam SDK version of this client."""
    from apache_beam.options.pipeline_options import StandardOptions, WorkerOptions

    runner = str(options.view_as(StandardOptions).runner or "")
    worker = options.view_as(WorkerOptions)
    if runner.lower() in ("dataflowrunner", "dataflow") and not worker.sdk_container_image:
        from selfcorrect.images import image

        worker.sdk_container_image = image("selfcorrect-verifier")


# --- where the Beam output shards go before being merged into one sorted file -----------------

def _staging_dir(output_uri: str, options) -> str:
    from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions

    runner = options.view_as(StandardOptions).runner
    if runner is None or str(runner).lower() in _LOCAL_RUNNERS:
        return tempfile.mkdtemp(prefix="selfcorrect-verify-")
    # remote workers need a shared location: next to a gs:// output (or Vertex's /gcs/ mount
    # of one), else under --temp_location
    name = f"verify-parts-{uuid.uuid4().hex[:12]}"
    if storage.is_gcs(output_uri):
        return f"{output_uri}.{name}"
    if output_uri.startswith("/gcs/"):
        return f"gs://{output_uri[len('/gcs/'):]}.{name}"
    temp = options.view_as(GoogleCloudOptions).temp_location
    if temp:
        return f"{temp.rstrip('/')}/{name}"
    raise ValueError(f"verify: runner {runner} needs a shared location for its output: write "
                     "the verdicts to gs://... or pass --temp_location gs://BUCKET/tmp")


def _read_shards(prefix: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    lines = []
    for match in FileSystems.match([f"{prefix}-*"]):
        for meta in sorted(match.metadata_list, key=lambda m: m.path):
            with FileSystems.open(meta.path) as f:
                lines.extend(line for line in f.read().decode("utf-8").splitlines() if line.strip())
    return lines


def _remove(staging: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.delete([staging + "/" if storage.is_gcs(staging) else staging])
    except Exception:  # noqa: BLE001 - cleanup only; never hide the real result or error
        pass
