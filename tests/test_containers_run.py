"""The whole tiny-preset DAG in the images a cluster runs: kfp.local.DockerRunner starts one
real container per step, through podman's Docker API (or any Docker engine in DOCKER_HOST).

Opt-in tier (about 10 minutes once the images exist): `make test-containers` builds the images
(`make images-local`) and runs this file with SELFCORRECT_CONTAINER_TESTS=1.

Like a cluster, DockerRunner sets no working directory and the images hold a non-editable
install: the test that catches defect 1 (a source tree in the image's working directory
shadowing the installed package, without selfcorrect.schemas).

Harness, not product: kfp.local runs containers with auto_remove=True and, when the container
is gone before it asks for the exit status, assumes success; podman 4.3 also answers 500
instead of 404 for a removed container, which the Docker client raises. The harness keeps
every container until the test ends, so each step's real exit status is read, then removes them.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from selfcorrect import config, images
from selfcorrect.evaluate import METRICS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("SELFCORRECT_CONTAINER_TESTS") != "1",
                       reason="container tier: `make test-containers` (podman, built images)"),
]


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory):
    """DOCKER_HOST as given, else a `podman system service` of our own on a unix socket."""
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    if shutil.which("podman") is None:
        pytest.fail("no DOCKER_HOST and no podman: run scripts/podman_setup.sh (root)")
    sock = tmp_path_factory.mktemp("podman") / "docker.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while not sock.exists():
        if service.poll() is not None or time.time() > deadline:
            service.kill()
            pytest.fail(f"podman system service did not start: {service.stderr.read()!r}")
        time.sleep(0.2)
    os.environ["DOCKER_HOST"] = f"unix://{sock}"
    try:
        yield os.environ["DOCKER_HOST"]
    finally:
        del os.environ["DOCKER_HOST"]
        service.terminate()
        service.wait(timeout=30)


@pytest.fixture(scope="module")
def client(docker_host):
    docker = pytest.importorskip("docker")
    c = docker.from_env()
    missing = [images.image(n) for n in images.IMAGES if not c.images.list(name=images.image(n))]
    if missing:
        pytest.fail(f"images not built: {missing}; run `make images-local`")
    yield c
    c.close()


@pytest.fixture(scope="module")
def kept_containers(client):
    """Every container kfp.local starts, kept (not auto-removed) until the module ends."""
    from docker.models.containers import ContainerCollection

    started, original = [], ContainerCollection.run

    def run(self, image, command=None, **kwargs):
        if not kwargs.get("detach"):                 # not kfp.local's call
            return original(self, image, command, **kwargs)
        kwargs["auto_remove"] = False
        container = original(self, image, command, **kwargs)
        started.append(container)
        return container

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ContainerCollection, "run", run)
        yield started
    for container in started:
        container.remove(force=True)


@pytest.fixture(scope="module")
def container_run(kept_containers, tmp_path_factory):
    from kfp import local

    from selfcorrect.pipelines.score import make_pipeline, pipeline_arguments

    root = tmp_path_factory.mktemp("kfp-docker")     # mounted into every container as is
    # every branch: the gate opens (promotion), the difficulty probe and the sampling study run
    cfg = config.load("tiny", overrides=[f"output_dir={root / 'out'}",
                                         "promotion.min_gain_over_base=-1",
                                         "data.drop_always_solved=true", "eval.sampling_k=2"])
    local.init(runner=local.DockerRunner(), pipeline_root=str(root), raise_on_error=True)
    started = time.time()
    task = make_pipeline(cfg)(**pipeline_arguments(cfg))
    seconds = time.time() - started
    print(f"\ncontainer run: {len(kept_containers)} containers, {seconds:.0f} s wall")
    return cfg, json.loads(Path(task.output.path).read_text()), kept_containers, seconds


def test_the_whole_dag_runs_in_the_images(container_run):
    cfg, results, containers, _ = container_run
    assert list(results) == ["base", "stage1", "trained"]
    for metrics in results.values():
        assert metrics["n"] == cfg.data.n_eval
        for key in METRICS:
            assert -1.0 <= metrics[key] <= 1.0
    # the gate opened: the trained model is in the registry under the run's output_dir
    assert list(Path(cfg.output_dir, "registry").rglob("config.json"))


def test_every_step_ran_in_its_image_with_no_working_directory_and_exit_0(container_run):
    _, _, containers, _ = container_run
    used = {}
    for c in containers:
        c.reload()
        assert c.attrs["State"]["ExitCode"] == 0, (c.image.tags, c.logs()[-2000:])
        assert c.attrs["Config"].get("WorkingDir") in ("", "/"), c.attrs["Config"]["WorkingDir"]
        used.setdefault(c.attrs["Config"]["Image"].removeprefix("localhost/"), 0)
        used[c.attrs["Config"]["Image"].removeprefix("localhost/")] += 1
    assert set(used) == {images.image(n) for n in images.IMAGES}, used
    # the model steps ran in the trainer image: prepare_model, 3 x sample_attempts,
    # 2 training stages, the sampling study
    assert used[images.image("selfcorrect-trainer")] == 7, used


PROBE = """
import importlib.metadata as md, json, os, sys
import selfcorrect, selfcorrect.schemas, selfcorrect.components, selfcorrect.pipelines
direct = json.loads(md.distribution("selfcorrect").read_text("direct_url.json") or "{}")
print(json.dumps({"cwd": os.getcwd(), "package": selfcorrect.__file__,
                  "editable": direct.get("dir_info", {}).get("editable", False),
                  "cwd_listing": sorted(os.listdir("."))}))
"""


@pytest.mark.parametrize("name", sorted(images.IMAGES))
def test_each_image_imports_the_installed_package_from_its_default_directory(client, name):
    """`python3 -m`, as KFP runs it, puts the working directory first on sys.path: the image's
    default directory must hold no source tree, and the package must be the installed wheel."""
    out = client.containers.run(images.image(name), ["python3", "-c", PROBE], remove=True,
                                network_disabled=True)
    probe = json.loads(out.decode().strip().splitlines()[-1])
    assert probe["cwd"] == "/"
    assert "/site-packages/selfcorrect/" in probe["package"], probe
    assert probe["editable"] is False
    assert not {"selfcorrect", "components", "pipelines", "schemas"} & set(probe["cwd_listing"])


RESUME_STEPS = 10


def _resume_pipeline():
    """The data, the base model and Stage II: the smallest DAG with a training step to kill."""
    from kfp import dsl
    from kfp.dsl import Model

    from selfcorrect.components import prepare_model, prepare_problems, train_stage2

    @dsl.pipeline(name="selfcorrect-resume-check")
    def resume_check(config: dict, data: dict) -> Model:
        problems = prepare_problems(data=data)
        base = prepare_model(source="tiny")
        return train_stage2(problems=problems.outputs["problems"], init_model=base.outputs["model"],
                            base_model=base.outputs["model"], config=config).outputs["model"]

    return resume_check


def _run_resume(cfg, kept_containers, kill_after_step: int | None = None) -> Path | None:
    """Run the resume pipeline; with kill_after_step, SIGKILL the Stage II container once a
    checkpoint past that step is in the store (returns None: the run failed)."""
    import threading

    stop, killed = threading.Event(), []

    def watch():
        ckpts = Path(cfg.output_dir, "checkpoints")
        while not stop.wait(0.1):
            tags = [p.read_text().strip() for p in ckpts.glob(f"{cfg.name}-*/stage2/latest")]
            if tags and int(tags[0][4:]) >= kill_after_step:
                for c in list(kept_containers):
                    c.reload()
                    if c.status == "running" and "train_stage2" in json.dumps(c.attrs["Config"]["Cmd"]):
                        c.kill()
                        killed.append(tags[0])
                        return

    watcher = threading.Thread(target=watch, daemon=True)
    if kill_after_step is not None:
        watcher.start()
    flat = config.flat(cfg, "name", "output_dir", "model", "train", "generate", "verify")
    data = {k.split(".", 1)[1]: v for k, v in config.flat(cfg, "data").items()}
    try:
        task = _resume_pipeline()(config=flat, data=data)
    except Exception:
        if not killed:
            raise
        return None
    finally:
        stop.set()
    assert not killed, f"killed at {killed} but the run reported success"
    return Path(task.output.path)


def test_a_killed_training_container_continues_from_the_store_to_the_same_result(
        kept_containers, tmp_path_factory):
    """Stop the Stage II container mid-stage (SIGKILL), submit the same run again: it resumes
    from the checkpoint in the run's store and ends where an uninterrupted run ends."""
    from kfp import local

    root = tmp_path_factory.mktemp("kfp-resume")
    local.init(runner=local.DockerRunner(), pipeline_root=str(root), raise_on_error=True)
    sets = [f"output_dir={root / 'out'}", f"train.stage2_steps={RESUME_STEPS}",
            "train.checkpoint_every=2", "train.keep_checkpoints=1"]
    whole = _run_resume(config.load("tiny", overrides=sets + ["name=whole"]), kept_containers)
    cfg = config.load("tiny", overrides=sets + ["name=killed"])
    assert _run_resume(cfg, kept_containers, kill_after_step=2) is None
    stored = [p.read_text().strip() for p in Path(cfg.output_dir, "checkpoints").glob(
        "killed-*/stage2/latest")]
    assert stored and 2 <= int(stored[0][4:]) < RESUME_STEPS, stored
    resumed = _run_resume(cfg, kept_containers)

    done = json.loads((resumed / "metrics.json").read_text())
    reference = json.loads((whole / "metrics.json").read_text())
    assert done["summary"]["resumed_at"] == int(stored[0][4:])
    assert reference["summary"]["resumed_at"] == 0
    assert len(done["steps"]) == len(reference["steps"]) == RESUME_STEPS
    for a, b in zip(reference["steps"], done["steps"]):
        for key in ("loss", "reward_t1", "reward_t2", "kl_t1", "kl_t2", "len_t1", "len_t2"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    import torch
    from safetensors.torch import load_file

    w_whole, w_resumed = (load_file(str(p / "model.safetensors")) for p in (whole, resumed))
    assert all(torch.allclose(w_whole[k], w_resumed[k], atol=1e-6) for k in w_whole)
    # the checkpoints stayed in the store: never inside the model artifact
    assert not list(resumed.rglob("latest")) and not list(resumed.rglob("*optim_states*"))

