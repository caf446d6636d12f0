"""Rows from Hugging Face datasets (the `datasets` library), for the file sources' formats.

`data.path` (and `data.eval_path`, `data.dev_path`) names a data file (.jsonl, .json, .parquet:
selfcorrect.data.files) or, read here:

| path                              | read with                                   |
|-----------------------------------|---------------------------------------------|
| `hf:openai/gsm8k`                 | `load_dataset(name, data.dataset_config)`: the Hub, at run time |
| a folder written by `save_to_disk` | `load_from_disk` (local, or gs://, s3:// through fsspec) |
| any other folder of data files    | `load_dataset(folder)` (Parquet/Arrow/JSON/CSV files; split names from the file names) |
| a `.arrow` file                   | `Dataset.from_file` (one split)              |

A dataset with named splits gives its `data.train_split`, `data.eval_split` and `data.dev_split`
(official test split as eval); one without splits is split by id hash like a file. Rows are
numbered from 1 within their split, and errors name `<path>[<split>]`, the row and the field.

`data.columns` is read by selfcorrect.config.parse_columns.
"""
from __future__ import annotations

import functools
from pathlib import Path

from selfcorrect.records import RecordError

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def is_dataset(path: str) -> bool:
    """True when `path` is read with `datasets` rather than as one data file."""
    return path.startswith("hf:") or not path.lower().endswith(FILE_SUFFIXES)


def _library():
    from selfcorrect import extras

    extras.require("reading a Hugging Face dataset", "data")
    import datasets

    datasets.disable_progress_bars()
    return datasets


@functools.lru_cache(maxsize=8)
def open_dataset(path: str, config: str = ""):
    """The dataset at `path`: a DatasetDict (named splits) or a Dataset (no splits)."""
    datasets = _library()
    if path.startswith("hf:"):
        return datasets.load_dataset(path[3:], config or None)
    if path.lower().endswith(".arrow"):
        return datasets.Dataset.from_file(path)
    folder = Path(path)
    saved = (folder / "dataset_dict.json").is_file() or (
        (folder / "dataset_info.json").is_file() and (folder / "state.json").is_file())
    if "://" in path or saved:
        try:
            return datasets.load_from_disk(path)
        except FileNotFoundError as e:
            if "://" not in path:
                raise
            raise FileNotFoundError(f"{path}: not a folder written by save_to_disk ({e})") from None
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file or folder (a data file ends in "
                                f"{', '.join(FILE_SUFFIXES)}; a Hub dataset is hf:<name>)")
    return datasets.load_dataset(path, config or None)


def split_names(dataset) -> list[str]:
    return list(dataset.keys()) if hasattr(dataset, "keys") else []


def has_splits(path: str, config: str = "") -> bool:
    """True for a dataset with named splits (not a data file, not one table)."""
    return is_dataset(path) and bool(split_names(open_dataset(path, config)))


def rows(path: str, split: str | None, config: str = "") -> tuple[str, list[tuple[int, dict]]]:
    """(label for errors, [(row, dict)]) of one split (None: a dataset without splits)."""
    dataset = open_dataset(path, config)
    names = split_names(dataset)
    if split is None:
        if names:
            raise ValueError(f"{path}: has splits {', '.join(names)}; say which with "
                             "data.train_split / data.eval_split / data.dev_split")
        label, part = path, dataset
    else:
        if split not in names:
            raise RecordError(path, None, None, f"no split {split!r}; its splits: "
                                                f"{', '.join(names) or 'none (one table)'}")
        label, part = f"{path}[{split}]", dataset[split]
    # a null is a missing value, as in Parquet files
    return label, [(i, {k: v for k, v in d.items() if v is not None})
                   for i, d in enumerate(part, start=1)]


def rename(uri: str, row: int, d: dict, mapping: dict[str, str]) -> dict:
    """The row with its mapped columns under the format's field names."""
    if not mapping:
        return d
    out = {k: v for k, v in d.items() if k not in mapping.values()}
    for field, column in mapping.items():
        if column in d:
            out[field] = d[column]
        elif field not in out:
            raise RecordError(uri, row, column, f"missing (data.columns maps {field} to it); the "
                                                f"row has {', '.join(sorted(d)) or 'no fields'}")
    return out
