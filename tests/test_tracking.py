"""train.report_to: TensorBoard by default, MLflow (local file store) and W&B (offline) on
request, each reading back what a stage wrote."""
import pytest

from selfcorrect import config
from selfcorrect.config import ConfigError
from selfcorrect.train.tracking import Tracker

RECORDS = [{"step": 0.0, "reward_t1": 0.25, "loss": 1.5}, {"step": 1.0, "reward_t1": 0.5, "loss": 1.25}]


def run(report_to: str, log_dir) -> None:
    cfg = config.load("tiny", overrides=[f"train.report_to={report_to}", "name=track-test"])
    tracker = Tracker(cfg, stage=2, log_dir=str(log_dir))
    for record in RECORDS:
        tracker.log(record, int(record["step"]))
    tracker.close()


def test_tensorboard_is_the_default(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert config.load("tiny").train.report_to == "tensorboard"
    run("tensorboard", tmp_path)
    events = EventAccumulator(str(tmp_path)).Reload()
    assert [e.value for e in events.Scalars("stage2/reward_t1")] == [0.25, 0.5]


def test_mlflow_writes_a_run_with_params_and_metrics_locally(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run("tensorboard,mlflow", tmp_path)
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("track-test")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "track-test-stage2" and found.info.status == "FINISHED"
    assert found.data.params["train.report_to"] == "tensorboard,mlflow"
    assert [m.value for m in client.get_metric_history(found.info.run_id, "loss")] == [1.5, 1.25]


def test_wandb_runs_offline_without_an_api_key(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run("wandb", tmp_path)
    wandb.teardown()                                # the wandb service has written all out
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    (record,) = offline.glob("*.wandb")             # the run's offline log, for `wandb sync`
    data = record.read_bytes()                      # history rows: keys and JSON values
    assert all(key in data for key in (b"reward_t1", b"loss", b"1.25", b"track-test-stage2"))


def test_bad_report_to_names_the_key():
    with pytest.raises(ConfigError, match="train.report_to: 'comet'"):
        config.load("tiny", overrides=["train.report_to=comet"])
    cfg = config.load("tiny", overrides=["train.report_to=none"])
    assert Tracker(cfg, stage=1, log_dir="/nonexistent").writers == []
