"""Images: every one the compiled pipeline uses has a Dockerfile, is tagged with the package
version, installs the versions pyproject.toml pins, and holds the installed package only (no
source tree in the working directory). tests/test_containers_run.py builds and runs them."""
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
from compiled import read_platform_spec, read_spec

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins(reqs) -> dict:
    """{distribution: its specifier set} of pyproject's requirements (ranges or exact pins)."""
    return {canonicalize_name(Requirement(text).name): Requirement(text).specifier for text in reqs}


sys.path.insert(0, str(REPO / "scripts"))
from lock_images import IMAGE_EXTRAS, extras  # noqa: E402

#: what the images install: the core and the extras they carry
PINS = _pins(PYPROJECT["project"]["dependencies"]
             + extras(PYPROJECT["project"]["optional-dependencies"], IMAGE_EXTRAS))
LOCK = {canonicalize_name(n): v for n, v in re.findall(
    r"^([A-Za-z0-9_.\-]+)==(\S+)$", (REPO / "containers/requirements.lock").read_text(), re.M)}
DOCKERFILES = {name: (REPO / path).read_text() for name, path in images.IMAGES.items()}


def test_every_image_in_the_compiled_pipeline_has_a_dockerfile_and_the_version_tag(tmp_path):
    ir = read_spec(compile_pipeline(tmp_path))
    used = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert used
    for ref in used:
        name, tag = ref.rsplit("/", 1)[-1].split(":")
        assert tag == images.tag() and tag.startswith(__version__), ref
        assert name in images.IMAGES and (REPO / images.IMAGES[name]).is_file(), ref


def test_the_lock_is_the_runtime_closure_without_test_extras():
    done = subprocess.run([sys.executable, str(REPO / "scripts/lock_images.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert not {"pytest", "gcp-storage-emulator", "pluggy"} & set(LOCK)


def test_the_lock_satisfies_every_pyproject_requirement():
    wrong = {n: (str(spec), LOCK.get(n)) for n, spec in PINS.items()
             if LOCK.get(n) is None or LOCK[n] not in spec}
    assert not wrong, f"pyproject requirement vs containers/requirements.lock: {wrong}"


def _stages(text: str) -> list[tuple[str, list[str]]]:
    """(FROM line, instructions) per build stage, continuation lines joined."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    stages = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append((line, []))
        elif stages:
            stages[-1][1].append(line)
    return stages


@pytest.mark.parametrize("name", sorted(images.IMAGES))
def test_dockerfile_pins_agree_with_pyproject(name):
    text = DOCKERFILES[name]
    (base,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)       # the default base
    assert ":" in base and not base.endswith(":latest"), f"{name}: unpinned base {base}"
    assert _stages(text)[0][0].startswith("FROM ${BASE_IMAGE}")
    for pkg, version in re.findall(r"\b([A-Za-z][\w.\-]*)==([\w.+]+)", text):
        spec = PINS.get(canonicalize_name(pkg))
        assert spec is not None and version in spec and LOCK.get(canonicalize_name(pkg)) == version, \
            f"{name}: {pkg}=={version}"
    assert re.search(r"pip install (--find-links /tmp/cwheels )?-c /tmp/requirements.lock "
                     r"-r /tmp/requirements.lock", text)                     # nothing floats
    python = PYPROJECT["project"]["requires-python"].lstrip(">=")
    assert re.search(rf"python[_:]?{re.escape(python)}", text), f"{name}: not Python {python}"


@pytest.mark.parametrize("name", sorted(images.IMAGES))
def test_image_holds_the_built_wheel_and_no_source_tree(name):
    """Defect 1: the images set WORKDIR over a copy of the source tree; KFP sets no working
    directory, so `python3 -m` imported the tree ahead of the installed package and
    selfcorrect.schemas (mapped from schemas/ only at install) was missing. Now the package
    is built into a wheel in its own stage; the final stage copies only that wheel, installs
    it non-editable and leaves the working directory at /."""
    stages = _stages(DOCKERFILES[name])
    final = stages[-1][1]
    wheel_stage = [s for s in stages if s[0].endswith(" AS wheel")]
    assert len(wheel_stage) == 1 and any(i.startswith("RUN pip wheel --no-deps")
                                         for i in wheel_stage[0][1])
    copies = [i for i in final if i.startswith(("COPY", "ADD"))]
    assert copies == ["COPY --from=wheel /wheel /tmp/wheel"], copies
    assert "RUN pip install --no-deps /tmp/wheel/selfcorrect-*.whl && rm -rf /tmp/wheel" in final
    workdirs = [i.split()[1] for _, body in stages for i in body if i.startswith("WORKDIR")]
    assert workdirs and workdirs[-1] == "/" and set(workdirs) == {"/"}, workdirs
    # the stages the final image is built on copy the lock only, never sources
    for head, body in stages:
        if head.endswith((" AS torch", " AS runtime")):
            assert {i.split()[-2] for i in body if i.startswith("COPY ") and "--from" not in i} \
                <= {"containers/requirements.lock"}, head
    assert "-e " not in DOCKERFILES[name] and "--editable" not in DOCKERFILES[name]


def test_verifier_is_the_official_beam_sdk_image_of_the_pinned_version():
    beam = LOCK["apache-beam"]
    assert re.search(rf"^ARG BASE_IMAGE=apache/beam_python3\.11_sdk:{re.escape(beam)}$",
                     DOCKERFILES["selfcorrect-verifier"], re.M)


def test_build_context_holds_only_what_the_dockerfiles_copy():
    """.dockerignore: a Docker build of the repo root sends no .venv, runs or caches."""
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1:] and "*" in ignore
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    for text in DOCKERFILES.values():
        for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
            assert src.rstrip("/") in allowed, src


def test_build_images_local_dry_run_uses_the_local_base_and_the_cpu_wheel():
    done = subprocess.run([sys.executable, str(REPO / "scripts/build_images.py"), "--dry-run",
                           "--local"], capture_output=True, text=True, cwd=REPO, check=True)
    lines = done.stdout.splitlines()
    assert len(lines) == len(images.IMAGES)
    for line in lines:
        assert line.startswith("podman build -f containers/")
        assert "--build-arg BASE_IMAGE=localhost/selfcorrect-local-base:bookworm" in line
        assert "--build-arg TORCH_SOURCE=--find-links /wheels" in line


def test_build_images_dry_run_builds_each_image_with_its_version_tag():
    done = subprocess.run([sys.executable, str(REPO / "scripts/build_images.py"), "--dry-run",
                           "--registry", "registry.example/team", "--push"],
                          capture_output=True, text=True, cwd=REPO, check=True)
    lines = done.stdout.splitlines()
    for name, dockerfile in images.IMAGES.items():
        tag = f"registry.example/team/{name}:{images.tag()}"
        assert f"docker build -f {dockerfile} -t {tag} --build-arg IMAGE_TAG={images.tag()} ." \
            in lines
        assert f"docker push {tag}" in lines
