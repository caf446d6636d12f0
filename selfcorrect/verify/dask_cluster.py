"""A Dask cluster of separate processes on this machine: a scheduler and N workers on loopback.

    with local_cluster(workers=2) as cluster:
        beam.run(..., pipeline_args=["--runner=DaskRunner",
                                     f"--dask_client_address={cluster.address}",
                                     f"--temp_location={shared_tmp}"])

What the tests and `make bench-verify` run the Beam step on: the same `dask scheduler` and
`dask worker` commands a cluster runs (docs/verification.md), each its own process (no nanny:
a worker that dies stays dead, as a lost node does), bound to 127.0.0.1, each worker one
thread (the step's VerifyFn runs its own sandboxes in parallel). Every process is stopped
when the block ends, whatever happens in it; start-up is bounded by `timeout_s`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


@dataclasses.dataclass
class LocalCluster:
    address: str                       # tcp://127.0.0.1:PORT
    scheduler: subprocess.Popen
    workers: dict[str, subprocess.Popen]   # worker address -> its process
    logs: Path                         # scheduler.log, worker-N.log

    def stop_worker(self, address: str) -> None:
        """Kill one worker at once (SIGKILL: no goodbye to the scheduler), as a lost node."""
        _stop(self.workers[address], kill=True)


@contextlib.contextmanager
def local_cluster(workers: int = 2, timeout_s: float = 120.0, env: dict | None = None):
    """Start a scheduler and `workers` worker processes on 127.0.0.1; yield a LocalCluster;
    stop them all on exit. RuntimeError (with the logs' tails) when they are not up in time."""
    from distributed import Client

    logs = Path(tempfile.mkdtemp(prefix="selfcorrect-dask-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start([sys.executable, "-m", "distributed.cli.dask_scheduler",
                             "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                             "--idle-timeout", "600"],   # ends itself if left behind
                            logs / "scheduler.log", env))
        for i in range(workers):
            procs.append(_start([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                 "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                                 "--no-dashboard", "--death-timeout", "60",   # idem
                                 "--name", f"worker-{i}"], logs / f"worker-{i}.log", env))
        deadline = time.monotonic() + timeout_s
        try:
            with Client(address, timeout=timeout_s, set_as_default=False) as client:
                client.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
                pids = client.run(os.getpid)
        except Exception as e:  # noqa: BLE001 - OSError, TimeoutError: say what the logs say
            raise RuntimeError(f"dask cluster not up in {timeout_s:.0f} s: {e}\n"
                               + _tails(logs)) from e
        by_pid = {p.pid: p for p in procs[1:]}
        yield LocalCluster(address, procs[0], {a: by_pid[pid] for a, pid in pids.items()}, logs)
    finally:
        for proc in reversed(procs):   # workers first, then the scheduler
            _stop(proc)
        shutil.rmtree(logs, ignore_errors=True)


def _start(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen, kill: bool = False) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tails(logs: Path) -> str:
    return "\n".join(f"--- {p.name}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-8:])
                     for p in sorted(logs.glob("*.log")))
