#!/usr/bin/env python3
"""Latency of the MCP door, measured with the official MCP Python SDK.

    mcp_bench.py --exe target/release/agentwire [--n 200] [--smoke] [--json]

Creates a throwaway home with two sibling identities (alice, bob), opens one
`agentwire mcp` session for each, and measures, over N rounds each:

  whoami        tool round trip (MCP over stdio + one daemon request)
  send          `send` tool round trip (seal, store in the outbox)
  send->push    from calling `send` on alice to bob's client receiving the
                notifications/claude/channel push
  send->wait    from calling `send` on alice to bob's blocking `wait`
                returning the message

Prints p50/p90/p99/max in milliseconds. Needs the Python `mcp` package
(crates/agentwire/tests/python/requirements.txt). --smoke runs 5 rounds and
only checks that everything works.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client import NotificationBinding
from pydantic import BaseModel, ConfigDict


class AnyParams(BaseModel):
    model_config = ConfigDict(extra="allow")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "n": len(ordered),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


async def bench(exe: str, home: str, n: int) -> dict[str, Any]:
    arrivals: dict[str, float] = {}
    arrived = anyio.Event()

    async def on_channel(params: AnyParams) -> None:
        nonlocal arrived
        meta = (params.model_dump().get("meta") or {})
        if "id" in meta:
            arrivals[meta["id"]] = time.perf_counter()
            arrived.set()
            arrived = anyio.Event()

    async with contextlib.AsyncExitStack() as stack:
        sessions = {}
        for name in ("alice", "bob"):
            params = StdioServerParameters(command=exe, args=["--home", home, "--as", name, "mcp"], env=dict(os.environ))
            read, write = await stack.enter_async_context(stdio_client(params))
            bindings = [NotificationBinding(method="notifications/claude/channel", params_type=AnyParams, handler=on_channel)] if name == "bob" else []
            session = await stack.enter_async_context(
                ClientSession(read, write, read_timeout_seconds=60, notification_bindings=bindings)
            )
            await session.initialize()
            sessions[name] = session
        alice, bob = sessions["alice"], sessions["bob"]

        async def timed(session: ClientSession, tool: str, arguments: dict[str, Any]) -> tuple[float, Any]:
            started = time.perf_counter()
            result = await session.call_tool(tool, arguments)
            if result.is_error:
                raise RuntimeError(f"{tool}: {result.content}")
            return time.perf_counter() - started, result

        results: dict[str, Any] = {}
        results["whoami"] = percentiles([(await timed(alice, "whoami", {}))[0] for _ in range(n)])

        send_times, push_times = [], []
        for i in range(n):
            started = time.perf_counter()
            elapsed, result = await timed(alice, "send", {"to": "bob", "text": f"bench {i}"})
            send_times.append(elapsed)
            message_id = result.structured_content["id"]
            with anyio.fail_after(30):
                while message_id not in arrivals:
                    await arrived.wait()
            push_times.append(arrivals[message_id] - started)
            await bob.call_tool("recv", {})
        results["send"] = percentiles(send_times)
        results["send->push"] = percentiles(push_times)

        wait_times = []
        for i in range(n):
            box: dict[str, float] = {}

            async def waiter() -> None:
                await bob.call_tool("wait", {"timeout_secs": 30})
                box["returned"] = time.perf_counter()

            async with anyio.create_task_group() as group:
                group.start_soon(waiter)
                await anyio.sleep(0.02)
                box["sent"] = time.perf_counter()
                await alice.call_tool("send", {"to": "bob", "text": f"wake {i}"})
            wait_times.append(box["returned"] - box["sent"])
        results["send->wait"] = percentiles(wait_times)
        return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exe", required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = 5 if args.smoke else args.n
    exe = os.path.abspath(args.exe)
    with tempfile.TemporaryDirectory() as tmp:
        home = os.path.join(tmp, "home")
        for name in ("alice", "bob"):
            subprocess.run([exe, "--home", home, "init", "--name", name], check=True, capture_output=True)
        try:
            results = anyio.run(bench, exe, home, n)
        finally:
            subprocess.run([exe, "--home", home, "daemon", "stop"], capture_output=True)
    if args.json:
        print(json.dumps(results))
    else:
        print(f"MCP door, {n} rounds each ({'smoke run' if args.smoke else exe})")
        print(f"{'measure':<12} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, row in results.items():
            print(f"{name:<12} {row['p50_ms']:>8} {row['p90_ms']:>8} {row['p99_ms']:>8} {row['max_ms']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
