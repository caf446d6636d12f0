"""Issue 20: image tags follow the code (OCI-valid `0.1.0-g<commit>`), the tag recorded at
image build wins over git, and `--registry` names the images of a compiled pipeline."""
import subprocess

import pytest

from selfcorrect import __version__, images
from selfcorrect.cli import main
from selfcorrect.pipelines.compile import component_file, version_name
from compiled import read_spec


def _git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_tag_carries_the_commit_in_an_oci_valid_form(tmp_path):
    assert images.tag_from_git(tmp_path) == __version__                 # not a checkout
    _git(tmp_path, "init", "-q")
    (tmp_path / "f.txt").write_text("a")
    _git(tmp_path, "add", "f.txt")
    _git(tmp_path, "commit", "-qm", "one")
    sha = _git(tmp_path, "rev-parse", "--short=7", "HEAD")
    assert images.tag_from_git(tmp_path) == f"{__version__}-g{sha}"
    assert version_name(tmp_path) == f"{__version__}+g{sha}"           # the same commit
    (tmp_path / "f.txt").write_text("b")
    assert images.tag_from_git(tmp_path) == f"{__version__}-g{sha}.dirty"
    for tag in (images.tag_from_git(tmp_path), f"{__version__}-g{sha}"):
        assert images.OCI_TAG.fullmatch(tag) and "+" not in tag
    _git(tmp_path, "commit", "-qam", "two")
    _git(tmp_path, "tag", f"v{__version__}")
    assert images.tag_from_git(tmp_path) == __version__                # the release


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """An image's package: IMAGE_TAG beside selfcorrect/images.py, written at build time."""
    path = tmp_path / "IMAGE_TAG"
    monkeypatch.setattr(images, "TAG_FILE", path)
    images.tag.cache_clear()
    yield path
    images.tag.cache_clear()


def test_the_recorded_tag_wins_over_git_and_names_every_image(recorded, tmp_path):
    recorded.write_text("0.1.0-gdeadbee\n")
    assert images.tag() == "0.1.0-gdeadbee"
    assert images.image("selfcorrect-trainer").endswith("/selfcorrect-trainer:0.1.0-gdeadbee")
    assert main(["compile", "--output", str(tmp_path / "dist")]) == 0
    path = tmp_path / "dist" / f"selfcorrect-pipeline-{__version__}.yaml"
    used = {e["container"]["image"] for e in read_spec(path)["deploymentSpec"]["executors"].values()}
    assert {u.rsplit(":", 1)[1] for u in used} == {"0.1.0-gdeadbee"}


def test_a_recorded_tag_that_is_no_oci_tag_is_an_error(recorded):
    recorded.write_text("0.1.0+gdeadbee")
    with pytest.raises(ValueError, match="is no OCI tag; rebuild the image"):
        images.tag()


def test_registry_option_names_the_pipeline_and_component_images(tmp_path, monkeypatch):
    monkeypatch.delenv("SELFCORRECT_REGISTRY", raising=False)
    assert main(["compile", "--output", str(tmp_path), "--registry", "us-docker.pkg.dev/p/r/"]) == 0
    ir = read_spec(tmp_path / f"selfcorrect-pipeline-{__version__}.yaml")
    used = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert used == {f"us-docker.pkg.dev/p/r/{n}:{images.tag()}" for n in images.IMAGES}
    component = read_spec(component_file(tmp_path, "train_stage1"))
    (executor,) = component["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == f"us-docker.pkg.dev/p/r/selfcorrect-trainer:{images.tag()}"
