"""`tailscope runs list | show | export`: look into stored runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._common import console, fail, out, write_json
from ._display import proposal_label

runs_app = typer.Typer(help="Stored runs: list them, show one, export its rollouts.", no_args_is_help=True)

RUN_ARGUMENT = "Run name (in --runs-dir) or path to a run file."


def _open(run: str, root: Path):
    from ..store import RunStore, RunStoreError

    try:
        return RunStore.open(run, root=root, readonly=True)
    except RunStoreError as e:
        raise fail(str(e)) from None


def _when(timestamp: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@runs_app.command("list")
def list_(root: Path = opt.runs_dir(), json_out: Optional[Path] = opt.json_out()) -> None:
    """List the runs in the runs directory."""
    from ..store import RunStore, RunStoreError, list_runs

    rows = []
    for path in list_runs(root):
        try:
            with RunStore.open(path, readonly=True, check=False) as store:
                s = store.summary()
            rows.append({"name": s["name"], "rollouts": s["rollouts"], "prompts": s["prompts"],
                         "proposals": len(s["proposals"]), "judges": len(s["judges"]),
                         "estimates": s["estimates"], "created": s["created"], "path": str(path), "error": None})
        except RunStoreError as e:
            rows.append({"name": path.stem, "path": str(path), "error": str(e)})
    write_json(json_out, rows)
    if str(json_out) == "-":
        return
    if not rows:
        console.print(f"no runs in {root}")
        return
    from rich.table import Table

    table = Table(title=f"runs in {root}")
    for col in ("run", "rollouts", "prompts", "proposals", "judges", "estimates", "created"):
        table.add_column(col, justify="left" if col in ("run", "created") else "right")
    for r in rows:
        if r["error"]:
            table.add_row(r["name"], "[red]unreadable[/]", "", "", "", "", "")
        else:
            table.add_row(r["name"], str(r["rollouts"]), str(r["prompts"]), str(r["proposals"]), str(r["judges"]),
                          str(r["estimates"]), _when(r["created"]))
    out.print(table)


@runs_app.command("show")
def show(
    run: str = typer.Argument(..., help=RUN_ARGUMENT),
    root: Path = opt.runs_dir(),
    json_out: Optional[Path] = opt.json_out(),
) -> None:
    """Show a run's config, rollouts per proposal, verdicts per judge and estimates."""
    with _open(run, root) as store:
        s = store.summary()
        s["estimate_records"] = store.estimates()
    write_json(json_out, s)
    if str(json_out) == "-":
        return
    from rich.table import Table

    out.print(f"[bold]{s['name']}[/] ({s['path']}), created {_when(s['created'])}")
    out.print_json(json.dumps(s["config"]))
    table = Table(title=f"{s['rollouts']} rollouts over {s['prompts']} prompts")
    table.add_column("proposal")
    table.add_column("rollouts", justify="right")
    for key, count in s["proposals"].items():
        table.add_row(proposal_label(key), f"{count:,}")
    out.print(table)
    if s["judges"]:
        jt = Table(title="verdicts")
        for col in ("judge", "judged", "flagged", "failed"):
            jt.add_column(col, justify="left" if col == "judge" else "right")
        for j in s["judges"]:
            jt.add_row(j["spec"], str(j["judged"]), str(j["flagged"]), str(j["failed"]))
        out.print(jt)
    for e in s["estimate_records"]:
        where = f" [{e['prompt_id']}]" if e["prompt_id"] else ""
        out.print(f"estimate {e['id']} {e['name']}{where}: {json.dumps(e['data'])[:300]}")


@runs_app.command("export")
def export(
    run: str = typer.Argument(..., help=RUN_ARGUMENT),
    fmt: str = typer.Option("jsonl", "--format", "-f", help="jsonl or parquet."),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (default: RUN.jsonl / RUN.parquet)."),
    root: Path = opt.runs_dir(),
) -> None:
    """Export every rollout with its log-probabilities and verdicts, one record per rollout."""
    if fmt not in ("jsonl", "parquet"):
        raise fail(f"--format (={fmt!r}) must be 'jsonl' or 'parquet'")
    with _open(run, root) as store:
        records = list(store.records())
        name = store.name
    output = output or Path(f"{name}.{fmt}")
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with output.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    else:
        _write_parquet(output, records)
    console.print(f"wrote {len(records)} rollouts to {output}")


def _write_parquet(path: Path, records: list[dict]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise fail("parquet export needs pyarrow: pip install 'tailscope[parquet]'") from None
    verdict = pa.struct([("judge", pa.string()), ("flagged", pa.bool_()), ("score", pa.float64()),
                         ("error", pa.string())])
    schema = pa.schema([
        ("prompt_id", pa.string()), ("proposal", pa.string()), ("seed_index", pa.int64()),
        ("token_ids", pa.list_(pa.int32())), ("text", pa.string()), ("finish_reason", pa.string()),
        ("logprob", pa.float64()), ("logprob_reference", pa.float64()), ("logprob_target", pa.float64()),
        ("logprob_grid", pa.map_(pa.float64(), pa.float64())), ("verdicts", pa.list_(verdict)),
    ])
    rows = [{**r, "logprob_grid": [(float(a), v) for a, v in r["logprob_grid"].items()],
             "verdicts": [{"judge": j, **v} for j, v in r["verdicts"].items()]} for r in records]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
