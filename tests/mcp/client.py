"""Drives aop's MCP server with the official Python SDK (`mcp`, pinned in
tests/otel/requirements.txt) and prints what it saw as one JSON document, for tests/it/mcp.rs
to judge.

    client.py --stdio AOP_BINARY --url URL [--token T] [--allow-stop] --calls calls.json
    client.py --http URL/mcp [--token T] [--origin O] --calls calls.json
    client.py --config FILE --name aop --calls calls.json

`calls.json` is a list of [tool, arguments]. `--config` reads an MCP client's configuration file
(`{"mcpServers": {NAME: {"command", "args", "env"} or {"url", "headers"}}}`, as Cursor, Claude
Desktop and Claude Code's `.mcp.json` write it) and connects as it says. The output: the server's name, the tools listed
(names, schemas) and, per call, isError, the structured content and the text; or, when the
connection itself fails, {"refused": "<the error>"}.
"""

import argparse
import asyncio
import json

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def flatten(e: BaseException) -> str:
    """An exception group's leaves, joined: anyio wraps transport failures in groups."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(flatten(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}"


def from_config(path, name):
    """The server a client's config file names: a command to run, or a URL."""
    with open(path, encoding="utf-8") as f:
        entry = json.load(f)["mcpServers"][name]
    if "command" in entry:
        return StdioServerParameters(command=entry["command"], args=entry.get("args", []), env=entry.get("env"))
    http = httpx2.AsyncClient(headers=entry.get("headers", {}), timeout=120)
    return streamable_http_client(entry["url"], http_client=http)


async def run(args, calls):
    if args.config:
        server = from_config(args.config, args.name)
    elif args.stdio:
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
    p.add_argument("--config", help="an MCP client's config file")
    p.add_argument("--name", default="aop", help="the server's name in --config")
    p.add_argument("--calls", required=True, help="a JSON file: [[tool, arguments], ...]")
    args = p.parse_args()
    with open(args.calls, encoding="utf-8") as f:
        calls = json.load(f)
    print(json.dumps(asyncio.run(run(args, calls))))


if __name__ == "__main__":
    main()
