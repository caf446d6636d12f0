import json
import os
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from selfcorrect.records import Attempt, Problem, Verdict, read, write_jsonl
from selfcorrect.verify import beam as vbeam


def final(x) -> str:
    return f"Final Answer: The final answer is ${x}$. I hope it is correct."


PROBLEMS = [Problem(id=f"arith-{a}+{a}", task="math", prompt=f"What is {a} + {a}?", answer=str(2 * a))
            for a in range(1, 4)]
CODE = Problem(id="code-1", task="code", prompt="def inc(x):\n    '''x plus one'''\n",
               test="def check(f):\n    assert f(1) == 2\n    assert f(-1) == 0\n", entry_point="inc")


def attempts() -> list[Attempt]:
    out = []
    for p in PROBLEMS:
        a = int(p.answer)
        out.append(Attempt(problem_id=p.id, sample=0, turn=1, completion=final(a + 1), model="m"))
        out.append(Attempt(problem_id=p.id, sample=0, turn=2, completion=final(a), model="m"))
    out.append(Attempt(problem_id="code-1", sample=0, turn=1, completion="    return x + 1\n", model="m"))
    out.append(Attempt(problem_id="code-1", sample=1, turn=1, model="m",
                       completion="import os\nos._exit(0)\n"))  # hostile: must not pass
    out.append(Attempt(problem_id="nowhere", sample=0, turn=1, completion=final(1), model="m"))
    return out


def expected() -> list[Verdict]:
    out = []
    for p in PROBLEMS:
        a = int(p.answer)
        out.append(Verdict(p.id, 0, 1, False, 0.0, f"wrong answer: got '{a + 1}', expected '{a}'",
                           "math-verify"))
        out.append(Verdict(p.id, 0, 2, True, 1.0, "", "math-verify"))
    return out


def test_verify_attempts_transform():
    pipeline = BeamTestPipeline()
    with pipeline as p:
        out = ({"problems": p | "P" >> beam.Create(PROBLEMS + [CODE]),
                "attempts": p | "A" >> beam.Create(attempts())}
               | vbeam.VerifyAttempts(timeout_s=5))
        math_verdicts = out["verdicts"] | beam.Filter(lambda v: v.verifier == "math-verify")
        code_verdicts = (out["verdicts"] | beam.Filter(lambda v: v.problem_id == "code-1")
                         | beam.Map(lambda v: (v.sample, v.correct, v.reason.split(" (")[0])))
        assert_that(math_verdicts, equal_to(expected()), label="math")
        assert_that(code_verdicts, equal_to([(0, True, ""), (1, False, "exited before the tests finished")]),
                    label="code")
        assert_that(out["dead_letters"] | beam.Map(lambda d: (d["stage"], d["problem_id"], d["error"])),
                    equal_to([("join", "nowhere", "no problem with id 'nowhere'")]), label="dead")
    counters = {c.key.metric.name: c.committed for c in
                pipeline.result.metrics().query(MetricsFilter().with_namespace(vbeam.NAMESPACE))["counters"]}
    assert counters == {"verdicts": 8, "correct": 4, "attempts_without_problem": 1}


def test_a_verifier_failure_goes_to_dead_letters_and_the_rest_goes_on():
    bad = Problem(id="chess-1", task="chess", prompt="?")   # verify() raises: no verifier
    with BeamTestPipeline() as p:
        out = ({"problems": p | "P" >> beam.Create([bad, PROBLEMS[0]]),
                "attempts": p | "A" >> beam.Create([
                    Attempt(problem_id="chess-1", sample=0, turn=1, completion="e4", model="m"),
                    Attempt(problem_id=PROBLEMS[0].id, sample=0, turn=1, completion=final(2), model="m")])}
               | vbeam.VerifyAttempts())
        assert_that(out["verdicts"] | beam.Map(lambda v: (v.problem_id, v.correct)),
                    equal_to([(PROBLEMS[0].id, True)]), label="verdicts")
        assert_that(out["dead_letters"] | beam.Map(lambda d: (d["stage"], d["error"].split(":")[0])),
                    equal_to([("verify", "ValueError")]), label="dead")


def test_run_with_two_worker_processes(tmp_path):
    write_jsonl(str(tmp_path / "problems.jsonl"), PROBLEMS + [CODE])
    shuffled = attempts()[::-1]
    write_jsonl(str(tmp_path / "attempts.jsonl"), shuffled)
    counts = vbeam.run(str(tmp_path / "problems.jsonl"), str(tmp_path / "attempts.jsonl"),
                       str(tmp_path / "out" / "verdicts.jsonl"),
                       pipeline_args=["--direct_num_workers=2"],
                       dead_letter_uri=str(tmp_path / "out" / "dead.jsonl"), timeout_s=5)
    assert counts == {"verdicts": 8, "correct": 4, "dead_letters": 1}
    verdicts = read(str(tmp_path / "out" / "verdicts.jsonl"), Verdict)
    keys = [(v.problem_id, v.sample, v.turn) for v in verdicts]
    assert keys == sorted(keys) and len(keys) == 8
    assert [v for v in verdicts if v.verifier == "math-verify"] == expected()
    dead = [json.loads(line) for line in (tmp_path / "out" / "dead.jsonl").read_text().splitlines()]
    assert [(d["problem_id"], d["attempt"]["completion"]) for d in dead] == [("nowhere", final(1))]
    # nothing but the two outputs is left behind
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dead.jsonl", "verdicts.jsonl"]


def test_cli_passes_unknown_options_to_beam(tmp_path, capsys):
    write_jsonl(str(tmp_path / "problems.jsonl"), PROBLEMS)
    write_jsonl(str(tmp_path / "attempts.jsonl"), [a for a in attempts() if a.problem_id.startswith("arith")])
    rc = vbeam.main(["--problems", str(tmp_path / "problems.jsonl"),
                     "--attempts", str(tmp_path / "attempts.jsonl"),
                     "--output", str(tmp_path / "verdicts.jsonl"),
                     "--direct_running_mode", "in_memory", "--direct_num_workers", "1"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "verdicts": 6, "correct": 3, "dead_letters": 0}
    assert read(str(tmp_path / "verdicts.jsonl"), Verdict) == expected()


def test_cli_reports_a_bad_record(tmp_path, capsys):
    (tmp_path / "problems.jsonl").write_text('{"id": "p", "task": "math"}\n')
    (tmp_path / "attempts.jsonl").write_text("")
    rc = vbeam.main(["--problems", str(tmp_path / "problems.jsonl"), "--attempts",
                     str(tmp_path / "attempts.jsonl"), "--output", str(tmp_path / "v.jsonl")])
    assert rc == 2 and "field 'prompt': missing" in capsys.readouterr().err


def test_a_remote_runner_needs_a_shared_location():
    from apache_beam.options.pipeline_options import PipelineOptions

    with pytest.raises(ValueError, match="temp_location"):
        vbeam._staging_dir("/local/verdicts.jsonl", PipelineOptions(["--runner=DataflowRunner"]))
    assert vbeam._staging_dir("gs://b/run/verdicts.jsonl", PipelineOptions(
        ["--runner=DataflowRunner"])).startswith("gs://b/run/verdicts.jsonl.verify-parts-")
    assert vbeam._staging_dir("/gcs/b/v.jsonl", PipelineOptions(
        ["--runner", "DataflowRunner"])).startswith("gs://b/v.jsonl.verify-parts-")


def test_dataflow_workers_get_the_verifier_image_unless_told_otherwise():
    from apache_beam.options.pipeline_options import PipelineOptions, WorkerOptions

    from selfcorrect.images import image

    def chosen(args):
        options = PipelineOptions(args)
        vbeam._default_worker_image(options)
        return options.view_as(WorkerOptions).sdk_container_image

    assert chosen(["--runner=DataflowRunner"]) == image("selfcorrect-verifier")
    assert not image("selfcorrect-verifier").endswith(":latest")
    assert chosen(["--runner=DataflowRunner", "--sdk_container_image=r/x:1"]) == "r/x:1"
    assert chosen([]) is None and chosen(["--runner=FlinkRunner"]) is None


# --- options: the runner's short name, workers by CPU quota, the Dask defaults -------------

def test_short_runner_names_and_workers_follow_the_cpu_quota(monkeypatch):
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from selfcorrect.verify import cpus

    monkeypatch.setattr(cpus, "available", lambda: 3)
    options = vbeam.pipeline_options(vbeam.DEFAULT_ARGS + ["--runner", "DaskRunner"], partitions=5)
    assert options.view_as(StandardOptions).runner == "apache_beam.runners.dask.dask_runner.DaskRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 3           # 0: per usable CPU
    assert vbeam.pipeline_options(["--direct_num_workers=2"]).view_as(
        DirectOptions).direct_num_workers == 2                               # a number stays
    assert vbeam.pipeline_options(["--runner=DataflowRunner"]).view_as(
        StandardOptions).runner == "DataflowRunner"                          # Beam's own names stay


def test_dask_partitions_default_to_four_per_worker_thread_unless_given(monkeypatch):
    """(No scheduler named: Beam's LocalCluster, one worker thread per usable CPU; a named
    scheduler is asked for its threads, see tests/test_verify_dask.py.)"""
    pytest.importorskip("distributed")
    from apache_beam.runners.dask.dask_runner import DaskOptions

    from selfcorrect.verify import cpus

    monkeypatch.setattr(cpus, "available", lambda: 3)

    def dask(args, batches=100):
        opts = vbeam.pipeline_options(["--runner=DaskRunner", *args], partitions=batches)
        return opts.view_as(DaskOptions).npartitions, opts.view_as(DaskOptions).partition_size

    assert dask([]) == (12, None)
    assert dask([], batches=5) == (5, None)          # never more partitions than batches
    assert dask(["--dask_npartitions=3"]) == (3, None)
    assert dask(["--dask_partition_size=10"]) == (None, 10)


def test_dask_needs_a_shared_location_which_may_be_a_local_path(tmp_path):
    pytest.importorskip("distributed")
    remote = ["--runner=DaskRunner", "--dask_client_address=tcp://10.0.0.1:8786"]
    with pytest.raises(ValueError, match="--temp_location PATH .*local path"):
        vbeam._staging_dir(str(tmp_path / "v.jsonl"), vbeam.pipeline_options(remote))
    shared = vbeam._staging_dir(str(tmp_path / "v.jsonl"), vbeam.pipeline_options(
        remote + [f"--temp_location={tmp_path}/shared"]))
    assert shared.startswith(f"{tmp_path}/shared/verify-parts-")
    # no scheduler named: Beam starts a LocalCluster on this machine, a local folder will do
    local = vbeam._staging_dir("/x/v.jsonl", vbeam.pipeline_options(["--runner=DaskRunner"]))
    assert Path(local).is_dir()
    Path(local).rmdir()


def test_one_argument_list_for_the_component_and_evaluate():
    from selfcorrect.config import VerifyConfig

    v = VerifyConfig(runner="DaskRunner", direct_num_workers=0)
    assert vbeam.pipeline_args(v, ["--dask_client_address=tcp://h:8786"]) == [
        "--runner=DaskRunner", "--direct_num_workers=0", "--direct_running_mode=multi_processing",
        "--dask_client_address=tcp://h:8786"]


def test_a_shard_rewritten_by_a_retry_holds_its_lines_once(tmp_path):
    lines = ['["verdict", {"a": 2}]', '["verdict", {"a": 1}]']
    for _ in range(2):   # a bundle retried after its worker died: the same file again
        assert vbeam._write_shard((3, lines), str(tmp_path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["part-00003.jsonl"]
    assert vbeam._read_shards(str(tmp_path)) == sorted(lines)


@pytest.mark.parametrize("files, cores, want", [
    ({"cpu.max": "max 100000\n"}, 8, 8),                        # v2, no limit
    ({"cpu.max": "150000 100000\n"}, 8, 2),                     # v2, 1.5 CPUs -> 2 workers
    ({"cpu.max": "50000 100000\n"}, 8, 1),                      # v2, half a CPU -> 1
    ({"cpu.max": "800000 100000\n"}, 4, 4),                     # quota above the cores
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 6, 6),   # v1, none
    ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 16, 3),
    ({"cpu,cpuacct/cpu.cfs_quota_us": "200000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 16, 2),
    ({"cpu.max": "garbage"}, 5, 5),                             # unreadable: the cores
    ({}, 5, 5),                                                 # no cgroup files at all
])
def test_cpu_count_follows_the_cgroup_quota(tmp_path, files, cores, want):
    from selfcorrect.verify import cpus

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpus.available(tmp_path, cores=cores, proc_cgroup=tmp_path / "no-such-file") == want


def test_cpu_quota_of_this_process_cgroup_and_those_above_it(tmp_path):
    """cgroup v2 without a cgroup namespace: the process's own folder (named in
    /proc/self/cgroup) and its parents count; the smallest quota holds."""
    from selfcorrect.verify import cpus

    (tmp_path / "kubepods/pod1/ctr").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "kubepods/pod1/cpu.max").write_text("300000 100000\n")      # the pod: 3
    (tmp_path / "kubepods/pod1/ctr/cpu.max").write_text("max 100000\n")     # the container: none
    (tmp_path / "cgroup").write_text("0::/kubepods/pod1/ctr\n")
    assert cpus.available(tmp_path, cores=32, proc_cgroup=tmp_path / "cgroup") == 3
    (tmp_path / "kubepods/pod1/ctr/cpu.max").write_text("100000 100000\n")  # tighter: 1
    assert cpus.available(tmp_path, cores=32, proc_cgroup=tmp_path / "cgroup") == 1


def test_cpu_count_defaults_to_this_process_affinity(tmp_path):
    from selfcorrect.verify import cpus

    assert cpus.available(tmp_path, proc_cgroup=tmp_path / "x") == len(os.sched_getaffinity(0))


def test_cpus_doctest():
    import doctest

    from selfcorrect.verify import cpus

    result = doctest.testmod(cpus)
    assert result.attempted > 0 and result.failed == 0
