"""Images: every one the compiled pipeline uses has a Dockerfile, is tagged with the package
version, and installs the versions pyproject.toml pins (no Docker engine here to build them)."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from selfcorrect import __version__, images
from selfcorrect.pipelines.compile import compile_pipeline

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins(reqs) -> dict:
    pins = {}
    for text in reqs:
        req = Requirement(text)
        (spec,) = req.specifier
        assert spec.operator == "==", f"pyproject pins exactly: {text}"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


PINS = _pins(PYPROJECT["project"]["dependencies"])
LOCK = {canonicalize_name(n): v for n, v in re.findall(
    r"^([A-Za-z0-9_.\-]+)==(\S+)$", (REPO / "containers/requirements.lock").read_text(), re.M)}
DOCKERFILES = {name: (REPO / path).read_text() for name, path in images.IMAGES.items()}


def test_every_image_in_the_compiled_pipeline_has_a_dockerfile_and_the_version_tag(tmp_path):
    ir = yaml.safe_load(compile_pipeline(tmp_path).read_text())
    used = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert used
    for ref in used:
        name, tag = ref.rsplit("/", 1)[-1].split(":")
        assert tag == __version__, ref
        assert name in images.IMAGES and (REPO / images.IMAGES[name]).is_file(), ref


def test_the_lock_is_the_runtime_closure_without_test_extras():
    done = subprocess.run([sys.executable, str(REPO / "scripts/lock_images.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert not {"pytest", "gcp-storage-emulator", "pluggy"} & set(LOCK)


def test_the_lock_holds_every_pyproject_pin_at_the_same_version():
    wrong = {n: (v, LOCK.get(n)) for n, v in PINS.items() if LOCK.get(n) != v}
    assert not wrong, f"pyproject pin vs containers/requirements.lock: {wrong}"


@pytest.mark.parametrize("name", sorted(images.IMAGES))
def test_dockerfile_pins_agree_with_pyproject(name):
    text = DOCKERFILES[name]
    for base in re.findall(r"^FROM\s+(\S+)", text, re.M):
        assert ":" in base and not base.endswith(":latest"), f"{name}: unpinned base {base}"
    for pkg, version in re.findall(r"\b([A-Za-z][\w.\-]*)==([\w.+]+)", text):
        assert PINS.get(canonicalize_name(pkg)) == version, f"{name}: {pkg}=={version}"
    assert "-c containers/requirements.lock" in text          # nothing floats
    assert re.search(r"pip install --no-deps \.", text)        # the package itself
    python = PYPROJECT["project"]["requires-python"].lstrip(">=")
    assert re.search(rf"python[_:]?{re.escape(python)}", text), f"{name}: not Python {python}"


def test_verifier_is_the_official_beam_sdk_image_of_the_pinned_version():
    beam = PINS["apache-beam"]
    assert re.search(rf"^FROM apache/beam_python3\.11_sdk:{re.escape(beam)}$",
                     DOCKERFILES["selfcorrect-verifier"], re.M)


def test_build_images_dry_run_builds_each_image_with_its_version_tag():
    done = subprocess.run([sys.executable, str(REPO / "scripts/build_images.py"), "--dry-run",
                           "--registry", "registry.example/team", "--push"],
                          capture_output=True, text=True, cwd=REPO, check=True)
    lines = done.stdout.splitlines()
    for name, dockerfile in images.IMAGES.items():
        tag = f"registry.example/team/{name}:{__version__}"
        assert f"docker build -f {dockerfile} -t {tag} ." in lines
        assert f"docker push {tag}" in lines
