"""Code answers: run a completion against its HumanEval-style tests in a sandboxed process.

The program is `<completion code> + problem.test + check(<entry_point>)`, as in HumanEval.
Each run gets:
  - a separate Python process (`-S -s -B`: no site-packages, no user site, no .pyc), started
    in a fresh temporary folder that is removed afterwards;
  - an environment built from scratch (nothing of the parent's variables; PYTHONHASHSEED=0
    so set/dict order, hence the verdict, is reproducible);
  - a wall-clock timeout, after which its whole process group is killed;
  - resource limits: CPU seconds, address space, file size (which also caps stdout/stderr,
    written to files and read back truncated), and no new processes (RLIMIT_NPROC=0; the
    kernel exempts a real root user from it, so there the audit hook's refusal of fork,
    exec and spawn is what holds; threads stay allowed);
  - no network and no sight of other processes, in new network, PID and user namespaces
    (`unshare --net --pid --fork --kill-child --map-root-user`) when the kernel allows it:
    the parent, the host's processes and pidfds of them are out of reach, and whatever the
    run started dies with it; where unshare is refused, the run goes on, the verifier is
    named "code-sandbox[network]" and a warning is logged once;
  - an audit hook (PEP 578) that refuses writes outside its folder (paths and folder fds),
    links, process creation (and importing _posixsubprocess, ctypes, mmap), signals, sockets,
    other processes' /proc files and its own /proc/self/mem, fd and environ, and every way to
    reach the harness's frames or objects (sys._getframe, which typing, namedtuple and
    Enum survive, tracebacks' and generators' frames, settrace, gc.get_objects/referrers);
    what the hook calls is bound before the completion runs, so monkeypatching os,
    posixpath or builtins cannot change its answers, and paths must be str or bytes;
  - the harness itself calls `check(<entry_point>)` (run_tests), with references to the
    test's check and the candidate taken after the program ran, and it refuses results that
    are objects of a class the completion defined (an `__eq__` that always says True).

The limits are set by the child itself, before it compiles a byte of the completion, and
not through `preexec_fn`: Popen's preexec_fn is unsafe in a process with threads, and Beam
workers have them. The effect is the same: no untrusted code runs without the limits.

Threat model: buggy or reward-hacking model output (infinite loops, huge allocations,
`sys.exit(0)` before the tests, reading secrets from the environment, writing files), not a
determined attacker; for that, run the verifier image with a container sandbox (gVisor).
A pass needs the harness itself to report, with a per-run nonce, that check() returned: the
nonce is read from stdin with raw reads, the pass line is built before any untrusted byte
runs, and every function the harness uses afterwards is bound beforehand (the completion
shares the interpreter and may monkeypatch json, os or builtins); failure lines carry no
nonce. Threads are allowed (no audit event for them in 3.11); one still running when the
program ends makes the run time out.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

VERIFIER = "code-sandbox"
MEMORY_BYTES = 1 << 30       # RLIMIT_AS
FILE_BYTES = 16 << 20        # RLIMIT_FSIZE: files written, stdout and stderr included
OUTPUT_CHARS = 4_000         # how much of stdout/stderr is kept in a result

# new network, user and PID namespaces: no network; the parent and every other process of
# the host are invisible (kill, pidfd_open, /proc/<pid>), and everything the run started
# dies with it (its first process is the namespace's init)
UNSHARE = ("unshare", "--net", "--pid", "--fork", "--kill-child", "--map-root-user")
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)

# The child: selfcorrect/verify/sandbox_harness.py, run by path (-P: its folder is not on sys.path)
HARNESS = str(Path(__file__).with_name("sandbox_harness.py"))


@dataclasses.dataclass(frozen=True)
class RunResult:
    passed: bool
    reason: str               # "" when passed
    stdout: str = ""          # truncated to OUTPUT_CHARS
    stderr: str = ""
    network_isolated: bool = False


def extract_code(completion: str, entry_point: str = "") -> str:
    """The Python code in a completion: the last fenced block that defines entry_point (or
    else the last fenced block), or the whole text when there are no fences.

    >>> extract_code("Fixed:\\n```python\\ndef f(x):\\n    return x\\n```\\nDone.", "f")
    'def f(x):\\n    return x\\n'
    """
    blocks = [body for lang, body in _FENCE.findall(completion)
              if lang.lower() in ("", "python", "py", "python3")]
    if not blocks:
        return completion
    defining = [b for b in blocks if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b)]
    return (defining or blocks)[-1] if entry_point else blocks[-1]


def build_program(prompt: str, completion: str, test: str, entry_point: str,
                  call: bool = True) -> str:
    """Completion code + tests + `check(entry_point)` (without that call when call=False:
    run_tests() has the harness make it, with its own reference to `check`).

    A completion that does not define entry_point is taken as the body continuing a
    HumanEval prompt, so the prompt goes first; one that does define it gets the prompt's
    imports (e.g. `from typing import List`), which models often leave out.
    """
    code = extract_code(completion, entry_point)
    defines = re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.M)
    if _is_python(prompt):
        if not defines:
            code = prompt + code
        else:
            imports = [ln for ln in prompt.splitlines() if re.match(r"(import|from)\s+\w", ln)]
            code = "\n".join(imports + [code])
    return f"{code}\n\n{test}\n" + (f"\ncheck({entry_point})\n" if call else "")


def run_tests(prompt: str, completion: str, test: str, entry_point: str,
              timeout_s: float = 10.0) -> RunResult:
    """Run completion against test in the sandbox; never raises for anything the code does."""
    if not completion.strip():
        return RunResult(False, "no code found")
    if not entry_point or not test.strip():
        raise ValueError("a code problem needs `test` (defining check) and `entry_point`")
    program = build_program(prompt, completion, test, entry_point, call=False)
    return run_program(program, timeout_s, entry_point=entry_point)


def run_program(program: str, timeout_s: float = 10.0, entry_point: str | None = None) -> RunResult:
    """Run a Python program in the sandbox; passed when it ran to the end without error
    (and, with entry_point, when the harness's own call `check(<entry_point>)` then returned)."""
    isolated = network_isolation_available()
    root = Path(tempfile.mkdtemp(prefix="selfcorrect-sandbox-"))
    try:
        work = root / "work"
        work.mkdir()
        (work / "program.py").write_text(program, encoding="utf-8")
        nonce = secrets.token_hex(16)
        cfg = {"nonce": nonce, "work": str(work), "report": str(root / "report.jsonl"),
               "cpu": int(timeout_s) + 1, "mem": MEMORY_BYTES, "fsize": FILE_BYTES,
               "entry": entry_point}
        cmd = [sys.executable, "-S", "-s", "-B", "-P", HARNESS]
        if isolated:
            cmd = [*UNSHARE, *cmd]
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
               "HOME": str(work), "TMPDIR": str(work)}
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                    cwd=work, env=env, start_new_session=True)
            timed_out = False
            try:
                proc.stdin.write((json.dumps(cfg) + "\n").encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)
                proc.wait()
        stdout, stderr = _head(root / "stdout"), _head(root / "stderr")
        report = _report(root / "report.jsonl", nonce)
        passed, reason = _decide(report, proc.returncode, timed_out, timeout_s)
        return RunResult(passed, reason, stdout, stderr, isolated)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@functools.cache
def network_isolation_available() -> bool:
    """Whether `unshare` into new net/PID/user namespaces works here (checked once per process)."""
    try:
        ok = subprocess.run([*UNSHARE, "true"], env={},
                            capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        log.warning("code sandbox: `%s` is refused here; code runs WITH network access and "
                    "sees the host's processes (verdicts name the verifier %s[network])",
                    " ".join(UNSHARE), VERIFIER)
    return ok


def verifier_name() -> str:
    return VERIFIER if network_isolation_available() else f"{VERIFIER}[network]"


def _decide(report: dict | None, returncode: int, timed_out: bool, timeout_s: float) -> tuple[bool, str]:
    if timed_out:
        return False, f"timeout: still running after {timeout_s:g} s"
    if report is not None:
        status, detail = report["status"], report["detail"]
        if status == "passed" and returncode == 0:
            return True, ""
        reasons = {"syntax": "syntax error", "assertion": "assertion failed",
                   "exception": "exception", "memory": "resource limit: memory",
                   "fsize": "resource limit: file/output size",
                   "sandbox": "blocked by sandbox",
                   "exit": "exited before the tests finished"}
        if status in reasons:
            return False, f"{reasons[status]}: {detail}".rstrip(": ")
    if returncode < 0:
        sig = -returncode
        limits = {signal.SIGXCPU: "resource limit: CPU time", signal.SIGKILL: "resource limit: killed (CPU time or memory)",
                  signal.SIGXFSZ: "resource limit: file/output size",
                  signal.SIGSEGV: "crashed: segmentation fault (memory limit?)"}
        return False, limits.get(sig, f"crashed: signal {signal.Signals(sig).name}")
    return False, f"exited before the tests finished (exit code {returncode})"


def _report(path: Path, nonce: str) -> dict | None:
    """The harness's last word: {"status": "passed"} only when the line carrying this run's
    nonce is there (only the harness knows it); else the last failure line, if any."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    if json.dumps({"nonce": nonce, "status": "passed"}) in lines:
        return {"status": "passed", "detail": ""}
    for line in reversed(lines):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("status") not in (None, "passed") \
                and "nonce" not in data:
            return {"status": str(data["status"]), "detail": str(data.get("detail", ""))}
    return None


def _head(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(OUTPUT_CHARS).decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@functools.lru_cache(maxsize=256)
def _is_python(text: str) -> bool:
    if not text.strip():
        return False
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True
