"""The records that cross pipeline steps, and their reading and writing as JSONL or Parquet.

The records' fields are the boundary contract: other pipelines feed and read these. Each is
written in schemas/<record>.schema.json (selfcorrect.contract); the classes here are plain
frozen dataclasses that an editor can read, checked against those files when this module is
imported (conforms), and the data gates' suites are built from the same files. A bad row is reported with file,
row and field.

    rows = read(uri, Problem)           # JSONL or Parquet, told apart by content
    write(uri, rows)                    # Parquet when uri ends in .parquet, else JSONL
    write(uri, rows, format="parquet")  # KFP artifact paths have no suffix: say it

A Parquet file starts with the 4 bytes `PAR1`; anything else is read as JSON Lines
(UTF-8, one object per line; a leading byte-order mark and CRLF line ends are accepted).
Both formats are checked field by field the same way (from_dict), and both are written
atomically through selfcorrect.storage.
"""
from __future__ import annotations

import codecs
import dataclasses
import io
import json
import math
import re
from collections.abc import Iterable
from dataclasses import fields
from typing import TypeVar

from selfcorrect import contract, extras, storage

_PYTHON_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


def record_type(schema: dict) -> type:
    """The frozen dataclass a record schema describes (what `conforms` compares a class with): one attribute per property, in its order, of
    its JSON type ("str", "int", "float" or "bool", as postponed annotations read), with its
    "default"; the schema's required properties are those without one."""
    props = schema["properties"]
    if schema["required"] != [name for name, p in props.items() if "default" not in p]:
        raise ValueError(f"{schema['title']}: required must list, in order, the properties without a default")
    cls = dataclasses.make_dataclass(schema["title"], [
        (name, _PYTHON_TYPES[p["type"]], *([dataclasses.field(default=p["default"])] if "default" in p else []))
        for name, p in props.items()], frozen=True)
    cls.__module__, cls.__doc__ = __name__, schema["description"]
    return cls


def conforms_to(record: str):
    """Class decorator: conforms(cls, record)."""
    return lambda cls: conforms(cls, record)


def conforms(cls: type, record: str) -> type:
    """`cls` when its fields (names, order, types, defaults) are those schemas/<record>.schema.json
    gives; else ValueError naming the first difference. The schema is the one contract: the
    classes below are written out for editors and type checkers, and checked against it here."""
    schema = contract.load(record)
    want, have = (tuple((f.name, getattr(f.type, "__name__", f.type),
                         "required" if f.default is dataclasses.MISSING else f.default)
                        for f in fields(c)) for c in (record_type(schema), cls))
    if want != have or cls.__doc__ != schema["description"]:
        diff = next(((w, h) for w, h in zip(want, have) if w != h), (want[len(have):], have[len(want):]))
        raise ValueError(f"selfcorrect.records.{cls.__name__} differs from schemas/{record}.schema.json: "
                         f"schema {diff[0]}, class {diff[1]}" if want != have else
                         f"selfcorrect.records.{cls.__name__}: its docstring is not the schema's description")
    return cls


# The records, field for field as schemas/<name>.schema.json gives them (with what each means).

@conforms_to("problem")
@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem (a JSONL line or Parquet row)."""
    id: str
    task: str
    prompt: str
    answer: str = ""
    test: str = ""
    entry_point: str = ""
    source: str = ""
    split: str = "train"
    difficulty: str = ""


@conforms_to("attempt")
@dataclasses.dataclass(frozen=True)
class Attempt:
    """One model attempt at a problem (a JSONL line or Parquet row)."""
    problem_id: str
    sample: int
    turn: int
    completion: str
    model: str
    truncated: bool = False


@conforms_to("verdict")
@dataclasses.dataclass(frozen=True)
class Verdict:
    """The verifier's decision on one attempt (a JSONL line or Parquet row)."""
    problem_id: str
    sample: int
    turn: int
    correct: bool
    reward: float
    reason: str = ""
    verifier: str = ""


@conforms_to("eval_row")
@dataclasses.dataclass(frozen=True)
class EvalRow:
    """One (problem, sample) episode of one evaluated model, both turns judged (a JSONL line or Parquet row). The evaluate step's metrics are computed from these rows."""  # noqa: E501
    model: str
    problem_id: str
    sample: int
    task: str
    difficulty: str
    correct_t1: bool
    correct_t2: bool
    edit_ratio: float
    same_answer: bool


@conforms_to("train_step")
@dataclasses.dataclass(frozen=True)
class TrainStep:
    """One RL step of a SCoRe stage, as the training step reports it (a JSONL line or Parquet row): means over the step's episodes."""  # noqa: E501
    stage: int
    step: int
    reward_t1: float
    reward_t2: float
    loss: float
    kl_t1: float
    kl_t2: float
    truncated: float
    edit_ratio: float


R = TypeVar("R", Problem, Attempt, Verdict, EvalRow, TrainStep)
FORMATS = ("jsonl", "parquet")
PARQUET_MAGIC = b"PAR1"


class RecordError(ValueError):
    """Input that does not fit its record type; names file, row (1-based) and field.

    row=None means the whole file (unreadable, empty, not UTF-8 before any row, ...);
    field "*" means the whole row.
    """

    def __init__(self, uri: str, row: int | None, field: str | None, why: str):
        self.uri, self.row, self.field, self.why = str(uri), row, field, why
        where = [self.uri]
        if row is not None:
            where.append(f"row {row}")
        if field is not None and not (row is None and field == "*"):
            shown = field if field.isprintable() else ascii(field)[1:-1]
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            where.append(f"field '{shown}'")
        super().__init__(": ".join([*where, why]))

    def __reduce__(self):
        return type(self), (self.uri, self.row, self.field, self.why)


_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool}
_INT64 = (-2**63, 2**63 - 1)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _show(value) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_value(uri: str, row: int | None, name: str, kind: str, value):
    """The value of a field of type `kind` ("str", "int", "float", "bool"), checked:
    raises RecordError naming file, row and field; floats come back as float."""
    if isinstance(value, bool) and kind != "bool" or not isinstance(value, _TYPES[kind]):
        shown = "" if value is None else f" {_show(value)}"
        raise RecordError(uri, row, name, f"expected {kind}, got {_type_name(value)}{shown}")
    if kind == "str":
        bad = _SURROGATE.search(value)
        if bad:
            raise RecordError(uri, row, name, f"holds a lone surrogate {bad.group()!r} at character "
                                              f"{bad.start()}: not valid Unicode, cannot be UTF-8")
    elif kind == "int" and not _INT64[0] <= value <= _INT64[1]:
        raise RecordError(uri, row, name, f"{_show(value)} is out of range for a 64-bit integer")
    elif kind == "float":
        value = float(value)      # an int too large for a float raises OverflowError: caught below
        if not math.isfinite(value):
            raise RecordError(uri, row, name, f"{value} is not a finite number (JSON, Parquet readers "
                                              "and the schemas take only finite numbers)")
    return value


def from_dict(cls: type[R], data: dict, uri: str = "<memory>", row: int | None = 0) -> R:
    """One record from a JSON object; every field checked for its type."""
    if not isinstance(data, dict):
        why = f"expected a JSON object, got {_type_name(data)}"
        if isinstance(data, list):
            why += " (records are JSON Lines: one object per line, not a JSON array)"
        raise RecordError(uri, row, "*", why)
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise RecordError(uri, row, key, f"unknown field for {cls.__name__}; "
                                             f"fields are {', '.join(known)}")
    values = {}
    for name, f in known.items():
        if name not in data:
            if f.default is dataclasses.MISSING:
                raise RecordError(uri, row, name, "missing")
            continue
        try:
            values[name] = check_value(uri, row, name, f.type, data[name])
        except OverflowError:
            raise RecordError(uri, row, name, f"{_show(data[name])} is too large for a float") from None
    return cls(**values)


# --- reading ------------------------------------------------------------------------------

def read(uri: str, cls: type[R]) -> list[R]:
    """The records in a JSONL or Parquet file (told apart by content, not by name).

    An empty file holds no records. Every problem raises RecordError naming file, row and
    field; a missing file raises FileNotFoundError, an unreadable one StorageError."""
    uri = str(uri)
    return from_bytes(uri, storage.read_bytes(uri), cls)


def from_bytes(uri: str, data: bytes, cls: type[R]) -> list[R]:
    """The records in a file's bytes (read() without the reading); uri names it in errors."""
    if data.startswith(PARQUET_MAGIC):
        return _read_parquet(uri, data, cls)
    return [from_dict(cls, value, uri, row) for row, value in parse_jsonl(uri, decode(uri, data))]


_BINARY = [(b"\x1f\x8b", "a gzip-compressed file; decompress it first"),
           (b"PK\x03\x04", "a zip archive; extract the file first"),
           (b"BZh", "a bzip2-compressed file; decompress it first"),
           (b"\xfd7zXZ\x00", "an xz-compressed file; decompress it first"),
           (b"\x28\xb5\x2f\xfd", "a zstd-compressed file; decompress it first"),
           (codecs.BOM_UTF32_LE, "UTF-32 text (it starts with a UTF-32 byte-order mark); save it as UTF-8"),
           (codecs.BOM_UTF32_BE, "UTF-32 text (it starts with a UTF-32 byte-order mark); save it as UTF-8"),
           (codecs.BOM_UTF16_LE, "UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"),
           (codecs.BOM_UTF16_BE, "UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")]


def decode(uri: str, data: bytes) -> str:
    """UTF-8 text of a file (a leading UTF-8 byte-order mark dropped); compressed files,
    UTF-16/32 and bytes that are not UTF-8 raise RecordError (the row: the line)."""
    data = data.removeprefix(codecs.BOM_UTF8)
    for magic, what in _BINARY:
        if data.startswith(magic):
            raise RecordError(uri, None, None, f"{what} (records are UTF-8 JSON Lines or Parquet)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        row = data[: e.start].count(b"\n") + 1
        raise RecordError(uri, row, "*", f"not UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


_LINE_END = re.compile(r"\r\n|\r|\n")


def lines(text: str) -> Iterable[tuple[int, str]]:
    """(line number, line), split at LF, CRLF or a lone CR only: those cannot stand raw in
    a JSON string, while U+2028, U+0085 and the like can, and str.splitlines() splits there."""
    return enumerate(_LINE_END.split(text), start=1)


class _Repeated(Exception):
    pass


def _no_repeats(pairs: list) -> dict:
    """json object hook: a key given twice is an error, not a silent last-one-wins."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _Repeated(key)
        out[key] = value
    return out


def loads(uri: str, row: int | None, text: str):
    """json.loads, with every failure a RecordError naming file and row (row None: a
    whole-file JSON document) and the field for a key given twice. NaN and Infinity
    parse; from_dict rejects them as values."""
    try:
        return json.loads(text, object_pairs_hook=_no_repeats)
    except json.JSONDecodeError as e:
        at = f"column {e.colno}" if row is not None else f"line {e.lineno} column {e.colno}"
        why = f"not valid JSON ({e.msg.removesuffix(' at')} at {at})"
        if "\x00" in text:
            why += "; it holds NUL bytes (UTF-16 text or a binary file?)"
        raise RecordError(uri, row, "*", why) from None
    except _Repeated as e:
        raise RecordError(uri, row, str(e.args[0]), "given twice in one object") from None
    except RecursionError:
        raise RecordError(uri, row, "*", "not usable JSON (nested too deeply)") from None
    except ValueError as e:      # e.g. an integer with more than 4300 digits
        raise RecordError(uri, row, "*", f"not usable JSON ({str(e).split(';')[0]})") from None


def parse_jsonl(uri: str, text: str) -> list[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line."""
    return [(row, loads(uri, row, line)) for row, line in lines(text) if line.strip()]


def _read_parquet(uri: str, data: bytes, cls: type[R]) -> list[R]:
    table = read_parquet_table(uri, data)
    row = 1 if table.num_rows else None
    names = data_columns(uri, table, row)
    known = {f.name: f for f in fields(cls)}
    for name in names:
        if name not in known:
            raise RecordError(uri, row, name, f"unknown field for {cls.__name__} (a column of the file); "
                                              f"fields are {', '.join(known)}")
    for name, f in known.items():
        if name not in names and f.default is dataclasses.MISSING:
            raise RecordError(uri, row, name, f"missing (the file has no such column; it has "
                                              f"{', '.join(names) or 'no columns'})")
    out = []
    for row, values in enumerate(table.select(names).to_pylist(), start=1):
        out.append(from_dict(cls, values, uri, row))    # a null is "expected str, got null"
    return out


def read_parquet_table(uri: str, data: bytes):
    """The pyarrow Table of a Parquet file's bytes; unreadable: RecordError for the file."""
    extras.require(f"{uri}: reading Parquet", "parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:    # ParquetFile, not read_table: a column name given twice must reach data_columns
        return pq.ParquetFile(io.BytesIO(data)).read()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise RecordError(uri, None, None, f"not a readable Parquet file ({e})") from None


def data_columns(uri: str, table, row: int | None) -> list[str]:
    """The data columns: a name given twice is an error; pandas' saved index is left out."""
    seen: set[str] = set()
    for name in table.column_names:
        if name in seen:
            raise RecordError(uri, row, name, "given twice (two columns of that name)")
        seen.add(name)
    index: list = []
    meta = (table.schema.metadata or {}).get(b"pandas")
    if meta:
        try:
            index = json.loads(meta).get("index_columns", [])
        except (ValueError, AttributeError):
            index = []
    return [n for n in table.column_names if n not in {i for i in index if isinstance(i, str)}]


# --- writing ------------------------------------------------------------------------------

def write(uri: str, records: Iterable, format: str | None = None, *, cls: type | None = None) -> int:
    """Write records atomically, as Parquet when format == "parquet" or the uri ends in
    .parquet, else as JSONL; returns how many. Every value is checked first (a NaN, a lone
    surrogate, a wrong type raise RecordError naming the output, row and field, and nothing
    is written). cls: the record type, needed only to write an empty Parquet file."""
    if format not in (None, *FORMATS):
        raise ValueError(f"unknown record format {format!r}; formats: {', '.join(FORMATS)}")
    uri, rows = str(uri), list(records)
    if format is None:
        format = "parquet" if uri.lower().endswith(".parquet") else "jsonl"
    cls = _check_rows(uri, rows, cls)
    if format == "parquet":
        if cls is None:
            raise ValueError(f"{uri}: cannot write an empty Parquet file without its record type (cls=)")
        storage.write_bytes(uri, parquet_bytes(rows, cls))
    else:
        storage.write_text(uri, "".join(json.dumps(dataclasses.asdict(r), ensure_ascii=False,
                                                   allow_nan=False) + "\n" for r in rows))
    return len(rows)


def write_jsonl(uri: str, records: Iterable) -> int:
    """Write records atomically as JSONL (whatever the name); returns how many."""
    return write(uri, records, "jsonl")


def format_of(data: bytes) -> str:
    """"parquet" when a file's bytes are Parquet (its first 4 bytes are PAR1), else "jsonl"."""
    return "parquet" if data[:4] == PARQUET_MAGIC else "jsonl"


def _check_rows(uri: str, rows: list, cls: type | None) -> type | None:
    for row, record in enumerate(rows, start=1):
        if not dataclasses.is_dataclass(record) or isinstance(record, type):
            raise RecordError(uri, row, "*", f"not a record: {_type_name(record)}")
        if cls is None:
            cls = type(record)
        elif type(record) is not cls:
            raise RecordError(uri, row, "*", f"a {type(record).__name__} among {cls.__name__} records")
        for f in fields(record):
            try:
                check_value(uri, row, f.name, f.type, getattr(record, f.name))
            except OverflowError:
                raise RecordError(uri, row, f.name, "too large for a float") from None
    return cls


_ARROW_TYPES = {"str": "string", "int": "int64", "float": "float64", "bool": "bool_"}


def arrow_schema(cls: type):
    """The pyarrow schema of a record type: str -> string, int -> int64, float -> float64,
    bool -> bool; no field is nullable."""
    import pyarrow as pa

    return pa.schema([pa.field(f.name, getattr(pa, _ARROW_TYPES[f.type])(), nullable=False)
                      for f in fields(cls)])


def parquet_bytes(rows: list, cls: type) -> bytes:
    extras.require("writing Parquet records", "parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(cls)
    table = pa.Table.from_pydict({f.name: [getattr(r, f.name) for r in rows] for f in fields(cls)},
                                 schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()
