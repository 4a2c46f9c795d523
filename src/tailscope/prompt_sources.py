"""Prompt sources beyond tailscope's own files: a column of a CSV or parquet file, a Hugging Face
dataset, and the bundled HarmBench behaviours.

A *source spec* is one of:

* ``harmbench`` — the 200 standard behaviours of HarmBench (MIT; ``tailscope/data/harmbench``);
* ``FILE.csv:COLUMN`` / ``FILE.tsv:COLUMN`` / ``FILE.parquet[:COLUMN]`` — one prompt per row;
* ``hf:NAME[:SPLIT][:COLUMN]`` — a dataset read with the ``datasets`` library (``tailscope[hf]``).
  NAME may be a local folder, either written by ``Dataset.save_to_disk`` or holding data files
  (CSV, JSON, parquet), which works offline; a hub id is fetched by ``datasets`` (or read from its
  cache when ``HF_DATASETS_OFFLINE=1``). SPLIT defaults to ``train``.

Without COLUMN the first of ``PROMPT_COLUMNS`` present is used. Prompt ids come from an id
column (``ID_COLUMNS``) when there is one, else ``p0``, ``p1`` …; other scalar columns are kept
as the prompt's metadata. :func:`tailscope.prompts.load_prompts` hands these specs here and turns
the records into prompts (this module stays below ``prompts`` in the import graph).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["HARMBENCH", "ID_COLUMNS", "PROMPT_COLUMNS", "PromptSourceError", "is_source_spec", "read_source"]

HARMBENCH = Path(__file__).parent / "data" / "harmbench" / "harmbench_behaviors.csv"
PROMPT_COLUMNS = ("prompt", "Behavior", "behavior", "goal", "question", "instruction", "text")
ID_COLUMNS = ("id", "BehaviorID", "behavior_id", "prompt_id")
_TABLES = (".csv", ".tsv", ".parquet")


class PromptSourceError(ValueError):
    """A source spec that cannot be read; the message names the spec and the row."""


def _split_column(spec: str) -> tuple[str, str | None]:
    """``FILE.ext:COLUMN`` -> (FILE.ext, COLUMN); ``FILE.ext`` -> (FILE.ext, None)."""
    for ext in _TABLES:
        at = spec.lower().rfind(ext + ":")
        if at >= 0:
            return spec[: at + len(ext)], spec[at + len(ext) + 1:] or None
    return spec, None


def is_source_spec(spec: str | Path) -> bool:
    """True for the specs this module reads (``load_prompts`` reads tailscope's own files itself)."""
    s = str(spec)
    if s == "harmbench" or s.startswith("hf:"):
        return True
    path, column = _split_column(s)
    return column is not None or path.lower().endswith(".parquet")


def read_source(spec: str | Path) -> list[dict[str, Any]]:
    """The records of a source spec (see the module docstring): ``{"id", "prompt", **metadata}``
    per row; errors name the spec and the row."""
    s = str(spec)
    if s == "harmbench":
        return _from_rows(_read_csv(HARMBENCH, ","), s, "Behavior")
    if s.startswith("hf:"):
        return _from_hf(s)
    path, column = _split_column(s)
    file = Path(path)
    if not file.exists():
        raise PromptSourceError(f"prompt file not found: {file} (from {s!r})")
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        rows = _read_parquet(file)
    elif suffix in (".csv", ".tsv"):
        rows = _read_csv(file, "\t" if suffix == ".tsv" else ",")
    else:
        raise PromptSourceError(f"{s!r}: a column can be named only for .csv, .tsv and .parquet files")
    return _from_rows(rows, s, column)


def _read_csv(path: Path, delimiter: str) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PromptSourceError("reading parquet needs pyarrow: pip install 'tailscope[parquet]'") from None
    return pq.read_table(path).to_pylist()


def _from_hf(spec: str) -> list[dict[str, Any]]:
    parts = spec[3:].split(":")
    if not parts[0] or len(parts) > 3:
        raise PromptSourceError(f"{spec!r}: expected hf:NAME[:SPLIT][:COLUMN], e.g. hf:./my-dataset:train:prompt")
    name, split, column = parts[0], (parts[1] if len(parts) > 1 and parts[1] else "train"), \
        (parts[2] if len(parts) > 2 and parts[2] else None)
    try:
        import datasets
    except ImportError:
        raise PromptSourceError("hf: prompt sources need the `datasets` package: pip install 'tailscope[hf]'") from None
    folder = Path(name)
    try:
        if (folder / "dataset_info.json").exists() or (folder / "dataset_dict.json").exists():
            data = datasets.load_from_disk(str(folder))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise PromptSourceError(f"{spec!r}: no split {split!r} (have {sorted(data)})")
                data = data[split]
        else:
            data = datasets.load_dataset(name, split=split)
    except PromptSourceError:
        raise
    except Exception as e:  # datasets raises many types (missing split, no network, bad files)
        raise PromptSourceError(f"{spec!r}: the dataset could not be loaded ({type(e).__name__}: {e})") from None
    return _from_rows(data, spec, column)


def _from_rows(rows: Iterable[dict[str, Any]], spec: str, column: str | None) -> list[dict[str, Any]]:
    rows = list(rows)
    if not rows:
        raise PromptSourceError(f"{spec!r}: no rows")
    names = list(rows[0])
    if column is None:
        column = next((c for c in PROMPT_COLUMNS if c in names), None)
        if column is None:
            raise PromptSourceError(f"{spec!r}: no prompt column found (tried {list(PROMPT_COLUMNS)}; the columns are "
                                  f"{names}); name one, e.g. {spec}:{names[0]}")
    elif column not in names:
        raise PromptSourceError(f"{spec!r}: no column {column!r} (the columns are {names})")
    id_col = next((c for c in ID_COLUMNS if c in names and c != column), None)
    records = []
    for i, row in enumerate(rows):
        text = row[column]
        if not isinstance(text, str) or not text.strip():
            raise PromptSourceError(f"{spec!r}: row {i} has no text in column {column!r}")
        meta = {k: v for k, v in row.items() if k not in {column, id_col, "id", "prompt", "messages"} and _scalar(v)}
        records.append({"id": str(row[id_col]) if id_col else f"p{i}", "prompt": text.strip(), **meta})
    return records


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))
