"""Background uploads of remote checkpoints (selfcorrect.train.checkpoint.Uploader), on fsspec's
in-memory filesystem: training never waits for the store, `latest` moves only once a tag is
complete on every machine, and the newest queued tag wins when the store is slower than training.

The store is real (fsspec memory://); the only thing held is the upload's start, by an event,
to stand in for a slow network.
"""
import shutil
import threading
import uuid
from pathlib import Path

import pytest

from selfcorrect import storage
from selfcorrect.train import checkpoint


@pytest.fixture
def store(monkeypatch):
    """(directory URI, its staging folder, an event gating uploads, names uploaded in order)."""
    directory = f"memory://ckpt-{uuid.uuid4().hex[:8]}/run/stage2"
    local = Path(checkpoint.staging(directory))
    gate, started, real = threading.Event(), [], storage.upload_tree

    def held(src, dst):
        started.append(Path(src).name)
        assert gate.wait(30), "upload never released"
        return real(src, dst)

    monkeypatch.setattr(storage, "upload_tree", held)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    yield directory, local, gate, started
    shutil.rmtree(local, ignore_errors=True)
    storage.remove(directory)


def write_tag(local: Path, tag: str) -> None:
    (local / tag).mkdir(parents=True, exist_ok=True)
    (local / tag / "mp_rank_00_model_states.pt").write_bytes(tag.encode() * 100)
    (local / tag / "rng_rank0.pt").write_bytes(b"rng")


def test_submit_returns_at_once_and_latest_moves_only_after_the_upload(store):
    directory, local, gate, started = store
    write_tag(local, "step1")
    up = checkpoint.Uploader(directory, keep=2)
    up.submit("step1")                      # returns while the upload is held
    assert checkpoint.latest(directory) is None
    gate.set()
    up.wait()
    assert checkpoint.latest(directory) == "step1"
    assert set(storage.listing(f"{directory}/step1")) == {
        "mp_rank_00_model_states.pt", "rng_rank0.pt", ".complete-node0"}
    assert up.error is None


def test_the_newest_queued_tag_wins_and_old_tags_are_pruned(store):
    directory, local, gate, started = store
    up = checkpoint.Uploader(directory, keep=1)
    for step in (1, 2, 3, 4):
        write_tag(local, f"step{step}")
        up.submit(f"step{step}")
        if step == 1:                        # step1 is uploading (held) while 2, 3, 4 arrive
            while not started:
                threading.Event().wait(0.01)
    gate.set()
    up.wait()
    assert up.uploaded == ["step1", "step4"]        # 2 and 3 were replaced while waiting
    assert checkpoint.latest(directory) == "step4"
    assert checkpoint._tags(directory) == ["step4"]
    assert sorted(p.name for p in local.glob("step*")) == ["step4"]


def test_latest_waits_for_every_machine(store, monkeypatch):
    """Two machines: rank 0 moves `latest` only when machine 1's marker is in the store too."""
    directory, local, gate, _ = store
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    gate.set()
    write_tag(local, "step1")
    up = checkpoint.Uploader(directory, keep=2, marker_timeout_s=0.5)
    up.submit("step1")
    up.wait()
    assert checkpoint.latest(directory) is None                  # machine 1 never finished
    assert isinstance(up.error, TimeoutError) and "step1" in str(up.error)

    fs, root = storage.filesystem(directory)
    write_tag(local, "step2")
    done = threading.Thread(target=lambda: (threading.Event().wait(0.3), fs.pipe_file(
        f"{root}/step2/.complete-node1", b"")))
    up.marker_timeout_s = 30
    done.start()
    up.submit("step2")
    up.wait()
    done.join()
    assert checkpoint.latest(directory) == "step2"


def test_a_failed_upload_is_logged_and_training_goes_on(store, monkeypatch, caplog):
    directory, local, gate, _ = store
    gate.set()
    up = checkpoint.Uploader(directory, keep=2)
    up.submit("step9")                       # nothing staged under that tag: the upload fails
    up.wait()
    assert checkpoint.latest(directory) is None
    assert up.error is not None
    assert "upload failed" in caplog.text and "step9" in caplog.text
