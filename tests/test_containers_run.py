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
from __future__ import annotations

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
