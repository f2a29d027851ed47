"""Drives aop's MCP server with the official Python SDK (`mcp`, pinned in
tests/otel/requirements.txt) and prints what it saw as one JSON document, for tests/it/mcp.rs
to judge.

    client.py --stdio AOP_BINARY --url URL [--token T] [--allow-stop] < calls.json
    client.py --http URL/mcp [--token T] [--origin O] < calls.json

`calls.json` is a list of [tool, arguments]. The output: the server's name, the tools listed
(names, schemas) and, per call, isError, the structured content and the text; or, when the
connection itself fails, {"refused": "<the error>"}.
"""

import argparse
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def flatten(e: BaseException) -> str:
    """An exception group's leaves, joined: anyio wraps transport failures in groups."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(flatten(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}"


async def run(args, calls):
    if args.stdio:
        cmd = ["mcp", "--url", args.url]
        if args.token:
            cmd += ["--token", args.token]
        if args.allow_stop:
            cmd.append("--mcp-allow-stop")
        server = StdioServerParameters(command=args.stdio, args=cmd, env={"AOP_LOG": "warn"})
    else:
        headers = {}
        if args.token:
            headers["Authorization"] = f"Bearer {args.token}"
        if args.origin:
            headers["Origin"] = args.origin
        http = httpx2.AsyncClient(headers=headers, timeout=120)
        server = streamable_http_client(args.http, http_client=http)
    out = {"calls": []}
    try:
        async with Client(server, read_timeout_seconds=120) as client:
            info = client.session.server_info if hasattr(client.session, "server_info") else None
            out["server"] = getattr(info, "name", None)
            out["protocol_version"] = getattr(client.session, "protocol_version", None)
            listed = await client.list_tools()
            out["tools"] = [
                {"name": t.name, "input_schema": t.input_schema, "output_schema": t.output_schema,
                 "description": t.description}
                for t in listed.tools
            ]
            for name, arguments in calls:
                try:
                    r = await client.call_tool(name, arguments)
                    texts = [c.text for c in r.content if getattr(c, "type", None) == "text"]
                    out["calls"].append({"tool": name, "is_error": r.is_error,
                                         "structured": r.structured_content, "text": "\n".join(texts)})
                except Exception as e:  # a protocol error: reported, the rest still run
                    out["calls"].append({"tool": name, "protocol_error": flatten(e)})
    except BaseException as e:  # the connection itself: refused, or the server went away
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        out["refused"] = flatten(e)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stdio", help="the aop binary, run as `aop mcp`")
    p.add_argument("--url", help="the collector aop mcp asks")
    p.add_argument("--http", help="the /mcp endpoint")
    p.add_argument("--token")
    p.add_argument("--origin")
    p.add_argument("--allow-stop", action="store_true")
    args = p.parse_args()
    calls = json.load(sys.stdin)
    print(json.dumps(asyncio.run(run(args, calls))))


if __name__ == "__main__":
    main()
