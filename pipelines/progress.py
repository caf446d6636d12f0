"""One line per pipeline step on the console; each step's full log in a file of its own.

kfp.local prints its own log records and every task's output to sys.stdout (thousands of
lines of executor JSON for one run). `TaskLogs` stands in for sys.stdout during a local run:
it recognises kfp.local's "Executing task" / "finished with status" records, writes each
task's lines to `<logs>/<display name>.log` (the names the DAG gives its tasks, e.g.
`gate-problems.log`, not `validate-data-1`), and prints one line per finished task:
status, wall time, display name, and the figures the task printed (lines starting with
`[figures]`). While a task runs, the object is also a rich renderable for a `Live` display:
the running step's name, its elapsed time, its latest progress line (a tqdm bar's `\r`
update: steps, rewards, tokens/s) and where its log is.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_FIGURES = re.compile(r"\[figures\]\s*(.+)")
_PROGRESS = re.compile(r"\d+%\||\d+/\d+ \[|it/s|s/it|step/s|s/step|batch/s|s/batch")


def display_names(pipeline_spec: dict) -> dict[str, str]:
    """Task key -> display name, for every task of the DAG and its sub-DAGs (dsl.If bodies)."""
    names: dict[str, str] = {}
    dags = [pipeline_spec.get("root", {}).get("dag", {})]
    dags += [c.get("dag", {}) for c in pipeline_spec.get("components", {}).values()]
    for dag in dags:
        for key, task in dag.get("tasks", {}).items():
            names[key] = task.get("taskInfo", {}).get("name", key)
    return names


class TaskLogs:
    """A file-like stand-in for sys.stdout during a kfp.local run (see the module docstring)."""

    def __init__(self, console, log_dir: Path, names: dict[str, str]):
        self.console, self.log_dir, self.names = console, log_dir, names
        log_dir.mkdir(parents=True, exist_ok=True)
        self.other = open(log_dir / "pipeline.log", "a", encoding="utf-8")
        self.current, self.task, self.started, self.figures = None, "", 0.0, []
        self.buffer = ""
        self.progress = ""
        self.done: list[tuple[str, str, float]] = []

    def write(self, text: str) -> int:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            self._seen_progress(line)
            self._line(line + "\n")
        self._seen_progress(self.buffer)
        return len(text)

    def _seen_progress(self, text: str) -> None:
        """Keep the newest tqdm update (the last `\r` segment that looks like a bar)."""
        for part in reversed(_ANSI.sub("", text).split("\r")):
            if _PROGRESS.search(part):
                self.progress = " ".join(part.split())
                return

    def __rich__(self):
        from rich.text import Text

        if not self.task or self.current is None:
            return Text("")
        seconds = int(time.perf_counter() - self.started)
        line = Text.assemble(("running ", "bold"), (self.task, "bold cyan"),
                             f"  {seconds // 60}:{seconds % 60:02d}")
        if self.progress:
            line.append(f"  {self.progress}")
        line.append(f"\n  log: {self.current.name}", style="dim")
        return line

    def flush(self) -> None:
        for f in (self.current, self.other):
            if f:
                f.flush()

    def isatty(self) -> bool:
        return False

    def _line(self, line: str) -> None:
        plain = _ANSI.sub("", line)
        if m := _START.search(plain):
            self._open(m.group(1))
        (self.current or self.other).write(plain)
        if m := _FIGURES.search(plain):
            self.figures.append(m.group(1).strip())
        if m := _END.search(plain):
            self._close(m.group(2))

    def _name(self, key: str) -> str:
        return self.names.get(key, key)

    def _open(self, key: str) -> None:
        name = self._name(key)
        self.task, self.started, self.figures, self.progress = name, time.perf_counter(), [], ""
        self.current = open(self.log_dir / f"{name}.log", "a", encoding="utf-8")

    def _close(self, status: str) -> None:
        seconds = time.perf_counter() - self.started
        mark = "[green]ok  [/]" if status == "SUCCESS" else f"[bold red]{status}[/]"
        figures = f"  {'; '.join(self.figures)}" if self.figures else ""
        self.console.print(f"{mark} {seconds:6.1f} s  {self.task}{figures}", highlight=False,
                           soft_wrap=True)
        self.done.append((self.task, status, seconds))
        if self.current:
            self.current.close()
        self.current = None

    def close(self) -> None:
        if self.current:
            self.console.print(f"[bold red]FAILED[/] {self.task}: see {self.current.name}")
            self.current.close()
            self.current = None
        self.other.close()
