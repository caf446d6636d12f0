"""Issue 20: multi-user Kubeflow and what a user sees when the API is not there, through the
real kfp.Client against the stand-in (tests/kfp_standin.py) in multi-user mode: the pipeline
is found in its namespace, `submit --wait` exits with the run's result, `--no-cache` runs a
version compiled without caching, and an unreachable host, a refused login or a refused
namespace is one line naming the host and the fix, exit code 2."""
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kfp_standin import KfpStandIn  # noqa: E402

from selfcorrect.cli import main  # noqa: E402
from selfcorrect.pipelines import cluster  # noqa: E402
from selfcorrect.pipelines.compile import compile_components  # noqa: E402

SETS = ["--preset", "tiny", "--set", "output_dir=gs://bucket/runs",
        "--set", "resources.cluster_credentials=true", "--version-name", "0.1.0+gabc1234"]


@pytest.fixture
def api():
    with KfpStandIn(namespaces={"team-a", "team-b"}, token="secret") as server:
        yield server


def _submit(api, *extra, namespace="team-a", token="secret"):
    return main(["submit", "--host", api.url, "--namespace", namespace, "--token", token,
                 *SETS, *extra])


def test_standin_lists_a_namespaced_pipeline_only_in_its_namespace(api, tmp_path):
    """What hid the bug: kfp's get_pipeline_id lists shared pipelines only."""
    client = cluster.connect(api.url, namespace="team-a", token="secret")
    package = compile_components(tmp_path)[0]
    client.upload_pipeline(str(package), pipeline_name="p", namespace="team-a")
    assert client.get_pipeline_id("p") is None
    assert cluster.find_pipeline(client, "p", "team-a") is not None
    assert cluster.find_pipeline(client, "p", "team-b") is None


def test_a_second_submit_finds_the_pipeline_in_its_namespace(api, capsys):
    assert _submit(api, "--poll", "0.01") == 0
    assert _submit(api) == 0                    # no second upload, no AlreadyExists
    (pipeline,) = api.state.pipelines.values()
    assert pipeline.namespace == "team-a"
    assert len([v for v in api.state.versions.values() if v.display_name == "0.1.0+gabc1234"]) == 1
    assert len(api.state.runs) == 2
    assert all(api.state.experiments[r.experiment_id].namespace == "team-a"
               for r in api.state.runs.values())


@pytest.mark.parametrize("end, code", [("SUCCEEDED", 0), ("FAILED", 1)])
def test_submit_wait_follows_the_run_and_exits_with_its_result(api, capsys, end, code):
    api.state.run_states = ["RUNNING", end]
    assert _submit(api, "--wait", "--poll", "0.01") == code
    out = capsys.readouterr()
    assert "run state: RUNNING" in out.out
    assert f"run state: {end}" in out.out
    (run,) = api.state.runs.values()
    assert run.state == end
    if end == "FAILED":
        assert "run error: train-stage2: exit code 1" in out.err


def test_submit_wait_gives_up_after_its_timeout(api, capsys):
    api.state.run_states = ["RUNNING"] * 1000
    assert _submit(api, "--wait", "--poll", "0.01", "--wait-timeout", "0.05") == 3
    assert "still RUNNING after --wait-timeout" in capsys.readouterr().err


def test_no_cache_runs_a_version_compiled_without_caching(api, capsys):
    assert _submit(api, "--no-cache") == 0
    (run,) = api.state.runs.values()
    version = next(v for v in api.state.versions.values()
                   if v.pipeline_version_id == run.pipeline_version_reference.pipeline_version_id)
    assert version.display_name == "0.1.0+gabc1234.no-cache"
    spec = version.pipeline_spec["pipeline_spec"]
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    cached = [name for dag in dags for name, t in dag["tasks"].items()
              if t.get("cachingOptions", {}).get("enableCache")]
    assert cached == []
    assert _submit(api) == 0                   # the cached pipeline is a version of its own
    assert {v.display_name for v in api.state.versions.values()} >= {
        "0.1.0+gabc1234", "0.1.0+gabc1234.no-cache"}


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()
             and not line.startswith("warning:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_a_refused_login_is_one_line_naming_the_host(api, capsys):
    assert _submit(api, token="wrong") == 2
    line = _one_line(capsys.readouterr().err)
    assert api.url in line and "refused the login (401" in line and "--token" in line
    assert api.state.runs == {} and api.state.pipelines == {}


def test_a_namespace_the_api_refuses_is_one_line_naming_host_and_fix(api, capsys):
    assert _submit(api, namespace="team-z") == 2
    line = _one_line(capsys.readouterr().err)
    assert api.url in line and "namespace 'team-z'" in line and "kubectl get profiles" in line
    assert api.state.pipelines == {}


def test_multi_user_without_a_namespace_says_to_pass_one(api, capsys):
    assert main(["submit", "--host", api.url, "--token", "secret", *SETS]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "multi-user Kubeflow: pass --namespace" in line and api.url in line


def test_an_unreachable_host_is_one_line_naming_it(capsys):
    with socket.socket() as s:                      # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    assert main(["submit", "--host", host, *SETS]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot reach the KFP API at {host}") and "--host" in line
    assert main(["schedules", "list", "--host", host]) == 2
    assert host in _one_line(capsys.readouterr().err)
