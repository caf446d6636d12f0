"""submit / schedule / schedules through the real kfp.Client against a local stand-in of the
KFP v2beta1 REST API (tests/kfp_standin.py): there is no cluster on these machines."""
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import kfp_server_api
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kfp_standin import KfpStandIn  # noqa: E402

from selfcorrect import __version__, config  # noqa: E402
from selfcorrect.cli import main  # noqa: E402
from selfcorrect.pipelines import cluster  # noqa: E402
from selfcorrect.pipelines.compile import compile_components, version_name  # noqa: E402
from selfcorrect.pipelines.score import pipeline_arguments  # noqa: E402

SETS = ["--preset", "tiny", "--set", "output_dir=gs://bucket/runs",
        "--set", "data.n_train=8", "--set", "resources.cluster_credentials=true"]


@pytest.fixture
def api():
    with KfpStandIn() as server:
        yield server


def _versions(api, name):
    return [v for v in api.state.versions.values() if v.display_name == name]


def test_submit_uploads_a_named_version_and_runs_it_with_the_config(api, tmp_path, capsys):
    args = ["submit", "--host", api.url, "--experiment", "nightly", "--output", str(tmp_path),
            "--version-name", "0.1.0+gabc1234", *SETS]
    assert main(args) == 0
    out = capsys.readouterr().out
    (run,) = api.state.runs.values()
    assert f"run id: {run.run_id}" in out
    assert f"run url: {api.url}/#/runs/details/{run.run_id}" in out
    (version,) = _versions(api, "0.1.0+gabc1234")
    assert run.pipeline_version_reference.pipeline_version_id == version.pipeline_version_id
    assert api.state.experiments[run.experiment_id].display_name == "nightly"
    expected = pipeline_arguments(config.load("tiny", None, SETS[3::2], local=False))
    assert run.runtime_config.parameters == expected
    assert expected["data_n_train"] == 8 and expected["output_dir"] == "gs://bucket/runs"
    assert (tmp_path / f"selfcorrect-pipeline-{__version__}.yaml").exists()

    assert main(args) == 0                       # same code: the version is reused
    assert len(api.state.runs) == 2 and len(_versions(api, "0.1.0+gabc1234")) == 1
    assert len(api.state.pipelines) == 1


def test_submit_sends_values_as_given_and_warns_about_local_paths(api, tmp_path, capsys):
    args = ["submit", "--host", api.url, "--output", str(tmp_path), "--version-name", "0.1.0+l",
            "--preset", "testbed", "--set", "output_dir=gs://bucket/runs",
            "--service-account", "default-editor"]
    assert main(args) == 0
    (run,) = api.state.runs.values()
    sent = run.runtime_config.parameters
    assert sent["model_path"] == ".cache/assets/testbed"      # not this machine's absolute path
    assert "model.path: '.cache/assets/testbed': names a file on this machine" in \
        capsys.readouterr().err


def test_a_version_name_never_points_at_different_content(api, tmp_path):
    client = cluster.connect(api.url)
    first, other = compile_components(tmp_path)[:2]
    cluster.ensure_version(client, first, "0.1.0")
    with pytest.raises(cluster.ClusterError, match="already exists with different content"):
        cluster.ensure_version(client, other, "0.1.0")


def test_schedule_cron_and_every_pinned_to_the_version_then_list_and_delete(api, capsys):
    common = ["--host", api.url, "--version-name", "0.1.0+gabc1234", *SETS]
    assert main(["schedule", *common, "--cron", "0 3 * * 1", "--max-concurrency", "2",
                 "--no-catchup"]) == 0
    assert main(["schedule", *common, "--every", "1h30m"]) == 0
    cron, every = api.state.recurring.values()
    (version,) = _versions(api, "0.1.0+gabc1234")
    for rec in (cron, every):
        assert rec.pipeline_version_reference.pipeline_version_id == version.pipeline_version_id
        assert rec.runtime_config.parameters["data_n_train"] == 8
        assert rec.mode == "ENABLE" and rec.status == "ENABLED"
    assert cron.trigger.cron_schedule.cron == "0 0 3 * * 1"     # KFP's six fields
    assert cron.no_catchup is True and cron.max_concurrency == "2"
    assert int(every.trigger.periodic_schedule.interval_second) == 5400
    capsys.readouterr()

    assert main(["schedules", "list", "--host", api.url]) == 0
    listed = capsys.readouterr().out
    assert cron.recurring_run_id in listed and every.recurring_run_id in listed
    assert "2 recurring run(s)" in listed
    assert main(["schedules", "delete", cron.recurring_run_id, "--host", api.url]) == 0
    assert list(api.state.recurring) == [every.recurring_run_id]
    assert main(["schedules", "delete", cron.recurring_run_id, "--host", api.url]) == 1
    assert "404" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--cron", "0 3 * *"], "five fields"),
    (["--every", "soon"], "duration like"),
    (["--cron", "0 3 * * 1", "--every", "1h"], "one of --cron"),
    (["--every", "1h", "--max-concurrency", "11"], "between 1 and 10"),
])
def test_schedule_rejects_bad_options_before_contacting_the_api(api, capsys, extra, message):
    assert main(["schedule", "--host", api.url, *extra]) == 2
    assert message in capsys.readouterr().err
    assert api.state.log == []


def test_vertex_backend_names_the_extra_to_install(capsys):
    try:
        import google.cloud.aiplatform  # noqa: F401
        pytest.skip("google-cloud-aiplatform is installed")
    except ImportError:
        pass
    assert main(["submit", "--backend", "vertex", "--project", "p", "--region", "us-central1",
                 *SETS]) == 2
    assert "selfcorrect[vertex]" in capsys.readouterr().err


def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("body, why", [
    ({"display_name": "x", "experiment_id": "e", "pipelin_spec": {}}, "unknown field 'pipelin_spec'"),
    ({"display_name": 3}, "expected a string"),
    ({"display_name": "x", "runtime_config": {"parameters": []}}, "expected an object"),
    ({"display_name": "x", "state": "DONE"}, "is not one of"),
    ({"display_name": "x", "experiment_id": "nope"}, "experiment 'nope' not found"),
])
def test_standin_rejects_malformed_run_bodies(api, body, why):
    status, answer = _post(f"{api.url}/apis/v2beta1/runs", body)
    assert status in (400, 404) and why in answer["message"]


def test_standin_rejects_a_run_with_parameters_the_pipeline_lacks(api, tmp_path):
    client = cluster.connect(api.url)
    v = cluster.ensure_version(client, compile_components(tmp_path)[0], "0.1.0")
    exp = client.create_experiment("e")
    with pytest.raises(kfp_server_api.ApiException) as err:
        client.run_pipeline(exp.experiment_id, "r", params={"confg": {}},
                            pipeline_id=v.pipeline_id, version_id=v.pipeline_version_id)
    assert err.value.status == 400 and "confg" in err.value.body


def test_standin_rejects_a_run_whose_parameter_has_the_wrong_type(api, tmp_path):
    from selfcorrect.pipelines.compile import compile_pipeline

    client = cluster.connect(api.url)
    v = cluster.ensure_version(client, compile_pipeline(tmp_path), "0.1.0")
    exp = client.create_experiment("e")
    with pytest.raises(kfp_server_api.ApiException) as err:
        client.run_pipeline(exp.experiment_id, "r", params={"train_stage1_steps": "many"},
                            pipeline_id=v.pipeline_id, version_id=v.pipeline_version_id)
    assert err.value.status == 400 and "'train_stage1_steps' is NUMBER_INTEGER" in err.value.body


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True)


def test_version_name_follows_the_git_tree(tmp_path):
    assert version_name(tmp_path) == __version__                 # not a checkout
    _git(tmp_path, "init", "-q")
    (tmp_path / "f.txt").write_text("a")
    _git(tmp_path, "add", "f.txt")
    _git(tmp_path, "commit", "-qm", "one")
    sha = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=tmp_path, text=True,
                         capture_output=True).stdout.strip()
    assert version_name(tmp_path) == f"{__version__}+g{sha}"
    _git(tmp_path, "tag", f"v{__version__}")
    assert version_name(tmp_path) == __version__                 # the release
    (tmp_path / "f.txt").write_text("b")
    assert version_name(tmp_path) == f"{__version__}+g{sha}.dirty"
