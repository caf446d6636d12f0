"""Submit and schedule the compiled pipeline on Kubeflow Pipelines (kfp.Client) or Vertex AI.

`selfcorrect submit | schedule | schedules list | schedules delete ID`. The pipeline is uploaded
once as `selfcorrect-score`; each code version becomes a pipeline version named by
`compile.version_name()`; runs and recurring runs are pinned to that version and take the run
configuration as the pipeline's parameters, one per config key (`pipeline_arguments`; new data:
`--set data.path=gs://...` is the run's `data_path`, no new pipeline).
Authentication is kfp.Client's own: host, token, service-account token file, namespace; with
no --host inside a cluster kfp.Client finds the in-cluster API. On multi-user Kubeflow the
pipeline lives in --namespace and is looked up there (kfp's get_pipeline_id sees shared
pipelines only).

Before anything is compiled, uploaded or connected, the run config passes
selfcorrect.cluster_checks (a rank's split of a step, a remote output_dir, credentials for
each bucket): an error refuses with the key, the value and the fix (exit 2). An unreachable
host, a refused login or a namespace the API will not serve is one line naming the host and
what to check (exit 2). `submit --wait` follows the run and exits 0 when it SUCCEEDED, 1 when
it ended otherwise, 3 when --wait-timeout passed first.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from selfcorrect import __version__
from selfcorrect.config import ConfigError
from selfcorrect.pipelines import PIPELINE_NAME

PIPELINE = PIPELINE_NAME
VERTEX_PIN = "google-cloud-aiplatform==1.165.1"


class ClusterError(RuntimeError):
    pass


TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")


def _eq_filter(value: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                       "stringValue": value}]})


def connect(host=None, namespace=None, token=None, sa_token_path=None, ssl_ca_cert=None,
            ui_host=None):
    """A kfp.Client with its own auth options (nothing added)."""
    import warnings

    import kfp

    class Client(kfp.Client):
        def get_kfp_healthz(self, sleep_duration: int = 5):
            """Once: kfp.Client retries 5 times, 5 s apart, on a refused login too."""
            return self._healthz_api.healthz_service_get_healthz()

    credentials = None
    if sa_token_path:
        credentials = kfp.client.ServiceAccountTokenVolumeCredentials(path=sa_token_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client = Client(host=host, namespace=namespace or "kubeflow", existing_token=token,
                        credentials=credentials, ssl_ca_cert=ssl_ca_cert, ui_host=ui_host)
    if client.get_kfp_healthz().multi_user and not (namespace or client.get_user_namespace()):
        raise ClusterError(f"{host or 'the KFP API'} is a multi-user Kubeflow: pass --namespace "
                           "with your profile's namespace (kubectl get profiles)")
    return client


def find_pipeline(client, name: str, namespace: str | None = None) -> str | None:
    """The id of the pipeline `name` in `namespace` (None: the shared ones), or None."""
    listed = client.list_pipelines(filter=_eq_filter(name), namespace=namespace, page_size=100)
    found = [p for p in listed.pipelines or [] if p.display_name == name]
    return found[0].pipeline_id if found else None


def version_for(package: Path, name: str | None = None, caching: bool = True) -> str:
    """The version name; an uncommitted tree adds the YAML's digest, so edits never collide;
    a pipeline compiled without caching (--no-cache) is its own version, `<name>.no-cache`."""
    from selfcorrect.pipelines.compile import version_name

    name = name or version_name()
    if name.endswith(".dirty"):
        name += "." + hashlib.sha256(package.read_bytes()).hexdigest()[:8]
    return name if caching else name + ".no-cache"


def ensure_version(client, package: Path, name: str, namespace: str | None = None):
    """Upload the pipeline (first time) and this version of it (unless it exists); returns it."""
    import yaml

    desc = f"SCoRe self-correction training, selfcorrect {__version__}"
    pipeline_id = find_pipeline(client, PIPELINE, namespace)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=PIPELINE,
                                             description=desc, namespace=namespace).pipeline_id
    found = client.list_pipeline_versions(pipeline_id, filter=_eq_filter(name)).pipeline_versions
    if found:
        spec = found[0].pipeline_spec
        docs = [d for d in yaml.safe_load_all(package.read_text()) if d is not None]
        # the API returns {pipeline_spec, platform_spec} when the YAML carries a platform spec
        stored = docs[0] if len(docs) == 1 else {"pipeline_spec": docs[0], "platform_spec": docs[1]}
        if spec is not None and spec != stored:
            raise ClusterError(f"pipeline version {name!r} already exists with different "
                               "content; commit your change or pass --version-name")
        return found[0]
    return client.upload_pipeline_version(str(package), name, pipeline_id=pipeline_id,
                                          description=desc)


def compile_for_cluster(output_dir: str | None, resources=None,
                        kubernetes_platform: bool = True, caching: bool = True) -> Path:
    """Compile with the default config as the parameters' defaults (the run passes its own
    values) and the run config's resource requests, which KFP fixes at compile time; Vertex
    AI takes no Kubernetes platform spec (kubernetes_platform=False); caching=False: no step
    is cached (a run-level switch KFP ignores for a pipeline version)."""
    from selfcorrect.pipelines.compile import compile_pipeline

    return compile_pipeline(output_dir or tempfile.mkdtemp(prefix="selfcorrect-"),
                            resources=resources, kubernetes_platform=kubernetes_platform,
                            caching=caching)


def parse_every(text: str) -> int:
    """'90s', '30m', '6h', '1d', '1h30m' -> seconds."""
    parts = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or not parts:
        raise ClusterError(f"--every {text!r}: use a duration like 30m, 6h, 1d or 1h30m")
    d, h, m, s = (int(x or 0) for x in parts.groups())
    seconds = ((d * 24 + h) * 60 + m) * 60 + s
    if seconds <= 0:
        raise ClusterError(f"--every {text!r}: must be longer than 0 s")
    return seconds


def kfp_cron(expr: str) -> str:
    """KFP's cron has six fields, seconds first; a standard five-field cron gets second 0."""
    fields = expr.split()
    if len(fields) == 5:
        return "0 " + " ".join(fields)
    if len(fields) == 6:
        return " ".join(fields)
    raise ClusterError(f"--cron {expr!r}: five fields (min hour day month weekday) or six "
                       "(seconds first)")


def _ui(args) -> str:
    return (args.ui_host or args.host or "/pipeline").rstrip("/")


def _warn(line: str) -> None:
    print(line, file=sys.stderr)


def _prepare(args):
    from selfcorrect import cluster_checks, config, images

    # values as given: nothing of this machine (absolute paths) goes into a cluster run
    cfg = config.load(args.preset, args.config, args.overrides, local=False)
    # what a rank or the last step would find in its pod: refused here, before any upload
    cluster_checks.refuse(cfg, _warn, service_account=args.service_account,
                          backend=args.backend)
    from selfcorrect.pipelines.score import pipeline_arguments

    arguments = pipeline_arguments(cfg)
    if args.backend == "vertex":
        from selfcorrect.pipelines.placement import vertex_drops

        dropped = vertex_drops(cfg)
        if dropped:
            _warn("warning: Vertex AI reads no Kubernetes platform spec; this run drops "
                  + ", ".join(dropped))
    if images.tag().endswith(".dirty"):
        _warn(f"warning: uncommitted changes: the images are tagged {images.tag()}, which "
              "scripts/build_images.py never pushes; commit and build the images first")
    with images.use_registry(args.registry):
        package = compile_for_cluster(args.output, cfg.resources,
                                      kubernetes_platform=args.backend != "vertex",
                                      caching=not args.no_cache)
    return arguments, package, version_for(package, args.version_name, not args.no_cache)


def _kfp_target(args, package: Path, version: str):
    """The client, the uploaded pipeline version and the experiment a run or schedule goes to."""
    client = _client(args)
    v = ensure_version(client, package, version, args.namespace)
    return client, v, client.create_experiment(args.experiment, namespace=args.namespace)


def submit(args) -> int:
    if args.wait and args.backend == "vertex":
        raise ClusterError("--wait follows Kubeflow Pipelines runs only (not verified on Vertex "
                           "AI); drop it and follow the printed run URL")
    arguments, package, version = _prepare(args)
    if args.backend == "vertex":
        return vertex_submit(args, arguments, package, version)
    client, v, experiment = _kfp_target(args, package, version)
    run = client.run_pipeline(
        experiment.experiment_id, args.run_name or f"{PIPELINE} {version} "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}", params=arguments,
        pipeline_id=v.pipeline_id, version_id=v.pipeline_version_id,
        pipeline_root=args.pipeline_root, service_account=args.service_account)
    print(f"pipeline version: {version} ({v.pipeline_version_id})")
    print(f"run id: {run.run_id}")
    print(f"run url: {_ui(args)}/#/runs/details/{run.run_id}", flush=True)
    return follow(client, run.run_id, args.wait_timeout, args.poll) if args.wait else 0


def follow(client, run_id: str, timeout_s: float, poll_s: float) -> int:
    """Print the run's state as it changes until it ends: 0 SUCCEEDED, 1 any other end,
    3 still running after timeout_s."""
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        run = client.get_run(run_id)
        if run.state != last:
            print(f"run state: {run.state}", flush=True)
            last = run.state
        if run.state in TERMINAL:
            if run.state != "SUCCEEDED" and run.error:
                print(f"run error: {getattr(run.error, 'message', run.error)}", file=sys.stderr)
            return 0 if run.state == "SUCCEEDED" else 1
        if time.monotonic() >= deadline:
            print(f"error: run {run_id} still {run.state} after --wait-timeout {timeout_s:g} s",
                  file=sys.stderr)
            return 3
        time.sleep(poll_s)


def schedule(args) -> int:
    if (args.cron is None) == (args.every is None):
        raise ClusterError("give one of --cron EXPR and --every DURATION")
    if not 1 <= args.max_concurrency <= 10:
        raise ClusterError("--max-concurrency: between 1 and 10 (the KFP API's limit)")
    cron = kfp_cron(args.cron) if args.cron else None
    every = parse_every(args.every) if args.every else None
    arguments, package, version = _prepare(args)
    if args.backend == "vertex":
        return vertex_schedule(args, arguments, package, version)
    client, v, experiment = _kfp_target(args, package, version)
    rec = client.create_recurring_run(
        experiment.experiment_id, args.run_name or f"{PIPELINE} {version} retrain",
        description=f"recurring SCoRe training pinned to pipeline version {version}",
        cron_expression=cron, interval_second=every, max_concurrency=args.max_concurrency,
        no_catchup=args.no_catchup, params=arguments, pipeline_id=v.pipeline_id,
        version_id=v.pipeline_version_id, pipeline_root=args.pipeline_root,
        service_account=args.service_account)
    print(f"pipeline version: {version} ({v.pipeline_version_id})")
    print(f"recurring run id: {rec.recurring_run_id}")
    print(f"schedule: {f'cron {cron}' if cron else f'every {every} s'}, max concurrency "
          f"{args.max_concurrency}, catchup {'off' if args.no_catchup else 'on'}")
    print(f"url: {_ui(args)}/#/recurringrun/details/{rec.recurring_run_id}")
    return 0


def schedules(args) -> int:
    client = _client(args)
    if args.action == "delete":
        for rid in args.ids:
            client.delete_recurring_run(rid)
            print(f"deleted {rid}")
        return 0
    exp_id = (client.get_experiment(experiment_name=args.experiment,
                                    namespace=args.namespace).experiment_id
              if args.experiment else None)
    listed = client.list_recurring_runs(page_size=100, experiment_id=exp_id,
                                        namespace=args.namespace if not exp_id else None)
    rows = listed.recurring_runs or []
    for r in rows:
        t = r.trigger
        when = (f"cron {t.cron_schedule.cron}" if t and t.cron_schedule
                else f"every {t.periodic_schedule.interval_second} s" if t else "?")
        ref = r.pipeline_version_reference
        print(f"{r.recurring_run_id}  {r.status or '?':8}  {when:22}  {r.display_name}  "
              f"version={ref.pipeline_version_id if ref else 'inline'}")
    print(f"{len(rows)} recurring run(s)")
    return 0


def _client(args):
    return connect(args.host, args.namespace, args.token, args.sa_token_path, args.ssl_ca_cert,
                   args.ui_host)


def _aiplatform():
    try:
        from google.cloud import aiplatform
    except ImportError:
        raise ClusterError("--backend vertex needs google-cloud-aiplatform: "
                           f"pip install 'selfcorrect[vertex]' (or '{VERTEX_PIN}')") from None
    return aiplatform


def _vertex_job(args, arguments, package, version):
    if not (args.project and args.region):
        raise ClusterError("--backend vertex needs --project and --region")
    aiplatform = _aiplatform()
    aiplatform.init(project=args.project, location=args.region)
    label = re.sub(r"[^a-z0-9_-]", "-", version.lower())
    return aiplatform.PipelineJob(
        display_name=args.run_name or f"{PIPELINE}-{label}", template_path=str(package),
        pipeline_root=args.pipeline_root, parameter_values=arguments,
        labels={"selfcorrect-version": label})


def vertex_submit(args, arguments, package, version) -> int:
    job = _vertex_job(args, arguments, package, version)
    job.submit(service_account=args.service_account)
    print(f"pipeline version: {version}")
    print(f"run id: {job.resource_name}")
    print(f"run url: https://console.cloud.google.com/vertex-ai/locations/{args.region}"
          f"/pipelines/runs/{job.name}?project={args.project}")
    return 0


def vertex_schedule(args, arguments, package, version) -> int:
    if not args.cron:
        raise ClusterError("Vertex AI schedules take --cron (five fields), not --every")
    job = _vertex_job(args, arguments, package, version)
    sched = job.create_schedule(cron=args.cron, display_name=f"{PIPELINE}-{version} retrain",
                                max_concurrent_run_count=args.max_concurrency,
                                service_account=args.service_account)
    print(f"schedule id: {sched.resource_name}")
    return 0


def _connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (kfp.Client's options)")
    g.add_argument("--host", help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT, or the "
                                  "in-cluster service)")
    g.add_argument("--namespace", help="profile namespace on multi-user Kubeflow")
    g.add_argument("--token", help="bearer token (kfp.Client existing_token)")
    g.add_argument("--sa-token-path", help="service-account token file (kfp.Client "
                   "ServiceAccountTokenVolumeCredentials)")
    g.add_argument("--ssl-ca-cert", help="CA bundle for the endpoint")
    g.add_argument("--ui-host", help="UI address for printed links (default: --host)")
    p.add_argument("--experiment", default="selfcorrect", help="experiment name (default: "
                   "selfcorrect)")


def _job_args(p: argparse.ArgumentParser) -> None:
    from selfcorrect.cli import _config_args, registry_arg

    _config_args(p)
    _connection_args(p)
    p.add_argument("--backend", choices=["kfp", "vertex"], default="kfp")
    p.add_argument("--project", help="Vertex AI: Google Cloud project")
    p.add_argument("--region", help="Vertex AI: region, e.g. us-central1")
    p.add_argument("--pipeline-root", help="where step artifacts go (e.g. gs://bucket/root)")
    p.add_argument("--service-account", help="service account the run's pods use")
    p.add_argument("--run-name", help="display name of the run or recurring run")
    p.add_argument("--version-name", help="override the pipeline version name "
                   "(default: from the package version and git commit)")
    p.add_argument("--output", help="also keep the compiled YAML in this folder")
    p.add_argument("--no-cache", action="store_true", help="run every step afresh: compiles "
                   "the pipeline with caching off, uploaded as version <name>.no-cache")
    registry_arg(p)


def _host(args) -> str:
    import os

    return (getattr(args, "host", None) or os.environ.get("KF_PIPELINES_ENDPOINT")
            or "the in-cluster KFP API")


def api_error(e, args) -> tuple[str, int]:
    """One line for an exception from kfp.Client (and the exit code), or None to re-raise."""
    import kfp_server_api
    import urllib3

    host = _host(args)
    if isinstance(e, urllib3.exceptions.HTTPError):
        reason = getattr(e, "reason", None) or e
        return (f"error: cannot reach the KFP API at {host} ({type(reason).__name__}); check "
                "--host (or $KF_PIPELINES_ENDPOINT), that the API answers there and any "
                "port-forward, e.g. kubectl port-forward -n kubeflow svc/ml-pipeline-ui "
                "8080:80", 2)
    if not isinstance(e, kfp_server_api.ApiException):
        return None
    detail = _message(e.body)
    namespace = getattr(args, "namespace", None)
    if e.status == 401:
        return (f"error: the KFP API at {host} refused the login (401 {e.reason}: {detail}); "
                "pass --token (or --sa-token-path), or renew the token", 2)
    if e.status == 403:
        where = f"namespace {namespace!r}" if namespace else "this request"
        return (f"error: the KFP API at {host} refused access to {where} (403 {e.reason}: "
                f"{detail}); check --namespace is your profile's namespace (kubectl get "
                "profiles) and that the token (--token, --sa-token-path) is a member's", 2)
    if e.status == 404 and namespace and "namespace" in detail.lower():
        return (f"error: the KFP API at {host} has no namespace {namespace!r} ({detail}); "
                "pass --namespace with your profile's namespace (kubectl get profiles)", 2)
    return f"error: the KFP API at {host} answered {e.status} {e.reason}: {detail}", 1


def _message(body) -> str:
    try:
        return json.loads(body).get("message") or str(body)
    except (TypeError, ValueError, AttributeError):
        return str(body)


def _main(build, action, argv) -> int:
    parser = argparse.ArgumentParser(prog=f"selfcorrect {build.__name__.strip('_')}",
                                     description=__doc__.split("\n")[0])
    build(parser)
    args = parser.parse_args(argv)
    try:
        return action(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (ClusterError, ValueError) as e:   # kfp.Client raises ValueError for bad names
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the API's answer (or its absence), said in one line
        said = api_error(e, args)
        if said is None:
            raise
        print(said[0], file=sys.stderr)
        return said[1]


def submit_(p):
    _job_args(p)
    p.add_argument("--wait", action="store_true", help="follow the run until it ends; exit 0 "
                   "when it SUCCEEDED, 1 otherwise, 3 after --wait-timeout")
    p.add_argument("--wait-timeout", type=float, default=7 * 24 * 3600, metavar="SECONDS",
                   help="with --wait: give up after this long (default: 7 days)")
    p.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                   help="with --wait: seconds between state checks (default: 30)")


def schedule_(p):
    _job_args(p)
    p.add_argument("--cron", help="cron expression: five fields, or KFP's six (seconds first)")
    p.add_argument("--every", help="interval instead of cron: 30m, 6h, 1d, 1h30m")
    p.add_argument("--max-concurrency", type=int, default=1, help="runs at once (1-10)")
    p.add_argument("--no-catchup", action="store_true",
                   help="after a pause, run once instead of backfilling each missed interval")


def schedules_(p):
    sub = p.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="list recurring runs (of --experiment if given)")
    _connection_args(listing)
    listing.set_defaults(experiment=None)
    delete = sub.add_parser("delete", help="delete recurring runs by id")
    _connection_args(delete)
    delete.add_argument("ids", nargs="+")


def main_submit(argv=None) -> int:
    return _main(submit_, submit, argv)


def main_schedule(argv=None) -> int:
    return _main(schedule_, schedule, argv)


def main_schedules(argv=None) -> int:
    return _main(schedules_, schedules, argv)
