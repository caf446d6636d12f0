"""Raw rows from a data file: JSON Lines, JSON, or Parquet, on a local path or gs://.

Every row comes back as (row number, dict); every problem raises RecordError naming the
file, the row (1-based; for a .json array, the element) and the field ('*' for the row).

>>> import tempfile, os
>>> d = tempfile.mkdtemp(); p = os.path.join(d, "x.jsonl")
>>> _ = open(p, "w").write('{"a": 1}\\n\\n{"a": 2}\\n')
>>> read_rows(p)
[(1, {'a': 1}), (3, {'a': 2})]
"""
from __future__ import annotations

import io
import json

from selfcorrect import storage
from selfcorrect.records import RecordError


def read_rows(uri: str, columns: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """The file's rows; `columns` must be present in a Parquet file (named if missing)."""
    uri = str(uri)
    data = storage.read_bytes(uri)     # FileNotFoundError names a missing file or object
    if not data.strip():
        raise RecordError(uri, 1, "*", "no records: the file is empty")
    low = uri.lower()
    if low.endswith(".parquet"):
        rows = _parquet(uri, data, columns)
    elif low.endswith(".json"):
        rows = _json(uri, _text(uri, data))
    elif low.endswith(".jsonl"):
        rows = _jsonl(uri, _text(uri, data))
    else:
        raise RecordError(uri, 0, "*", "unknown format: name the file .jsonl, .json or .parquet")
    if not rows:
        raise RecordError(uri, 1, "*", "no records: the file holds no rows")
    return rows


def _text(uri: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        row = data[: e.start].count(b"\n") + 1
        raise RecordError(uri, row, "*", f"not UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


def _jsonl(uri: str, text: str) -> list[tuple[int, dict]]:
    out = []
    for row, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_no_repeats)
        except json.JSONDecodeError as e:
            raise RecordError(uri, row, "*", f"not valid JSON ({e.msg} at column {e.colno})") from None
        except _Repeated as e:
            raise RecordError(uri, row, str(e), "given twice in one object") from None
        out.append((row, _object(uri, row, value)))
    return out


def _json(uri: str, text: str) -> list[tuple[int, dict]]:
    """A JSON array of objects, or one object (MATH ships one problem per .json file)."""
    try:
        value = json.loads(text, object_pairs_hook=_no_repeats)
    except json.JSONDecodeError as e:
        raise RecordError(uri, e.lineno, "*", f"not valid JSON ({e.msg} at column {e.colno})") from None
    except _Repeated as e:
        raise RecordError(uri, 1, str(e), "given twice in one object") from None
    items = value if isinstance(value, list) else [value]
    return [(row, _object(uri, row, v)) for row, v in enumerate(items, start=1)]


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


def _object(uri: str, row: int, value) -> dict:
    if not isinstance(value, dict):
        raise RecordError(uri, row, "*", f"expected a JSON object, got {type(value).__name__}")
    return value


def _parquet(uri: str, data: bytes, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as e:
        raise RecordError(uri, 0, "*", f"not a readable Parquet file ({e})") from None
    for name in columns:
        if name not in table.column_names:
            raise RecordError(uri, 1, name, f"missing column (all rows); the file has "
                                            f"{', '.join(table.column_names) or 'no columns'}")
    return [(row, {k: v for k, v in d.items() if v is not None})
            for row, d in enumerate(table.to_pylist(), start=1)]
