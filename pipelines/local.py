"""Run the whole pipeline on this machine through kfp.local (SubprocessRunner)."""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

from selfcorrect.config import RunConfig


def run_local(cfg: RunConfig, console=None) -> dict:
    """Run the DAG; returns {"results", "run_dir", "pipeline_root", "seconds", "logs"}.

    Steps run one after another as subprocesses of this very interpreter (kfp.local puts
    sys.executable in place of the image's `python3`), so the installed package is used.
    With a rich `console`, kfp.local's output goes to one log file per task (named by the
    tasks' display names, under <pipeline root>/logs/<start time>/) and the console gets one
    line per finished task (pipelines/progress.py); without one, it goes to stdout as is.
    """
    from kfp import local

    from selfcorrect.pipelines.score import make_pipeline, pipeline_arguments

    if "://" in cfg.output_dir:
        raise ValueError("output_dir: a local run needs a local folder for kfp.local's pipeline "
                         "root; copy results to gs:// afterwards or run on a cluster")
    root = Path(cfg.output_dir, "kfp-local").resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # progress bars in the step logs: an update every 5 s at most, not thousands of lines
    os.environ.setdefault("TQDM_MININTERVAL", "5")
    # each step is a fresh single-process run: a rendezvous left by the calling process (one
    # that trained in-process, a notebook) would make every training step bind its port
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(key, None)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    score_pipeline = make_pipeline(cfg)       # cfg.resources: the training processes
    arguments = pipeline_arguments(cfg)
    started = time.time()
    logs = root / "logs" / time.strftime("%Y%m%d-%H%M%S")
    if console is None:
        task = score_pipeline(**arguments)
    else:
        import contextlib

        from google.protobuf import json_format

        from selfcorrect.pipelines.progress import TaskLogs, display_names

        router = TaskLogs(console, logs, display_names(
            json_format.MessageToDict(score_pipeline.pipeline_spec)))
        console.print(f"step logs: {logs}", soft_wrap=True)
        from rich.live import Live

        try:
            with contextlib.redirect_stdout(router), warnings.catch_warnings(), \
                    Live(router, console=console, refresh_per_second=2, transient=True,
                         redirect_stdout=False, redirect_stderr=False):
                # kfp.local's notes on images and display names, once per task: in the logs
                warnings.filterwarnings("ignore", module=r"kfp\.local")
                task = score_pipeline(**arguments)
        finally:
            router.close()
    results_path = Path(task.output.path)
    return {"results": json.loads(results_path.read_text()),
            "run_dir": str(_run_dir(results_path, root)), "pipeline_root": str(root),
            "seconds": time.time() - started, "logs": str(logs)}


def _run_dir(path: Path, root: Path) -> Path:
    while path.parent != root:
        path = path.parent
    return path
