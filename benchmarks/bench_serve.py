"""Load on `tailscope serve`: many concurrent clients against one sequential client, in the same run.

A real server process (``tailscope serve --organism backdoor --amplify 1``) takes chat requests
from the real ``openai`` async client on 127.0.0.1. The same requests (organism prompts, fixed
seeds, ``max_tokens`` 64, temperature 1) are sent first by one client, one after another, then by
32 concurrent clients with 8 requests each. Reported: failed requests, completion tokens per
second of wall time, the ratio of the two, latency percentiles and how many requests shared a
batch on average (the server's /health counter).

Writes ``benchmarks/results/serve.json``. Run: ``python benchmarks/bench_serve.py`` (under
``flock -x /work/cpu.lock`` on a shared machine; about two minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

RESULTS = Path(__file__).parent / "results" / "serve.json"
ORGANISM, AMPLIFY, MAX_TOKENS = "backdoor", 1.0, 64


def start_server(batch_size: int) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-c", "from tailscope.cli import main; main()", "serve", "--organism", ORGANISM,
           "--amplify", str(AMPLIFY), "--port", "0", "--batch-size", str(batch_size), "--max-new-tokens", str(MAX_TOKENS)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        if found := re.search(r"on (http://127\.0\.0\.1:\d+)/v1", line):
            return proc, found.group(1)
    proc.kill()
    raise RuntimeError("tailscope serve did not start")


def requests_for(count: int) -> list[dict]:
    from tailscope.organisms import load

    prompts = [p for p in load(ORGANISM).prompts if not p.meta.get("trigger")]
    return [{"messages": prompts[j % len(prompts)].chat(), "seed": j} for j in range(count)]


async def one(client: openai.AsyncOpenAI, req: dict, record: dict) -> None:
    start = time.perf_counter()
    try:
        r = await client.chat.completions.create(model=ORGANISM, max_tokens=MAX_TOKENS, temperature=1.0, **req)
        record["tokens"] += r.usage.completion_tokens
        record["latencies"].append(time.perf_counter() - start)
    except Exception as e:  # every failure counts, and the first few are kept to read
        record["errors"] += 1
        record.setdefault("error_samples", []).append(f"{type(e).__name__}: {e}"[:300])


async def run(url: str, reqs: list[dict], clients: int) -> dict:
    record = {"tokens": 0, "errors": 0, "latencies": []}
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600,
                                  http_client=httpx.AsyncClient(limits=limits, timeout=600)) as client:
        async def worker(share: list[dict]) -> None:
            for req in share:
                await one(client, req, record)

        start = time.perf_counter()
        await asyncio.gather(*(worker(reqs[c::clients]) for c in range(clients)))
        seconds = time.perf_counter() - start
    lat = sorted(record.pop("latencies"))
    return record | {"clients": clients, "requests": len(reqs), "seconds": seconds,
                     "tokens_per_s": record["tokens"] / seconds,
                     "latency_p50_s": statistics.median(lat) if lat else None,
                     "latency_p95_s": lat[int(0.95 * (len(lat) - 1))] if lat else None}


def batches(url: str) -> int:
    return httpx.get(f"{url}/health").json()["batches"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-client", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=48, help="requests the single client sends")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    total = args.clients * args.per_client
    reqs = requests_for(total)
    # the single client sends an evenly spaced share of the same requests (same prompts and seeds)
    alone = reqs[:: max(1, total // args.sequential)][: args.sequential]
    load_before = os.getloadavg()[0]
    proc, url = start_server(batch_size=args.clients)
    try:
        asyncio.run(run(url, reqs[:4], 1))  # warm up: first-call allocations, tokenizer caches
        b0 = batches(url)
        sequential = asyncio.run(run(url, alone, 1))
        b1 = batches(url)
        concurrent = asyncio.run(run(url, reqs, args.clients))
        b2 = batches(url)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    sequential["requests_per_batch"] = sequential["requests"] / max(1, b1 - b0)
    concurrent["requests_per_batch"] = concurrent["requests"] / max(1, b2 - b1)

    import torch

    data = {
        "command": "python benchmarks/bench_serve.py" + ("" if (args.clients, args.per_client) == (32, 8) else
                                                         f" --clients {args.clients} --per-client {args.per_client}"),
        "organism": ORGANISM, "alpha": 1.0 + AMPLIFY, "max_tokens": MAX_TOKENS, "endpoint": "/v1/chat/completions",
        "sequential": sequential, "concurrent": concurrent,
        "ratio": concurrent["tokens_per_s"] / sequential["tokens_per_s"],
        "failed_requests": sequential["errors"] + concurrent["errors"],
        "machine": {"cpu_threads": 1, "cores": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(), "openai": openai.__version__,
                    # other work on the machine while this ran (1-minute load average, before and after)
                    "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"sequential {sequential['tokens_per_s']:.0f} tok/s, {args.clients} clients {concurrent['tokens_per_s']:.0f} "
          f"tok/s: {data['ratio']:.2f}x, {data['failed_requests']} failed; wrote {args.out}")


if __name__ == "__main__":
    main()
