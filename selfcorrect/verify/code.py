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
  - no network, in a new network namespace (`unshare --net --map-root-user`) when the
    kernel allows it; where it does not, the run goes on, the verifier is named
    "code-sandbox[network]" and a warning is logged once;
  - an audit hook (PEP 578) that refuses writes outside its folder, links, process
    creation, signals, sockets, ctypes and other processes' /proc files.

The limits are set by the child itself, before it compiles a byte of the completion, and
not through `preexec_fn`: Popen's preexec_fn is unsafe in a process with threads, and Beam
workers have them. The effect is the same: no untrusted code runs without the limits.

Threat model: buggy or reward-hacking model output (infinite loops, huge allocations,
`sys.exit(0)` before the tests, reading secrets from the environment, writing files), not a
determined attacker; for that, run the verifier image with a container sandbox (gVisor).
A pass needs the harness itself to report, with a per-run nonce, that check() returned.
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

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)

# The child: reads its settings (and the nonce) from stdin, limits itself, guards itself
# with an audit hook, then runs the program and reports on a file opened beforehand.
_HARNESS = r'''
import json, os, resource, sys, traceback
def main():
    cfg = json.loads(sys.stdin.readline())
    def limit(res, soft, hard):
        cur = resource.getrlimit(res)[1]
        if cur != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur), min(hard, cur)
        resource.setrlimit(res, (soft, hard))
    limit(resource.RLIMIT_CPU, cfg["cpu"], cfg["cpu"] + 1)
    limit(resource.RLIMIT_AS, cfg["mem"], cfg["mem"])
    limit(resource.RLIMIT_FSIZE, cfg["fsize"], cfg["fsize"])
    limit(resource.RLIMIT_NPROC, 0, 0)
    report = open(cfg["report"], "w")
    nonce, work = cfg.pop("nonce"), os.path.realpath(cfg["work"])
    src = open(os.path.join(work, "program.py")).read()
    def done(status, detail=""):
        report.write(json.dumps({"nonce": nonce, "status": status, "detail": detail[-2000:]}) + "\n")
        report.flush()
    try:
        code = compile(src, "program.py", "exec")
    except (SyntaxError, ValueError) as e:
        return done("syntax", f"line {getattr(e, 'lineno', '?')}: {getattr(e, 'msg', e)}")
    sys.addaudithook(_guard(work))
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as e:
        return done("exit", f"SystemExit({e.code!r})")
    except AssertionError as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "program.py"]
        where = f"line {frames[-1].lineno}: {frames[-1].line}" if frames else ""
        return done("assertion", f"{where} {e}".strip())
    except MemoryError:
        return done("memory")
    except BaseException as e:
        if isinstance(e, PermissionError) and str(e).startswith("sandbox:"):
            return done("sandbox", str(e)[len("sandbox: "):])
        if isinstance(e, OSError) and e.errno == 27:  # EFBIG: RLIMIT_FSIZE; SIGXFSZ is ignored
            return done("fsize", str(e))
        return done("exception", f"{type(e).__name__}: {e}")
    done("passed")

def _guard(work):
    deny = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
            "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
            "os.symlink", "os.link", "socket.__new__", "socket.connect", "socket.bind",
            "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata"}
    paths = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1,
             "os.truncate": 1, "os.utime": 1, "os.rename": 2, "shutil.rmtree": 1,
             "os.replace": 2}
    own = f"/proc/{os.getpid()}/"
    inside = lambda p: isinstance(p, int) or os.path.abspath(os.fsdecode(p)).startswith(work + os.sep)
    def hook(event, args):
        if event in deny:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            p = os.path.abspath(os.fsdecode(path))
            if p.startswith("/proc/") and not (p.startswith("/proc/self/") or p.startswith(own)):
                raise PermissionError(f"sandbox: reading {p} is not allowed")
            writes = (mode and any(c in mode for c in "wax+")) or (
                mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
            if writes and not inside(p):
                raise PermissionError(f"sandbox: writing {p} is not allowed")
        elif event in paths:
            for p in args[:paths[event]]:
                if not inside(p):
                    raise PermissionError(f"sandbox: {event} on {p} is not allowed")
    return hook
main()
'''


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


def build_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """Completion code + tests + `check(entry_point)`.

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
    return f"{code}\n\n{test}\n\ncheck({entry_point})\n"


def run_tests(prompt: str, completion: str, test: str, entry_point: str,
              timeout_s: float = 10.0) -> RunResult:
    """Run completion against test in the sandbox; never raises for anything the code does."""
    if not completion.strip():
        return RunResult(False, "no code found")
    if not entry_point or not test.strip():
        raise ValueError("a code problem needs `test` (defining check) and `entry_point`")
    program = build_program(prompt, completion, test, entry_point)
    return run_program(program, timeout_s)


def run_program(program: str, timeout_s: float = 10.0) -> RunResult:
    """Run a Python program in the sandbox; passed when it ran to the end without error."""
    isolated = network_isolation_available()
    root = Path(tempfile.mkdtemp(prefix="selfcorrect-sandbox-"))
    try:
        work = root / "work"
        work.mkdir()
        (work / "program.py").write_text(program, encoding="utf-8")
        nonce = secrets.token_hex(16)
        cfg = {"nonce": nonce, "work": str(work), "report": str(root / "report.jsonl"),
               "cpu": int(timeout_s) + 1, "mem": MEMORY_BYTES, "fsize": FILE_BYTES}
        cmd = [sys.executable, "-S", "-s", "-B", "-c", _HARNESS]
        if isolated:
            cmd = ["unshare", "--net", "--map-root-user", *cmd]
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
    """Whether `unshare --net --map-root-user` works here (checked once per process)."""
    try:
        ok = subprocess.run(["unshare", "--net", "--map-root-user", "true"], env={},
                            capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        log.warning("code sandbox: `unshare --net --map-root-user` is refused here; code runs "
                    "WITH network access (verdicts name the verifier %s[network])", VERIFIER)
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
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("nonce") == nonce:
            return data
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
