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

# The child: reads its settings (and the nonce) from stdin, limits itself, guards itself
# with an audit hook, then runs the program and reports on a file opened beforehand.
_HARNESS = r'''
import json, os, resource, sys
def main():
    line = b""
    while not line.endswith(b"\n"):          # raw reads: no buffered copy of the nonce is left
        chunk = os.read(0, 65536)
        if not chunk:
            break
        line += chunk
    cfg = json.loads(line)
    del line, chunk
    def limit(res, soft, hard):
        cur = resource.getrlimit(res)[1]
        if cur != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur), min(hard, cur)
        resource.setrlimit(res, (soft, hard))
    limit(resource.RLIMIT_CPU, cfg["cpu"], cfg["cpu"] + 1)
    limit(resource.RLIMIT_AS, cfg["mem"], cfg["mem"])
    limit(resource.RLIMIT_FSIZE, cfg["fsize"], cfg["fsize"])
    limit(resource.RLIMIT_NPROC, 0, 0)
    limit(resource.RLIMIT_CORE, 0, 0)
    # Everything the verdict depends on is bound now, before any untrusted byte runs: the
    # completion shares this interpreter and may monkeypatch json, os, builtins...
    fd, write, dumps = os.open(cfg["report"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), os.write, json.JSONEncoder().encode
    passed = (dumps({"nonce": cfg.pop("nonce"), "status": "passed"}) + "\n").encode()
    work, entry = os.path.realpath(cfg["work"]), cfg.get("entry")
    src = open(os.path.join(work, "program.py")).read()
    lines = src.splitlines()
    isinstance_, type_, str_, len_, BaseException_ = isinstance, type, str, len, BaseException
    SystemExit_, AssertionError_, MemoryError_, PermissionError_, OSError_, ValueError_ = (
        SystemExit, AssertionError, MemoryError, PermissionError, OSError, ValueError)
    def done(status, detail=""):   # failures carry no nonce: only `passed` can make a pass
        try:
            write(fd, (dumps({"status": status, "detail": str_(detail)[-2000:]}) + "\n").encode())
        except BaseException_:
            pass
    try:
        code = compile(src, "program.py", "exec")
    except (SyntaxError, ValueError) as e:
        return done("syntax", f"line {getattr(e, 'lineno', '?')}: {getattr(e, 'msg', e)}")
    guard = _guard(work)
    sys.addaudithook(guard)
    g = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(code, g)
        if entry is not None:                 # the harness calls check(), with its own reference
            check, candidate = g["check"], g[entry]
            check(_plain_results(candidate))
    except SystemExit_ as e:
        return done("exit", f"SystemExit({e.code!r})")
    except AssertionError_ as e:
        tb = e.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        n = tb.tb_lineno
        where = f"line {n}: {lines[n - 1].strip()}" if 0 < n <= len_(lines) else ""
        return done("assertion", f"{where} {e}".strip())
    except MemoryError_:
        return done("memory")
    except BaseException_ as e:
        if isinstance_(e, (PermissionError_, ValueError_)) and str_(e).startswith("sandbox:"):
            return done("sandbox", str_(e)[len_("sandbox: "):])
        if isinstance_(e, OSError_) and e.errno == 27:  # EFBIG: RLIMIT_FSIZE; SIGXFSZ is ignored
            return done("fsize", str_(e))
        return done("exception", f"{type_(e).__name__}: {e}")
    write(fd, passed)

def _plain_results(fn, type=type, isinstance=isinstance, getattr=getattr, vars=vars, any=any,
                   list=list, dict=dict, tuple=tuple, set=set, frozenset=frozenset,
                   PermissionError=PermissionError):
    # HumanEval answers are plain values; an object of a class the completion defined (say
    # one whose __eq__ is always True) is a reward hack, not an answer. Builtins are bound
    # here, before the completion runs (it may replace them).
    seen = set()
    def plain(x, depth=0):
        cls0 = type(x)
        if cls0 not in seen:
            for cls in cls0.__mro__:
                if cls.__module__ == "__main__" or any(
                        getattr(getattr(f, "__code__", None), "co_filename", "") == "program.py"
                        for f in list(vars(cls).values())):
                    raise PermissionError(f"sandbox: the result is an object of {cls0.__name__}, "
                                          "a class the completion defined")
            seen.add(cls0)
        if depth < 3 and isinstance(x, (list, tuple, set, frozenset)):
            for item in list(x)[:1000]:
                plain(item, depth + 1)
        elif depth < 3 and isinstance(x, dict):
            for k, v in list(x.items())[:1000]:
                plain(k, depth + 1)
                plain(v, depth + 1)
    def call(*args, **kwargs):
        result = fn(*args, **kwargs)
        plain(result)
        return result
    return call

def _guard(work, isinstance=isinstance, any=any, type=type, str=str, bytes=bytes, int=int,
           PermissionError=PermissionError, ValueError=ValueError, OSError=OSError):
    # Every function the hook calls is bound now: the completion may monkeypatch os,
    # posixpath or builtins (say os.getcwd, to make a path outside look inside).
    import stat
    getcwd, stat_, S_ISDIR = os.getcwd, os.stat, stat.S_ISDIR
    deny = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
            "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
            "os.symlink", "os.link", "socket.__new__", "socket.connect", "socket.bind",
            "socket.sendto", "socket.getaddrinfo", "ctypes.dlopen", "ctypes.dlsym",
            "ctypes.cdata", "ctypes.call_function", "sys._current_frames",
            "sys.settrace", "sys.setprofile", "gc.get_objects", "gc.get_referrers",
            "gc.get_referents", "mmap.__new__", "os.setxattr",
            "os.removexattr", "os.chflags", "os.lchflags", "os.putenv", "os.unsetenv",
            "code.__new__", "function.__new__", "resource.setrlimit", "resource.prlimit"}
    deny_imports = {"_posixsubprocess", "_ctypes", "ctypes", "_xxsubinterpreters", "mmap"}
    frames = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "gi_code"}
    paths = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1,
             "os.truncate": 1, "os.utime": 1, "os.rename": 2, "shutil.rmtree": 1,
             "os.replace": 2}
    dir_fd_at = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 2, "os.chmod": 2, "os.chown": 3,
                 "os.utime": 3, "os.rename": 2}
    O_W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    prefix = work + "/"
    def absolute(path):
        # only str and bytes: a path object could answer differently when open() asks it again
        t = type(path)
        if t is bytes:
            path = path.decode("utf-8", "surrogateescape")
        elif t is not str:
            raise PermissionError(f"sandbox: a path of type {t.__name__} is not allowed here")
        if not path.startswith("/"):
            path = getcwd() + "/" + path
        parts = []
        for part in path.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part and part != ".":
                parts.append(part)
        return "/" + "/".join(parts)
    inside = lambda p: type(p) is int or absolute(p).startswith(prefix)
    def hook(event, args):
        if event in deny:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "sys._getframe":
            # a ValueError: typing, namedtuple and Enum, which read a module name with it,
            # catch that and fall back to a default
            raise ValueError("sandbox: sys._getframe is not allowed")
        if event == "import" and args[0] in deny_imports:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "object.__getattr__" and args[1] in frames:
            raise PermissionError(f"sandbox: reading .{args[1]} is not allowed")
        if event == "open":
            path, mode, flags = args
            if type(path) is int:
                return
            p = absolute(path)
            if p.startswith("/proc/"):
                if not p.startswith("/proc/self/"):
                    raise PermissionError(f"sandbox: reading {p} is not allowed")
                if p.rsplit("/", 1)[-1] in ("mem", "environ", "pagemap") or "/fd/" in p or "/map_files/" in p:
                    raise PermissionError(f"sandbox: opening {p} is not allowed")
            writes = (mode and any(c in mode for c in "wax+")) or (mode is None and flags & O_W)
            if writes and not p.startswith(prefix):
                raise PermissionError(f"sandbox: writing {p} is not allowed")
            if mode is None:  # os.open: its audit event does not show dir_fd
                if writes and not (type(path) is str and path.startswith("/")
                                   or type(path) is bytes and path.startswith(b"/")):
                    raise PermissionError("sandbox: os.open of a relative path for writing is not allowed")
                try:
                    is_dir = S_ISDIR(stat_(p).st_mode)
                except OSError:
                    is_dir = False
                if is_dir:   # a folder fd would open *at() calls the hook cannot see
                    raise PermissionError(f"sandbox: opening the folder {p} is not allowed")
        elif event in paths:
            for p in args[:paths[event]]:
                if not inside(p):
                    raise PermissionError(f"sandbox: {event} on {p} is not allowed")
            at = dir_fd_at.get(event)
            if at is not None and any(type(a) is int and a not in (-1, -100) for a in args[at:]):
                raise PermissionError(f"sandbox: {event} relative to a folder fd is not allowed")
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
        cmd = [sys.executable, "-S", "-s", "-B", "-c", _HARNESS]
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
