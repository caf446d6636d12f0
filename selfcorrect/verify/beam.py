"""The Beam step: verify every attempt against its problem with the shared verifier.

    {"problems": PCollection[Problem], "attempts": PCollection[Attempt]}
        | VerifyAttempts(timeout_s, custom="mypkg.checks:exact_match")   # custom: optional
    -> {"verdicts": PCollection[Verdict], "dead_letters": PCollection[dict]}

A wrong answer, a crashing or hostile completion is a Verdict (reward 0, with its reason).
What is the verifier's own fault (verify() raising, a custom check raising or returning no
verdict, an attempt naming an unknown problem) goes to the dead letters, counted by a Beam
counter, and the pipeline goes on.

Written for every runner: DirectRunner, DaskRunner (tested here), Dataflow, Flink and Spark
(by options). It uses only one-output ParDos, GroupByKey, CoGroupByKey and Flatten: a verdict
and a dead letter travel as one PCollection of (kind, record) pairs, split by filters
(the DaskRunner hands every output of a multi-output ParDo to every consumer); batches are
groups of a GroupByKey on a hash of the attempt (not BatchElements, whose last batch of a
bundle comes out of finish_bundle, which the DaskRunner drops); and run() has one sink, files
named by their content's shard (not WriteToText, whose side inputs the DaskRunner recomputes
inside one task), so a retried bundle rewrites the same file: nothing lost, nothing doubled
when a worker dies.

`run()` reads JSONL or Parquet records (records.read tells them apart by content), runs the
pipeline (DirectRunner, one worker process per CPU the container may use by default; any
Beam option passes through, e.g. `--runner DaskRunner --dask_client_address tcp://H:8786
--temp_location /shared/tmp` or `--runner DataflowRunner --project ...`) and writes the
verdicts as JSONL sorted by (problem_id, sample, turn).

CLI: `selfcorrect verify --problems PATH --attempts PATH --output PATH [Beam options...]`
(selfcorrect.verify.cli; without Beam installed it verifies in process).
"""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import uuid
import zlib

import logging


def _not_apitools(record: logging.LogRecord) -> bool:
    """Beam warns "apitools not found" on the root logger when it first imports its BigQuery
    client; no step here uses BigQuery, so the warning only misleads (the Dataflow runner
    brings apitools with apache-beam[gcp])."""
    return not record.getMessage().startswith("apitools not found")


logging.getLogger().addFilter(_not_apitools)   # before Beam's first import
import apache_beam as beam  # noqa: E402
from apache_beam.metrics import Metrics  # noqa: E402

from selfcorrect import records, storage  # noqa: E402
from selfcorrect.records import Attempt, Verdict  # noqa: E402
from selfcorrect.verify.cli import dead_letter, join_error, read_inputs, write_results  # noqa: E402

NAMESPACE = "selfcorrect.verify"
DEAD_LETTERS = "dead_letters"
PAIR, VERDICT, DEAD = "pair", "verdict", "dead"   # kinds of the step's tagged records
# 0 workers: one per CPU; the workers' own INFO lines (dozens per run) stay out of the output
DEFAULT_ARGS = ["--direct_running_mode=multi_processing", "--direct_num_workers=0",
                "--default_sdk_harness_log_level=WARNING"]
# short runner names Beam itself does not resolve (it knows Direct, Dataflow, Flink, Spark...)
RUNNERS = {"daskrunner": "apache_beam.runners.dask.dask_runner.DaskRunner",
           "dask": "apache_beam.runners.dask.dask_runner.DaskRunner"}
_LOCAL_RUNNERS = {"directrunner", "direct", "bundlebaseddirectrunner", "switchingdirectrunner"}
_DASK = RUNNERS["dask"]


class JoinFn(beam.DoFn):
    """(problem_id, {"problems": [...], "attempts": [...]}) -> (PAIR, (Problem, Attempt)) per
    attempt, or (DEAD, dead letter) for attempts whose problem is missing (or ambiguous: two
    different problems, one id)."""

    def __init__(self):
        super().__init__()
        self.unmatched = Metrics.counter(NAMESPACE, "attempts_without_problem")

    def process(self, element):
        problem_id, grouped = element
        problems, attempts = set(grouped["problems"]), list(grouped["attempts"])
        if len(problems) == 1:
            problem = problems.pop()
            for attempt in attempts:
                yield PAIR, (problem, attempt)
            return
        why = join_error(problem_id, problems)
        for attempt in attempts:
            self.unmatched.inc()
            yield DEAD, dead_letter("join", why, attempt)


class VerifyFn(beam.DoFn):
    """(batch key, [(Problem, Attempt), ...]) -> (VERDICT, Verdict) or (DEAD, dead letter)
    each, through selfcorrect.verify.verify().

    Math attempts are checked one after the other (they hold the GIL); code attempts run
    `code_concurrency` sandboxes at a time from a thread pool, since a code verdict is mostly
    a child process's time, not this one's.
    """

    def __init__(self, timeout_s: float = 10.0, code_concurrency: int = 2, custom: str = ""):
        super().__init__()
        self.timeout_s = timeout_s
        self.code_concurrency = max(1, int(code_concurrency))
        self.custom = custom
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
        if self.custom:
            from selfcorrect.verify.custom import load_check

            load_check(self.custom)
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
            return verify_attempt(problem, attempt, timeout_s=self.timeout_s,
                                  custom=self.custom), None
        except Exception as e:  # the verifier's own failure: never the attempt's
            return None, dead_letter("verify", f"{type(e).__name__}: {e}", attempt)

    def process(self, element):
        _, batch = element
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
                yield DEAD, dead
                continue
            self.verified.inc()
            if verdict.correct:
                self.correct.inc()
            yield VERDICT, verdict


def batch_key(attempt: Attempt, batches: int) -> int:
    """Which of `batches` batches an attempt goes to: a stable hash of (problem_id, sample,
    turn), the same in every process and on every retry (Python's hash() is not)."""
    ident = f"{attempt.problem_id}\x00{attempt.sample}\x00{attempt.turn}".encode()
    return zlib.crc32(ident) % max(1, batches)


def _kind(record, kind):
    """The records of one kind out of (kind, record) pairs: a filter, not a tagged output."""
    return [record[1]] if record[0] == kind else []


class TagVerdicts(beam.PTransform):
    """{"problems", "attempts"} -> one PCollection of (VERDICT, Verdict) and (DEAD, dict).

    batches: how many groups the attempts are verified in (about attempts / 16 is good: a
    group is what a worker verifies at once, code_concurrency sandboxes at a time).
    """

    def __init__(self, timeout_s: float = 10.0, code_concurrency: int = 2, batches: int = 64,
                 custom: str = ""):
        super().__init__()
        self.timeout_s = timeout_s
        self.code_concurrency = code_concurrency
        self.batches = max(1, int(batches))
        self.custom = custom

    def expand(self, inputs):
        batches = self.batches
        problems = inputs["problems"] | "KeyProblems" >> beam.Map(lambda p: (p.id, p))
        attempts = inputs["attempts"] | "KeyAttempts" >> beam.Map(lambda a: (a.problem_id, a))
        joined = ({"problems": problems, "attempts": attempts}
                  | "Group" >> beam.CoGroupByKey()
                  | "Join" >> beam.ParDo(JoinFn()))
        verified = (
            joined
            | "Pairs" >> beam.FlatMap(_kind, PAIR)
            # spreads one problem's many attempts over many workers, and batches them
            | "KeyBatches" >> beam.Map(lambda pair: (batch_key(pair[1], batches), pair))
            | "Batch" >> beam.GroupByKey()
            | "Verify" >> beam.ParDo(VerifyFn(self.timeout_s, self.code_concurrency, self.custom)))
        unjoined = joined | "Unjoined" >> beam.Filter(lambda r: r[0] == DEAD)
        return (unjoined, verified) | "Tagged" >> beam.Flatten()


class VerifyAttempts(beam.PTransform):
    """{"problems": PCollection[Problem], "attempts": PCollection[Attempt]} ->
    {"verdicts": PCollection[Verdict], "dead_letters": PCollection[dict]}.

    code_concurrency: sandboxes a worker runs at once (default 2); batches: see TagVerdicts;
    custom: "module:function" of your check (verify.custom; selfcorrect.verify.custom).
    """

    def __init__(self, timeout_s: float = 10.0, code_concurrency: int = 2, batches: int = 64,
                 custom: str = ""):
        super().__init__()
        self.tag = TagVerdicts(timeout_s, code_concurrency, batches, custom)

    def expand(self, inputs):
        tagged = inputs | "Verify" >> self.tag
        return {"verdicts": tagged | "Verdicts" >> beam.FlatMap(_kind, VERDICT),
                DEAD_LETTERS: tagged | "DeadLetters" >> beam.FlatMap(_kind, DEAD)}


def run(problems_uri: str, attempts_uri: str, output_uri: str,
        pipeline_args: list[str] | None = None, dead_letter_uri: str | None = None,
        timeout_s: float = 10.0, code_concurrency: int = 2, strict: bool = False,
        max_batch: int = 16, custom: str = "") -> dict:
    """Verify the attempts in attempts_uri; write verdicts to output_uri (sorted JSONL).

    Returns counts: {"verdicts", "correct", "dead_letters"}. Dead letters are written to
    dead_letter_uri when given (JSONL), else only counted (and logged by Beam's counter).
    strict=True (the CLI): an input file without records, or two different problems with one
    id, is a RecordError before anything runs, instead of an empty run or dead letters.
    max_batch: attempts per batch, on average (see TagVerdicts). custom: your check
    ("module:function"), imported here first: a bad one is a ConfigError before any work.
    """
    if custom:
        from selfcorrect.verify.custom import load_check

        load_check(custom)
    problems, attempts = read_inputs(problems_uri, attempts_uri, strict)
    batches = max(1, math.ceil(len(attempts) / max(1, max_batch)))
    options = pipeline_options(DEFAULT_ARGS + list(pipeline_args or []), batches)
    staging = _staging_dir(output_uri, options)
    shards = max(1, min(64, math.ceil(len(attempts) / 5000)))
    try:
        p = beam.Pipeline(options=options)
        tagged = ({"problems": p | "ReadProblems" >> beam.Create(problems),
                   "attempts": p | "ReadAttempts" >> beam.Create(attempts)}
                  | "VerifyAttempts" >> TagVerdicts(timeout_s, code_concurrency, batches, custom))
        # the one sink, applied last (the DaskRunner computes the last transform's graph)
        (tagged | "Json" >> beam.Map(_json_line)
         | "KeyShards" >> beam.Map(lambda line: (zlib.crc32(line.encode()) % shards, line))
         | "Shards" >> beam.GroupByKey()
         | "WriteShards" >> beam.Map(_write_shard, staging))
        result = p.run()
        try:
            result.wait_until_finish()
        finally:
            _close(result)
        verdicts, dead = [], []
        for i, line in enumerate(_read_shards(staging), 1):
            kind, record = json.loads(line)
            if kind == VERDICT:
                verdicts.append(records.from_dict(Verdict, record, output_uri, i))
            else:
                dead.append(record)
    finally:
        _remove(staging)
    return write_results(output_uri, verdicts, dead, dead_letter_uri)


def pipeline_args(v, extra: list[str] | tuple = ()) -> list[str]:
    """The Beam options of a VerifyConfig (runner, DirectRunner workers and mode), then
    `extra` (later options win): what the verify_attempts component and `selfcorrect
    evaluate` pass to run()."""
    return [f"--runner={v.runner}", f"--direct_num_workers={v.direct_num_workers}",
            f"--direct_running_mode={v.direct_running_mode}", *extra]


def pipeline_options(args: list[str], partitions: int = 0):
    """PipelineOptions from args, completed for this step:

    - a short runner name Beam does not resolve (DaskRunner) becomes its class path;
    - --direct_num_workers=0 becomes the CPUs this container may use (its cgroup CPU quota,
      selfcorrect.verify.cpus), not the node's core count Beam would take;
    - on Dask, without --dask_npartitions/--dask_partition_size: 4 partitions per worker
      thread of the cluster (asked of its scheduler; on a LocalCluster, per usable CPU), at
      most `partitions`. Beam's default puts up to 128 elements in one partition (a single
      task for a small step); one per batch is worse: Dask's task-based shuffle (three
      GroupByKeys here) costs partitions x min(partitions, 32) tasks each, which grew the
      step's fixed cost from 6 s at 100 attempts to over a minute at 1,000 on one worker;
    - on Dataflow, workers run the verifier image unless --sdk_container_image names another.
    """
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    from selfcorrect.verify import cpus

    options = PipelineOptions(args)
    standard = options.view_as(StandardOptions)
    runner = str(standard.runner or "")
    standard.runner = runner = RUNNERS.get(runner.lower(), runner) or None
    direct = options.view_as(DirectOptions)
    if not direct.direct_num_workers:
        direct.direct_num_workers = cpus.available()
    if runner == _DASK and partitions > 0:
        from apache_beam.runners.dask.dask_runner import DaskOptions

        dask = options.view_as(DaskOptions)
        if not dask.npartitions and not dask.partition_size:
            dask.npartitions = min(partitions, 4 * _dask_threads(dask))
    _default_worker_image(options)
    return options


def main(argv: list[str] | None = None) -> int:
    """`selfcorrect verify` on Beam (selfcorrect.verify.cli has the options)."""
    from selfcorrect.verify import cli

    return cli.main(argv, in_process=False)


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


# --- where the verdicts go before being merged into one sorted file -----------------------------

def _json_line(record) -> str:
    kind, value = record
    return json.dumps([kind, dataclasses.asdict(value) if kind == VERDICT else value],
                      sort_keys=True)


def _write_shard(shard, staging: str) -> int:
    """Write one shard's lines, sorted, to staging/part-NNNNN.jsonl: the name and content
    depend only on the records, so a retried or doubled bundle rewrites the same file.
    Written under a temporary name and renamed, so a writer killed midway leaves no part."""
    from apache_beam.io.filesystems import FileSystems

    key, lines = shard
    lines = sorted(lines)
    final = f"{staging}/part-{key:05d}.jsonl"
    temp = f"{final}.tmp-{uuid.uuid4().hex[:12]}"
    with FileSystems.create(temp) as f:
        f.write("".join(line + "\n" for line in lines).encode("utf-8"))
    try:
        FileSystems.delete([final])       # a retry's rewrite: the same content
    except Exception:  # noqa: BLE001 - BeamIOError: not there, as usual
        pass
    FileSystems.rename([temp], [final])
    return len(lines)


def _close(result) -> None:
    """Close the DaskRunner's client (it leaves it open); other runners have none."""
    client = getattr(result, "client", None)
    if client is not None:
        client.close()


def _staging_dir(output_uri: str, options) -> str:
    from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions

    runner = str(options.view_as(StandardOptions).runner or "")
    if not runner or runner.lower() in _LOCAL_RUNNERS or (runner == _DASK and _dask_local(options)):
        return tempfile.mkdtemp(prefix="selfcorrect-verify-")
    # remote workers need a shared location: next to a gs:// output (or Vertex's /gcs/ mount
    # of one), else under --temp_location (on Dask a local path will do when the scheduler
    # and workers share this filesystem: one machine, or an NFS/ReadWriteMany volume)
    name = f"verify-parts-{uuid.uuid4().hex[:12]}"
    if storage.is_gcs(output_uri):
        return f"{output_uri}.{name}"
    if output_uri.startswith("/gcs/"):
        return f"gs://{output_uri[len('/gcs/'):]}.{name}"
    temp = options.view_as(GoogleCloudOptions).temp_location
    if temp:
        return f"{temp.rstrip('/')}/{name}"
    if runner == _DASK:
        raise ValueError("verify: the Dask workers need a location they share with this "
                         "process for their output: pass --temp_location PATH (a local path "
                         "when the workers share this filesystem: one machine, or a volume "
                         "mounted at the same path; else gs://BUCKET/tmp), or write the "
                         "verdicts to gs://...")
    raise ValueError(f"verify: runner {runner} needs a shared location for its output: write "
                     "the verdicts to gs://... or pass --temp_location gs://BUCKET/tmp")


def _dask_threads(dask) -> int:
    """Worker threads of the Dask cluster the options name (the usable CPUs for the
    LocalCluster Beam starts without one); 1 when the scheduler does not answer in 30 s
    (the DaskRunner then reports the connection error itself)."""
    from selfcorrect.verify import cpus

    if not dask.address and not dask.scheduler_file:
        return cpus.available()
    from distributed import Client

    try:
        with Client(dask.address, scheduler_file=dask.scheduler_file, timeout=dask.timeout or 30,
                    set_as_default=False) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
            return max(1, sum(w.get("nthreads", 1) for w in workers))
    except (OSError, TimeoutError):
        return 1


def _dask_local(options) -> bool:
    """DaskRunner without a scheduler address or file: Beam starts a LocalCluster here."""
    from apache_beam.runners.dask.dask_runner import DaskOptions

    dask = options.view_as(DaskOptions)
    return not dask.address and not dask.scheduler_file


def _read_shards(staging: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    lines = []
    for match in FileSystems.match([f"{staging}/part-*.jsonl"]):
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
