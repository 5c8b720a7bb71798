"""A bounded load test of a running `gemma serve` with the `openai` async client
(gemma-cli/tests/serve_load.rs).

    python scripts/serve_load.py BASE_URL REFS.json REQUESTS CONCURRENCY CANCEL_EVERY [SEED]

REFS.json: [{"prompt": ..., "max_tokens": N, "text": greedy reference}, ...]. Request i uses
a reference drawn at random (seeded by SEED, default 0, so a run can be repeated), streamed
when i is odd; every CANCEL_EVERY-th request is streamed and abandoned after its first chunk. Prints one JSON object: counts, mismatches, errors,
latency p50/p99 (ms) of the completed requests, generated tokens per second overall.
"""
import asyncio
import json
import random
import sys
import time

import openai


async def one(client, i, ref, cancel, out):
    start = time.perf_counter()
    try:
        if cancel:
            stream = await client.completions.create(
                model=out["model"], prompt=ref["prompt"], max_tokens=200, temperature=0, stream=True)
            async for _ in stream:
                break
            await stream.close()
            out["cancelled"] += 1
            return
        if i % 2:
            stream = await client.completions.create(
                model=out["model"], prompt=ref["prompt"], max_tokens=ref["max_tokens"], temperature=0,
                stream=True, stream_options={"include_usage": True})
            text, tokens = "", 0
            async for chunk in stream:
                text += "".join(c.text for c in chunk.choices)
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
        else:
            r = await client.completions.create(
                model=out["model"], prompt=ref["prompt"], max_tokens=ref["max_tokens"], temperature=0)
            text, tokens = r.choices[0].text, r.usage.completion_tokens
        out["latencies"].append(time.perf_counter() - start)
        out["tokens"] += tokens
        out["ok"] += 1
        if text != ref["text"]:
            out["mismatches"].append({"request": i, "got": text, "want": ref["text"]})
    except Exception as e:  # every failure is reported, none ends the run
        out["errors"].append(f"request {i}: {type(e).__name__}: {e}")


async def main():
    base_url, refs_path = sys.argv[1], sys.argv[2]
    n, concurrency, cancel_every = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    seed = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    refs = json.load(open(refs_path))
    rng = random.Random(seed)
    picks = [refs[rng.randrange(len(refs))] for _ in range(n)]
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120)
    out = {"model": (await client.models.list()).data[0].id, "ok": 0, "cancelled": 0, "tokens": 0,
           "latencies": [], "mismatches": [], "errors": []}
    gate = asyncio.Semaphore(concurrency)

    async def bounded(i):
        async with gate:
            await one(client, i, picks[i], cancel_every > 0 and i % cancel_every == cancel_every - 1, out)

    start = time.perf_counter()
    await asyncio.gather(*(bounded(i) for i in range(n)))
    wall = time.perf_counter() - start
    lat = sorted(out.pop("latencies"))
    pick = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None
    out.update({"wall_s": wall, "p50_ms": pick(0.50), "p99_ms": pick(0.99), "tokens_per_s": out["tokens"] / wall})
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
