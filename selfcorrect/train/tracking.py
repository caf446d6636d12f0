"""Where a training stage reports its per-step metrics: `train.report_to`.

    tracker = Tracker(cfg, stage=2, log_dir=".../logs", start_step=done)
    tracker.log(record, step)
    tracker.close()

| report_to   | what it writes                                   | where (local / offline by default) |
|-------------|--------------------------------------------------|------------------------------------|
| tensorboard | event files, scalars `stage<N>/<metric>`         | `<model folder>/logs`              |
| mlflow      | one MLflow run per stage: params (the flat config), metrics by step | `MLFLOW_TRACKING_URI`, else `<model folder>/logs/mlruns` (file store) |
| wandb       | one W&B run per stage: config, metrics by step   | `WANDB_MODE` (online with `WANDB_API_KEY`), else offline files under `<model folder>/logs/wandb` |

Several at once: `tensorboard,mlflow`. `none` reports nothing. Only rank 0 reports. MLflow
and W&B are optional installs (`pip install 'selfcorrect[tracking]'`); asking for one that is
missing is an error before training starts.
"""
from __future__ import annotations

import os
from pathlib import Path

from selfcorrect.config import report_targets


class Tracker:
    """The configured reporters of one stage on rank 0 (a no-op elsewhere)."""

    def __init__(self, cfg, *, stage: int, log_dir: str | None, start_step: int = 0,
                 rank: int = 0):
        self.writers = []
        if rank != 0 or not log_dir:
            return
        names = report_targets(cfg.train.report_to)
        run_name = f"{cfg.name}-stage{stage}"
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(log_dir, purge_step=start_step)
            self.writers.append((lambda m, s, tb=tb: [tb.add_scalar(f"stage{stage}/{k}", v, s)
                                                      for k, v in m.items()], tb.close))
        if "mlflow" in names:
            mlflow = _optional("mlflow")
            if not os.environ.get("MLFLOW_TRACKING_URI"):
                # the local default: MLflow's file store (a tracking server: set the URI)
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                mlflow.set_tracking_uri(Path(log_dir, "mlruns").resolve().as_uri())
            mlflow.set_experiment(cfg.name)
            mlflow.start_run(run_name=run_name)
            mlflow.log_params(_flat(cfg))
            self.writers.append((lambda m, s: mlflow.log_metrics(m, step=s), mlflow.end_run))
        if "wandb" in names:
            wandb = _optional("wandb")
            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY")
                                                    else "offline")
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            run = wandb.init(project=os.environ.get("WANDB_PROJECT", cfg.name), name=run_name,
                             dir=log_dir, mode=mode, config=cfg.to_dict(), reinit="create_new")
            self.writers.append((lambda m, s, run=run: run.log(m, step=s), run.finish))

    def log(self, record: dict, step: int) -> None:
        metrics = {k: float(v) for k, v in record.items() if k != "step"}
        for write, _ in self.writers:
            write(metrics, step)

    def close(self) -> None:
        for _, close in self.writers:
            close()
        self.writers = []


def _optional(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise ImportError(f"train.report_to names {name}, which is not installed: "
                          "pip install 'selfcorrect[tracking]'") from None


def _flat(cfg) -> dict[str, str]:
    """The config as MLflow params (dotted keys; values as text, at most 500 characters)."""
    from selfcorrect.config import flat

    return {k: str(v)[:500] for k, v in flat(cfg).items() if not k.startswith("prompts.")}
