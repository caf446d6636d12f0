"""The Beam step on a real Dask cluster: a scheduler and two workers, each its own process on
127.0.0.1 (selfcorrect.verify.dask_cluster), through Beam's DaskRunner.

- The same verdicts and dead letters as the DirectRunner, byte for byte, on math and code
  attempts (hostile ones included) and on attempts the verifier cannot judge.
- A worker killed while it runs sandboxes: the step still ends with every verdict once.
"""
import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("distributed")

from selfcorrect.records import Attempt, Problem, Verdict, read, write_jsonl  # noqa: E402
from selfcorrect.verify import beam as vbeam  # noqa: E402
from selfcorrect.verify import code  # noqa: E402
from selfcorrect.verify.dask_cluster import local_cluster  # noqa: E402

MARKER = Path("/tmp/selfcorrect-dask-test-marker")
CODE = Problem(id="code-inc", task="code", prompt="def inc(x):\n    '''x plus one'''\n",
               test="def check(f):\n    assert f(1) == 2\n    assert f(-1) == 0\n", entry_point="inc")
MATH = [Problem(id=f"arith-{a}*3", task="math", prompt=f"What is {a} * 3?", answer=str(3 * a))
        for a in range(1, 7)]
CHESS = Problem(id="chess-1", task="chess", prompt="?")   # no verifier: a dead letter
HOSTILE = {   # completion -> the reason it fails with (tests/test_verify_security.py has more)
    "import os\nos._exit(0)\n": "exited before the tests finished",
    "def inc(x):\n    while True:\n        pass\n": "timeout",
    "import subprocess\ndef inc(x):\n    subprocess.run(['true'])\n    return x + 1\n":
        "blocked by sandbox: importing _posixsubprocess",
    f"def inc(x):\n    open('{MARKER}', 'w').write('x')\n    return x + 1\n":
        f"blocked by sandbox: writing {MARKER}",
    "def inc(x):\n    b = bytearray(2 ** 34)\n    return x + 1\n": "resource limit: memory",
    "class A:\n    def __eq__(self, o):\n        return True\ndef inc(x):\n    return A()\n":
        "blocked by sandbox: the result is an object of A",
}


def final(x) -> str:
    return f"Final Answer: The final answer is ${x}$. I hope it is correct."


def workload() -> tuple[list[Problem], list[Attempt]]:
    attempts = [Attempt(problem_id=p.id, sample=s, turn=t, model="m",
                        completion=final(int(p.answer) + (t == 1)))   # turn 1 wrong, 2 right
                for p in MATH for s in range(2) for t in (1, 2)]
    attempts += [Attempt(problem_id=CODE.id, sample=i, turn=1, completion=c, model="m")
                 for i, c in enumerate(HOSTILE)]
    attempts += [Attempt(problem_id=CODE.id, sample=i, turn=2, completion="    return x + 1\n",
                         model="m") for i in range(len(HOSTILE))]
    attempts += [Attempt(problem_id="chess-1", sample=0, turn=1, completion="e4", model="m"),
                 Attempt(problem_id="nowhere", sample=0, turn=1, completion=final(1), model="m")]
    return [*MATH, CODE, CHESS], attempts


def _inputs(tmp_path, problems, attempts) -> tuple[str, str]:
    write_jsonl(str(tmp_path / "problems.jsonl"), problems)
    write_jsonl(str(tmp_path / "attempts.jsonl"), attempts[::-1])
    return str(tmp_path / "problems.jsonl"), str(tmp_path / "attempts.jsonl")


def _sorted_lines(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines())


@pytest.mark.slow
def test_direct_and_dask_give_the_same_verdicts_and_dead_letters(tmp_path, capsys):
    problems, attempts = workload()
    p, a = _inputs(tmp_path, problems, attempts)
    MARKER.unlink(missing_ok=True)
    direct = vbeam.run(p, a, str(tmp_path / "direct.jsonl"), ["--direct_num_workers=2"],
                       dead_letter_uri=str(tmp_path / "direct-dead.jsonl"), timeout_s=3)
    with local_cluster(workers=2) as cluster:
        # the CLI, as a user types it: the runner's short name, a local shared temp location
        rc = vbeam.main(["--problems", p, "--attempts", a, "--output", str(tmp_path / "dask.jsonl"),
                         "--dead-letters", str(tmp_path / "dask-dead.jsonl"), "--timeout-s", "3",
                         "--runner", "DaskRunner", "--dask_client_address", cluster.address,
                         "--temp_location", str(tmp_path / "shared")])
    assert rc == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == direct
    n = len(attempts)
    assert direct == {"verdicts": n - 2, "correct": len(MATH) * 2 + len(HOSTILE), "dead_letters": 2}
    assert _sorted_lines(tmp_path / "dask.jsonl") == _sorted_lines(tmp_path / "direct.jsonl")
    assert _sorted_lines(tmp_path / "dask-dead.jsonl") == _sorted_lines(tmp_path / "direct-dead.jsonl")
    verdicts = read(str(tmp_path / "dask.jsonl"), Verdict)
    code = {(v.sample, v.turn): v for v in verdicts if v.problem_id == CODE.id}
    for i, why in enumerate(HOSTILE.values()):
        assert not code[i, 1].correct and code[i, 1].reason.startswith(why), code[i, 1]
        assert code[i, 2].correct, code[i, 2]
    assert not MARKER.exists()
    dead = [json.loads(line) for line in (tmp_path / "dask-dead.jsonl").read_text().splitlines()]
    assert [(d["stage"], d["problem_id"]) for d in dead] == [("verify", "chess-1"), ("join", "nowhere")]
    assert list((tmp_path / "shared").iterdir()) == []     # the parts were removed


@pytest.mark.slow
def test_a_worker_killed_mid_step_loses_and_doubles_no_verdict(tmp_path):
    slow = "import time\ndef inc(x):\n    time.sleep(0.3)\n    return x + 1\n"
    attempts = [Attempt(problem_id=CODE.id, sample=i, turn=t, completion=slow, model="m")
                for i in range(12) for t in (1, 2)]
    attempts += [Attempt(problem_id=p.id, sample=0, turn=2, completion=final(p.answer), model="m")
                 for p in MATH]
    p, a = _inputs(tmp_path, [*MATH, CODE], attempts)
    with local_cluster(workers=2) as cluster:
        out, errors = {}, []

        def step():
            try:
                out["counts"] = vbeam.run(
                    p, a, str(tmp_path / "verdicts.jsonl"), timeout_s=10, max_batch=4,
                    pipeline_args=["--runner=DaskRunner", f"--dask_client_address={cluster.address}",
                                   f"--temp_location={tmp_path / 'shared'}"])
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                errors.append(e)

        runner = threading.Thread(target=step, daemon=True)
        runner.start()
        victim = _first_worker_running_a_sandbox(cluster, runner, timeout_s=120)
        cluster.stop_worker(victim)
        runner.join(timeout=300)
        assert not runner.is_alive(), "the step did not finish after losing a worker"
        assert cluster.workers[victim].poll() is not None
        assert sum(w.poll() is None for w in cluster.workers.values()) == 1
    assert not errors, errors
    assert out["counts"] == {"verdicts": len(attempts), "correct": len(attempts), "dead_letters": 0}
    verdicts = read(str(tmp_path / "verdicts.jsonl"), Verdict)
    keys = [(v.problem_id, v.sample, v.turn) for v in verdicts]
    assert sorted(keys) == sorted((x.problem_id, x.sample, x.turn) for x in attempts)  # each once


def _first_worker_running_a_sandbox(cluster, runner, timeout_s: float) -> str:
    """The address of a worker with a sandbox child running: it is inside a Verify task."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and runner.is_alive():
        for address, proc in cluster.workers.items():
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            if any(code.HARNESS in (c.cmdline() or []) for c in _alive(children)):
                return address
        time.sleep(0.05)
    raise AssertionError("no worker started a sandbox (the step ended or never began)")


def _alive(procs):
    for proc in procs:
        try:
            proc.cmdline()
            yield proc
        except psutil.Error:
            continue


def test_the_local_cluster_leaves_no_process_behind():
    from apache_beam.runners.dask.dask_runner import DaskOptions

    with local_cluster(workers=1) as cluster:
        procs = [cluster.scheduler, *cluster.workers.values()]
        assert all(p.poll() is None for p in procs)
        options = vbeam.pipeline_options(["--runner=DaskRunner",
                                          f"--dask_client_address={cluster.address}"], 100)
        assert options.view_as(DaskOptions).npartitions == 4    # 4 per worker thread
    assert all(p.poll() is not None for p in procs)
    assert not any(psutil.pid_exists(p.pid) and psutil.Process(p.pid).status() != "zombie"
                   for p in procs)
