"""The sandbox's child process (selfcorrect.verify.code runs this file by path).

It reads its settings and the run's nonce from stdin, limits itself (rlimits), guards itself
with an audit hook, then runs the program and reports on a file opened beforehand. Started as
`python -S -s -B -P <this file>`: no site packages, and (-P) not this folder on sys.path, so a
completion's `import math` is the standard library's, never selfcorrect.verify.math. It imports
nothing of selfcorrect: what it needs is bound before the completion runs.
"""
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


if __name__ == "__main__":
    main()
