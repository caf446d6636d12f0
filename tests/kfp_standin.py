"""A local stand-in for the KFP v2beta1 REST API, for tests: no cluster here.

Serves the endpoints kfp.Client calls to upload pipelines and versions, find them, create
experiments, runs and recurring runs, list and delete recurring runs, and healthz, on
127.0.0.1 with a free port. Every JSON body is checked strictly against the kfp_server_api
model it must deserialise into (unknown fields, wrong types and bad enum values are a 400),
every uploaded package must parse as a PipelineSpec, and references must exist (404) and be
consistent (400), the way the real API server answers. Responses are kfp_server_api models.

Multi-user mode (`KfpStandIn(namespaces={"team-a"}, token="t")`), as the real API: a request
without the bearer token is a 401; a namespace outside `namespaces` a 403; experiments need a
namespace; pipelines belong to the namespace they were uploaded to (names unique per
namespace) and are listed only when that namespace is asked for (without one: the shared
ones). A run is PENDING when created and moves one state per GET along `State.run_states`
(RUNNING, then SUCCEEDED unless a test sets another end).
"""
from __future__ import annotations

import datetime
import email.parser
import email.policy
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import kfp_server_api
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

API = "/apis/v2beta1"
INT64 = {"max_concurrency", "interval_second"}   # int64: JSON number or string
_client = kfp_server_api.ApiClient()


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def check(data, typ: str, where: str = "body", field: str = ""):
    """Check `data` strictly against a kfp_server_api type name; raise ApiError(400) if not."""
    bad = lambda why: ApiError(400, f"{where}: {why}")  # noqa: E731
    if data is None or typ == "object":
        return
    if typ.startswith("list["):
        if not isinstance(data, list):
            raise bad(f"expected a list, got {type(data).__name__}")
        for i, item in enumerate(data):
            check(item, typ[5:-1], f"{where}[{i}]")
        return
    if typ.startswith("dict("):
        if not isinstance(data, dict):
            raise bad(f"expected an object, got {type(data).__name__}")
        for k, v in data.items():
            check(v, typ[typ.index(",") + 1:-1].strip(), f"{where}.{k}")
        return
    if typ == "str":
        ok = isinstance(data, str) or (field in INT64 and isinstance(data, int)
                                       and not isinstance(data, bool))
        if not ok:
            raise bad(f"expected a string, got {data!r}")
        if field in INT64 and not str(data).lstrip("-").isdigit():
            raise bad(f"expected an int64, got {data!r}")
        return
    if typ in ("bool", "int", "float"):
        if type(data).__name__ != typ and not (typ == "float" and isinstance(data, int)):
            raise bad(f"expected {typ}, got {data!r}")
        return
    if typ == "datetime":
        try:
            datetime.datetime.fromisoformat(str(data).replace("Z", "+00:00"))
        except ValueError:
            raise bad(f"not an RFC 3339 time: {data!r}") from None
        return
    klass = getattr(kfp_server_api.models, typ)
    if hasattr(klass, "allowable_values"):
        if data not in klass.allowable_values:
            raise bad(f"{data!r} is not one of {klass.allowable_values}")
        return
    if not isinstance(data, dict):
        raise bad(f"expected a {typ} object, got {type(data).__name__}")
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    for key, value in data.items():
        if key not in by_json:
            raise bad(f"unknown field {key!r} for {typ}")
        check(value, klass.openapi_types[by_json[key]], f"{where}.{key}", by_json[key])


def parse(data: dict, typ: str):
    """Strict check, then the kfp_server_api model."""
    check(data, typ)
    return _client._ApiClient__deserialize(data, typ)


def pipeline_spec(doc) -> dict:
    """The IR must parse as a PipelineSpec proto (no unknown fields)."""
    if not isinstance(doc, dict):
        raise ApiError(400, "pipeline spec: expected a mapping")
    try:
        json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())
    except json_format.ParseError as e:
        raise ApiError(400, f"invalid pipeline spec: {e}") from None
    return doc


def uploaded_spec(payload: bytes) -> dict:
    """An uploaded package as the API server keeps and returns it: the PipelineSpec, or, when
    the YAML carries a Kubernetes platform spec as its second document (kfp-kubernetes),
    {"pipeline_spec": ..., "platform_spec": ...}, each checked against its proto."""
    docs = [d for d in yaml.safe_load_all(payload) if d is not None]
    if len(docs) == 1:
        return pipeline_spec(docs[0])
    if len(docs) != 2 or not isinstance(docs[1], dict):
        raise ApiError(400, f"uploadfile: expected a pipeline spec and at most one platform "
                            f"spec, got {len(docs)} documents")
    try:
        json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    except json_format.ParseError as e:
        raise ApiError(400, f"invalid platform spec: {e}") from None
    return {"pipeline_spec": pipeline_spec(docs[0]), "platform_spec": docs[1]}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _filter(items: list, raw: str | None) -> list:
    if not raw:
        return items
    out = items
    for p in json.loads(raw).get("predicates", []):
        if p.get("operation") not in ("EQUALS", 1):
            raise ApiError(400, f"stand-in supports EQUALS filters only, got {p}")
        out = [i for i in out if getattr(i, p["key"]) == p.get("stringValue", p.get("string_value"))]
    return out


class State:
    """What the server holds: kfp_server_api model objects by id."""

    def __init__(self):
        self.pipelines: dict = {}
        self.versions: dict = {}        # version id -> V2beta1PipelineVersion
        self.experiments: dict = {}
        self.runs: dict = {}
        self.recurring: dict = {}
        self.log: list = []              # (method, path) of every request
        self.lock = threading.Lock()
        self.namespaces: set | None = None     # None: single-user (no namespace checks)
        self.token: str | None = None
        self.run_states = ["RUNNING", "SUCCEEDED"]

    def namespace(self, name: str | None, what: str) -> str | None:
        """A request's namespace, checked the way multi-user Kubeflow's authorisation does."""
        if self.namespaces is None:
            return name or None
        if not name:
            raise ApiError(400, f"{what}: a namespace is required in multi-user mode")
        if name not in self.namespaces:
            raise ApiError(403, f"PermissionDenied: user is not authorized to access "
                                f"namespace {name!r}")
        return name

    def add_version(self, pipeline_id: str, name: str, spec: dict, description=None):
        if any(v.pipeline_id == pipeline_id and v.display_name == name
               for v in self.versions.values()):
            raise ApiError(409, f"pipeline version {name!r} already exists in {pipeline_id}")
        v = kfp_server_api.V2beta1PipelineVersion(
            pipeline_id=pipeline_id, pipeline_version_id=str(uuid.uuid4()), display_name=name,
            name=name, description=description, created_at=_now(), pipeline_spec=spec)
        self.versions[v.pipeline_version_id] = v
        return v

    def job_source(self, body, what: str) -> dict:
        """A run's pipeline: a version reference that exists, or an inline spec; not both."""
        if not body.experiment_id or body.experiment_id not in self.experiments:
            raise ApiError(404, f"{what}: experiment {body.experiment_id!r} not found")
        ref = body.pipeline_version_reference
        if (ref is None) == (body.pipeline_spec is None):
            raise ApiError(400, f"{what}: give exactly one of pipeline_spec and "
                                "pipeline_version_reference")
        if ref is None:
            return pipeline_spec(body.pipeline_spec)
        v = self.versions.get(ref.pipeline_version_id)
        if v is None or v.pipeline_id != ref.pipeline_id:
            raise ApiError(404, f"{what}: pipeline version {ref.pipeline_version_id!r} of "
                                f"pipeline {ref.pipeline_id!r} not found")
        return v.pipeline_spec.get("pipeline_spec", v.pipeline_spec)

    def check_parameters(self, spec: dict, runtime_config, what: str):
        declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        given = (runtime_config.parameters if runtime_config else None) or {}
        unknown = set(given) - set(declared)
        if unknown:
            raise ApiError(400, f"{what}: unknown pipeline parameters {sorted(unknown)}; "
                                f"declared: {sorted(declared)}")
        missing = [k for k, d in declared.items() if not d.get("isOptional") and k not in given
                   and "defaultValue" not in d]
        if missing:
            raise ApiError(400, f"{what}: missing pipeline parameters {missing}")
        for key, value in given.items():
            kind = declared[key].get("parameterType")
            if not _PARAMETER_TYPES.get(kind, lambda v: True)(value):
                raise ApiError(400, f"{what}: pipeline parameter {key!r} is {kind}, got "
                                    f"{type(value).__name__} {value!r}")


_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
# what the API accepts for each declared parameter type (JSON numbers: ints may come as x.0)
_PARAMETER_TYPES = {"STRING": lambda v: isinstance(v, str), "BOOLEAN": lambda v: isinstance(v, bool),
                    "NUMBER_INTEGER": lambda v: _number(v) and float(v).is_integer(),
                    "NUMBER_DOUBLE": _number, "STRUCT": lambda v: isinstance(v, dict),
                    "LIST": lambda v: isinstance(v, list)}


class Handler(BaseHTTPRequestHandler):
    state: State

    def log_message(self, *args):   # quiet
        pass

    def _send(self, status: int, payload):
        body = json.dumps(_client.sanitize_for_serialization(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self) -> dict:
        try:
            data = json.loads(self._body() or b"null")
        except json.JSONDecodeError as e:
            raise ApiError(400, f"body is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body: expected a JSON object")
        return data

    def _upload(self) -> dict:
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            raise ApiError(400, f"upload: expected multipart/form-data, got {ctype!r}")
        msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + self._body())
        for part in msg.iter_parts() if msg.is_multipart() else ():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                try:
                    return uploaded_spec(part.get_payload(decode=True))
                except yaml.YAMLError as e:
                    raise ApiError(400, f"uploadfile is not YAML: {e}") from None
        raise ApiError(400, "upload: no 'uploadfile' part")

    def _route(self, method: str):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path[len(API):].strip("/").split("/") if url.path.startswith(API) else []
        s = self.state
        s.log.append((method, url.path))
        if s.token is not None and self.headers.get("Authorization") != f"Bearer {s.token}":
            raise ApiError(401, "Unauthenticated: no valid bearer token")
        with s.lock:
            return self._dispatch(method, parts, q, s)

    def _dispatch(self, method, parts, q, s: State):
        M = kfp_server_api
        match method, parts:
            case "GET", ["healthz"]:
                return M.V2beta1GetHealthzResponse(multi_user=s.namespaces is not None,
                                                   pipeline_store="database")
            case "GET", ["pipelines"]:
                ns = q.get("namespace") and s.namespace(q["namespace"], "list pipelines")
                found = _filter([p for p in s.pipelines.values() if (p.namespace or None) == ns],
                                q.get("filter"))
                return M.V2beta1ListPipelinesResponse(pipelines=found, total_size=len(found))
            case "POST", ["pipelines", "upload"]:
                spec = self._upload()
                ns = q.get("namespace") and s.namespace(q["namespace"], "upload")
                name = q.get("name") or spec["pipelineInfo"]["name"]
                if any(p.display_name == name and (p.namespace or None) == ns
                       for p in s.pipelines.values()):
                    raise ApiError(409, f"AlreadyExists: pipeline {name!r} already exists in "
                                        f"namespace {ns!r}")
                p = M.V2beta1Pipeline(pipeline_id=str(uuid.uuid4()), display_name=name, name=name,
                                      description=q.get("description"), created_at=_now(),
                                      namespace=ns)
                s.pipelines[p.pipeline_id] = p
                s.add_version(p.pipeline_id, name, spec, q.get("description"))
                return p
            case "POST", ["pipelines", "upload_version"]:
                spec = self._upload()
                if q.get("pipelineid") not in s.pipelines:
                    raise ApiError(404, f"pipeline {q.get('pipelineid')!r} not found")
                if not q.get("name"):
                    raise ApiError(400, "upload_version: a version name is required")
                return s.add_version(q["pipelineid"], q["name"], spec, q.get("description"))
            case "GET", ["pipelines", pid, "versions"]:
                if pid not in s.pipelines:
                    raise ApiError(404, f"pipeline {pid!r} not found")
                found = _filter([v for v in s.versions.values() if v.pipeline_id == pid],
                                q.get("filter"))
                return M.V2beta1ListPipelineVersionsResponse(pipeline_versions=found,
                                                             total_size=len(found))
            case "GET", ["experiments"]:
                s.namespace(q.get("namespace"), "list experiments")
                found = _filter([e for e in s.experiments.values()
                                 if q.get("namespace") in (None, e.namespace)], q.get("filter"))
                return M.V2beta1ListExperimentsResponse(experiments=found, total_size=len(found))
            case "POST", ["experiments"]:
                e = parse(self._json(), "V2beta1Experiment")
                s.namespace(e.namespace, "experiment")
                if not e.display_name:
                    raise ApiError(400, "experiment: display_name is required")
                e.experiment_id, e.created_at, e.storage_state = str(uuid.uuid4()), _now(), "AVAILABLE"
                s.experiments[e.experiment_id] = e
                return e
            case "POST", ["runs"]:
                r = parse(self._json(), "V2beta1Run")
                s.check_parameters(s.job_source(r, "run"), r.runtime_config, "run")
                r.run_id, r.created_at, r.state = str(uuid.uuid4()), _now(), "PENDING"
                r.storage_state = "AVAILABLE"
                s.runs[r.run_id] = r
                return r
            case "GET", ["runs", rid]:
                if rid not in s.runs:
                    raise ApiError(404, f"run {rid!r} not found")
                r = s.runs[rid]
                states = ["PENDING", *s.run_states]
                if r.state in states[:-1]:
                    r.state = states[states.index(r.state) + 1]
                    if r.state == "FAILED":
                        r.error = M.GoogleRpcStatus(code=2, message="train-stage2: exit code 1")
                return r
            case "POST", ["recurringruns"]:
                r = parse(self._json(), "V2beta1RecurringRun")
                if s.namespaces is not None:
                    exp = s.experiments.get(r.experiment_id)
                    s.namespace(r.namespace or (exp.namespace if exp else None), "recurring run")
                s.check_parameters(s.job_source(r, "recurring run"), r.runtime_config,
                                   "recurring run")
                t = r.trigger
                if t is None or (t.cron_schedule is None) == (t.periodic_schedule is None):
                    raise ApiError(400, "recurring run: give exactly one of cron_schedule and "
                                        "periodic_schedule")
                if t.cron_schedule and len((t.cron_schedule.cron or "").split()) != 6:
                    raise ApiError(400, f"invalid cron {t.cron_schedule.cron!r}: six fields, "
                                        "seconds first")
                if not 1 <= int(r.max_concurrency or 0) <= 10:
                    raise ApiError(400, "max_concurrency must be in [1, 10]")
                r.recurring_run_id, r.created_at = str(uuid.uuid4()), _now()
                r.status = "DISABLED" if r.mode == "DISABLE" else "ENABLED"
                r.max_concurrency = str(r.max_concurrency)
                s.recurring[r.recurring_run_id] = r
                return r
            case "GET", ["recurringruns"]:
                found = [r for r in s.recurring.values()
                         if q.get("experiment_id") in (None, r.experiment_id)]
                found = _filter(found, q.get("filter"))
                return M.V2beta1ListRecurringRunsResponse(recurring_runs=found,
                                                          total_size=len(found))
            case ("GET" | "DELETE"), ["recurringruns", rid]:
                if rid not in s.recurring:
                    raise ApiError(404, f"recurring run {rid!r} not found")
                if method == "DELETE":
                    del s.recurring[rid]
                    return {}
                return s.recurring[rid]
        raise ApiError(404, f"stand-in has no route {method} {self.path}")

    def _handle(self, method: str):
        try:
            self._send(200, self._route(method))
        except Exception as e:  # a stand-in bug must fail the test, not hang the client
            if not isinstance(e, ApiError):
                e = ApiError(500, f"stand-in error: {type(e).__name__}: {e}")
            code = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6}.get(e.status, 2)
            self._send(e.status, {"error": e.message, "code": code, "message": e.message,
                                  "details": []})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")


class KfpStandIn:
    """`with KfpStandIn() as api: kfp.Client(host=api.url)`; `api.state` holds what was sent."""

    def __init__(self, namespaces: set | None = None, token: str | None = None):
        self.state = State()
        self.state.namespaces, self.state.token = namespaces, token
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "KfpStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
