"""Submit and schedule the compiled pipeline on Kubeflow Pipelines (kfp.Client) or Vertex AI.

`selfcorrect submit | schedule | schedules list | schedules delete ID`. The pipeline is uploaded
once as `selfcorrect-score`; each code version becomes a pipeline version named by
`compile.version_name()`; runs and recurring runs are pinned to that version and take the run
configuration as the pipeline's parameters, one per config key (`pipeline_arguments`; new data:
`--set data.path=gs://...` is the run's `data_path`, no new pipeline).
Authentication is kfp.Client's own: host, token, service-account token file, namespace; with
no --host inside a cluster kfp.Client finds the in-cluster API.
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

PIPELINE = "selfcorrect-score"
VERTEX_PIN = "google-cloud-aiplatform==1.165.1"


class ClusterError(RuntimeError):
    pass


def _eq_filter(value: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                       "stringValue": value}]})


def connect(host=None, namespace=None, token=None, sa_token_path=None, ssl_ca_cert=None,
            ui_host=None):
    """A kfp.Client with its own auth options (nothing added)."""
    import warnings

    import kfp

    credentials = None
    if sa_token_path:
        credentials = kfp.client.ServiceAccountTokenVolumeCredentials(path=sa_token_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token,
                          credentials=credentials, ssl_ca_cert=ssl_ca_cert, ui_host=ui_host)


def version_for(package: Path, name: str | None = None) -> str:
    """The version name; an uncommitted tree adds the YAML's digest, so edits never collide."""
    from selfcorrect.pipelines.compile import version_name

    name = name or version_name()
    if name.endswith(".dirty"):
        name += "." + hashlib.sha256(package.read_bytes()).hexdigest()[:8]
    return name


def ensure_version(client, package: Path, name: str, namespace: str | None = None):
    """Upload the pipeline (first time) and this version of it (unless it exists); returns it."""
    import yaml

    desc = f"SCoRe self-correction training, selfcorrect {__version__}"
    pipeline_id = client.get_pipeline_id(PIPELINE)
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
                        kubernetes_platform: bool = True) -> Path:
    """Compile with the default config as the parameters' defaults (the run passes its own
    values) and the run config's resource requests, which KFP fixes at compile time; Vertex
    AI takes no Kubernetes platform spec (kubernetes_platform=False)."""
    from selfcorrect.pipelines.compile import compile_pipeline

    return compile_pipeline(output_dir or tempfile.mkdtemp(prefix="selfcorrect-"),
                            resources=resources, kubernetes_platform=kubernetes_platform)


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


def _prepare(args):
    from selfcorrect import config

    # values as given: nothing of this machine (absolute paths) goes into a cluster run
    cfg = config.load(args.preset, args.config, args.overrides, local=False)
    for key in config.machine_paths(cfg):
        print(f"warning: {key} names a file on this machine; a cluster's pods will not find "
              "it: use gs://, s3:// or (model.path) a hub name", file=sys.stderr)
    package = compile_for_cluster(args.output, cfg.resources,
                                  kubernetes_platform=getattr(args, "backend", "kfp") != "vertex")
    from selfcorrect.pipelines.score import pipeline_arguments

    return pipeline_arguments(cfg), package, version_for(package, args.version_name)


def _kfp_target(args, package: Path, version: str):
    """The client, the uploaded pipeline version and the experiment a run or schedule goes to."""
    client = _client(args)
    v = ensure_version(client, package, version, args.namespace)
    return client, v, client.create_experiment(args.experiment, namespace=args.namespace)


def submit(args) -> int:
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
    print(f"run url: {_ui(args)}/#/runs/details/{run.run_id}")
    return 0


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
    from selfcorrect.cli import _config_args

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
    except Exception as e:  # the API's answer, said plainly
        import kfp_server_api

        if isinstance(e, kfp_server_api.ApiException):
            print(f"error: the KFP API answered {e.status} {e.reason}: {e.body}", file=sys.stderr)
            return 1
        raise


def submit_(p):
    _job_args(p)


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
