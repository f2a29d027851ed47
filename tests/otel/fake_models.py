"""A scripted model server on loopback for real coding-agent CLIs (Claude Code, Codex), streaming.

Speaks two wire protocols on one port:

    POST /v1/messages     the Anthropic Messages API (Claude Code), as Server-Sent Events:
                          message_start, content_block_start/delta/stop (text and tool_use),
                          message_delta (stop_reason, usage), message_stop
    POST /v1/responses    the OpenAI Responses API (Codex), as Server-Sent Events:
                          response.created, output items (function calls, messages),
                          response.completed (usage)

It plays a scenario (--scenario) and decides each reply from how many tool results the
conversation already holds, so a request sent again gets the same step again:

    basic     list the files, read README.md, run a command that fails, then a final answer
    loop      the same shell command five times, then a final answer
    subagent  (Claude Code) call the Agent tool for a general-purpose subagent, then a final answer;
              the subagent runs one shell command, then answers
    mcp       ask aop over MCP: its `list_sessions` tool for the runs of research-agent, then its
              `compare_with_similar` tool with the id of the failed run that list named (read from
              the tool result the conversation holds), then a final answer; the tools are the
              offered ones whose names end in `list_sessions` and `compare_with_similar` (Claude Code
              names them `mcp__aop__list_sessions`, …)

Claude Code marks its subagents' requests with the header `x-claude-code-agent-id` (the subagent's
id, as in its telemetry's `agent_id`; the main thread's requests have none) and with
`cc_is_subagent=true;` in the billing line that opens the system prompt, which is then the
subagent's own (and its tools differ a little: no ScheduleWakeup, no Workflow, Agent kept). The
metadata and `X-Claude-Code-Session-Id` are the parent's. The header is what tells a subagent's
request here.

Every request it gets, whatever its path, is appended to --record as one JSON line: the method,
path, headers, parsed body, the step it answered, whether a subagent asked, and what it answered
(so a test can check what reached the model, e.g. that the failing command's result came back as
an error). Token counts are computed from the request's and the reply's sizes, about four
characters a token.

Binds 127.0.0.1 on --port (0: a free one) and writes the port to --port-file once it listens
(written whole: a reader never sees a partial number). Serves until killed.
"""

import argparse
import json
import os
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The command that fails: a file that does not exist, read by a command every shell has.
FAILING_COMMAND = "cat /nonexistent-fake-models-file"
LOOP_COMMAND = "ls -1"
FINAL_BASIC = "Done: I listed the files, read README.md, and the last command failed because the file does not exist."
FINAL_LOOP = "Done: I ran the same command five times."
SUBAGENT_TASK = "Run `ls -1` in the working directory and report what it prints."
SUBAGENT_ANSWER = "The working directory holds README.md, main.py and notes.txt."
FINAL_SUBAGENT = "Done: the subagent listed the files: README.md, main.py and notes.txt."
MCP_AGENT = "research-agent"
FINAL_MCP = "Done: the failed run {failed} left the path of {similar} where aop says."
FINAL_MCP_NOT_FOUND = "I found no failed run of research-agent in what list_sessions answered."


# --------------------------------------------------------------------------- scenarios
#
# A step is one of ("list",), ("read", file), ("run", command), ("agent", task), ("mcp", tool,
# arguments) or ("answer", text): what the model asks for next. Each wire protocol turns it into the
# tool the client offered. A scenario is given each tool result the conversation holds, in order, as
# (the name of the tool called, the result as text) — how many there are says how far it got — and
# whether a subagent asks.


def basic(done: list, sub: bool = False):
    done = len(done)
    steps = [("list",), ("read", "README.md"), ("run", FAILING_COMMAND)]
    return steps[done] if done < len(steps) else ("answer", FINAL_BASIC)


def loop(done: list, sub: bool = False):
    done = len(done)
    return ("run", LOOP_COMMAND) if done < 5 else ("answer", FINAL_LOOP)


def subagent(done: list, sub: bool = False):
    done = len(done)
    if sub:
        return ("run", LOOP_COMMAND) if done < 1 else ("answer", SUBAGENT_ANSWER)
    return ("agent", SUBAGENT_TASK) if done < 1 else ("answer", FINAL_SUBAGENT)


def json_document(text: str):
    """The first JSON object in a tool result's text, or None: clients pass an MCP tool's
    structured answer on as JSON with words of their own around it (Claude Code adds reminders
    after it, Codex puts "Wall time: … Output:" before it)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            return decoder.raw_decode(text, match.start())[0]
        except ValueError:
            continue
    return None


def failed_run(listed: str):
    """The id of the first failed session in a `list_sessions` answer: from its JSON document
    (`{"sessions": [{id, status, …}]}`) if the client passed that on, else from its text, where
    each session is a line `ID · agent AGENT · STATUS · …`."""
    document = json_document(listed)
    if isinstance(document, dict) and isinstance(document.get("sessions"), list):
        for row in document["sessions"]:
            if isinstance(row, dict) and row.get("status") == "failed":
                return row.get("id")
    for line in listed.splitlines():
        match = re.match(r"^(\S+) · agent (\S+) · failed\b", line.strip())
        if match:
            return match.group(1)
    return None


def is_mcp_tool(name: str, tool: str) -> bool:
    """Whether `name` is how a client names the MCP tool `tool`: as it is, or prefixed with its
    server (`mcp__aop__list_sessions`)."""
    return name == tool or name.endswith("__" + tool)


def mcp(done: list, sub: bool = False):
    # The results of aop's tools (a client may have run others first, e.g. to load their schemas).
    answers = {}
    for name, text in done:
        for tool in ("list_sessions", "compare_with_similar"):
            if is_mcp_tool(name, tool):
                answers.setdefault(tool, text)
    if "list_sessions" not in answers:
        return ("mcp", "list_sessions", {"agent": MCP_AGENT})
    failed = failed_run(answers["list_sessions"])
    if not failed:
        return ("answer", FINAL_MCP_NOT_FOUND)
    if "compare_with_similar" not in answers:
        return ("mcp", "compare_with_similar", {"id": failed})
    compared = answers["compare_with_similar"]
    document = json_document(compared)
    similar = document.get("similar_to") if isinstance(document, dict) else None
    if not similar:
        found = re.search(r"^A: (\S+) · agent ", compared, re.M)
        similar = found.group(1) if found else "its most similar run"
    return ("answer", FINAL_MCP.format(failed=failed, similar=similar))


SCENARIOS = {"basic": basic, "loop": loop, "subagent": subagent, "mcp": mcp}


def tokens(value) -> int:
    """About four characters a token, at least one: the size of what was sent or answered."""
    return max(1, len(json.dumps(value, ensure_ascii=False)) // 4)


def sse(events) -> bytes:
    return b"".join(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode() for data in events)


def event(kind: str, **fields) -> dict:
    """One streamed event: its `type` is also the SSE event's name."""
    return {"type": kind, **fields}


# --------------------------------------------------------------------------- Anthropic


def anthropic_tool_results(request: dict) -> list:
    results = []
    for message in request.get("messages", []):
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, list):
            results.extend(block for block in content if block.get("type") == "tool_result")
    return results


def anthropic_tool_uses(request: dict) -> list:
    uses = []
    for message in request.get("messages", []):
        content = message.get("content")
        if message.get("role") == "assistant" and isinstance(content, list):
            uses.extend(block for block in content if block.get("type") == "tool_use")
    return uses


def anthropic_done(request: dict) -> list:
    """The conversation's tool results as (tool name, text)."""
    names = {use.get("id"): use.get("name", "") for use in anthropic_tool_uses(request)}
    results = anthropic_tool_results(request)
    return [(names.get(r.get("tool_use_id"), ""), result_text(r.get("content"))) for r in results]


def result_text(content) -> str:
    """A tool result's content as text: a string as it is, blocks' texts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(result_text(part) for part in content)
    if isinstance(content, dict):
        return content["text"] if isinstance(content.get("text"), str) else json.dumps(content)
    return ""


def offered_mcp_tool(names, tool: str) -> str:
    """The offered tool that is aop's MCP tool `tool`: the name ending in `__tool` (clients prefix
    an MCP server's tools with its name), aop's first. A LookupError if none is."""
    found = sorted((n for n in names if n and is_mcp_tool(n, tool)), key=lambda n: "aop" not in n)
    if not found:
        raise LookupError(f"no MCP tool {tool!r} among those offered: {sorted(n for n in names if n)}")
    return found[0]


def deferred_mcp_tool(request: dict, tool: str):
    """Claude Code's name for the MCP tool `tool` when it defers it: it offers `ToolSearch` and only
    names the deferred tools in a system reminder, and a model must load a tool's schema with
    ToolSearch ("select:NAME") before it may call it. None if it is not deferred."""
    names = {t.get("name") for t in request.get("tools", []) if isinstance(t, dict)}
    if "ToolSearch" not in names:
        return None
    found = sorted(
        {m for text in strings(request.get("messages", [])) for m in re.findall(r"\bmcp__\w+?__" + tool + r"\b", text)},
        key=lambda n: "aop" not in n,
    )
    return found[0] if found else None


def strings(value):
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)


def working_directory(request: dict, given: str) -> str:
    """Where Claude Code runs (its Read tool wants absolute paths): as given, else as it names it
    in its first user message."""
    if given:
        return given
    for text in strings(request.get("messages", [])):
        match = re.search(r"Primary working directory: (\S+)", text)
        if match:
            return match.group(1)
    return ""


def anthropic_reply(request: dict, step, cwd: str):
    """The step as Anthropic content blocks and a stop reason."""
    kind = step[0]
    if kind == "answer":
        return [{"type": "text", "text": step[1]}], "end_turn"
    if kind == "list":
        tool, args = "Bash", {"command": "ls -la", "description": "List the files in the working directory"}
    elif kind == "agent":
        # In the foreground, so the parent's turn waits for it (older versions call the tool Task).
        tool, args = "Agent", {
            "description": "List the files",
            "prompt": step[1],
            "subagent_type": "general-purpose",
            "run_in_background": False,
        }
    elif kind == "mcp":
        offered = [t.get("name") for t in request.get("tools", []) if isinstance(t, dict)]
        try:
            tool, args = offered_mcp_tool(offered, step[1]), step[2]
        except LookupError:
            deferred = deferred_mcp_tool(request, step[1])
            searched = [u for u in anthropic_tool_uses(request) if u.get("name") == "ToolSearch"]
            if not deferred or any(deferred in json.dumps(u.get("input")) for u in searched):
                raise  # not deferred, or loading it did not make it callable
            # As a model does: load the deferred tool's schema, then call it at the next step.
            tool, args = "ToolSearch", {"query": f"select:{deferred}", "max_results": 5}
    elif kind == "read":
        path = os.path.join(cwd, step[1]) if cwd else step[1]
        tool, args = "Read", {"file_path": path}
    else:
        tool, args = "Bash", {"command": step[1], "description": "Run a command"}
    preface = {"type": "text", "text": f"Next I will use {tool}."}
    call = {"type": "tool_use", "id": f"toolu_{secrets.token_hex(12)}", "name": tool, "input": args}
    return [preface, call], "tool_use"


def anthropic_stream(request: dict, blocks: list, stop_reason: str) -> bytes:
    usage = {
        "input_tokens": tokens(request.get("messages", [])) + tokens(request.get("system", "")),
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = {
        "id": f"msg_{secrets.token_hex(12)}",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "claude-sonnet-4-5"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    events = [event("message_start", message=message), event("ping")]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            events.append(event("content_block_start", index=index, content_block={"type": "text", "text": ""}))
            delta = {"type": "text_delta", "text": block["text"]}
            events.append(event("content_block_delta", index=index, delta=delta))
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            events.append(event("content_block_start", index=index, content_block=start))
            args = json.dumps(block["input"])
            # Two fragments, as a real stream splits a tool's input.
            for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                delta = {"type": "input_json_delta", "partial_json": part}
                events.append(event("content_block_delta", index=index, delta=delta))
        events.append(event("content_block_stop", index=index))
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    events.append(event("message_delta", delta=delta, usage={"output_tokens": tokens(blocks)}))
    events.append(event("message_stop"))
    return sse(events)


# --------------------------------------------------------------------------- OpenAI Responses

# Codex's shell tools, in the order they are preferred, and how each takes its command.
SHELL_TOOLS = {
    "shell_command": lambda command: {"command": command},
    "exec_command": lambda command: {"cmd": command},
    "shell": lambda command: {"command": ["bash", "-lc", command]},
}


def openai_tool_results(request: dict) -> list:
    items = request.get("input", [])
    kinds = ("function_call_output", "custom_tool_call_output")
    return [item for item in items if isinstance(item, dict) and item.get("type") in kinds]


def openai_done(request: dict) -> list:
    """The conversation's tool results as (tool name, text)."""
    items = [item for item in request.get("input", []) if isinstance(item, dict)]
    calls = [item for item in items if item.get("type") in ("function_call", "custom_tool_call")]
    names = {item.get("call_id"): item.get("name", "") for item in calls}
    return [(names.get(r.get("call_id"), ""), result_text(r.get("output"))) for r in openai_tool_results(request)]


def offered_shell(request: dict) -> str:
    names = {tool.get("name") for tool in request.get("tools", []) if isinstance(tool, dict)}
    for name in SHELL_TOOLS:
        if name in names:
            return name
    raise LookupError(f"no shell tool among those offered: {sorted(n for n in names if n)}")


def offered_namespaced_tool(request: dict, tool: str) -> tuple:
    """Codex offers an MCP server's tools as one `namespace` tool (`mcp__aop`) holding its functions
    (`list_sessions`); a call names both, in `namespace` and `name`. (namespace, name) of aop's
    tool `tool`, or (None, name) if it is offered as a plain function."""
    spaces = [t for t in request.get("tools", []) if isinstance(t, dict) and t.get("type") == "namespace"]
    for space in sorted(spaces, key=lambda t: "aop" not in str(t.get("name"))):
        names = [t.get("name") for t in space.get("tools", []) if isinstance(t, dict)]
        if tool in names:
            return space.get("name"), tool
    offered = [t.get("name") for t in request.get("tools", []) if isinstance(t, dict)]
    return None, offered_mcp_tool(offered, tool)


def openai_reply(request: dict, step) -> list:
    """The step as Responses API output items."""
    kind = step[0]
    if kind == "answer":
        return [
            {
                "type": "message",
                "id": f"msg_{secrets.token_hex(12)}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": step[1], "annotations": []}],
            }
        ]
    namespace = None
    if kind == "mcp":
        namespace, tool = offered_namespaced_tool(request, step[1])
        arguments = step[2]
    else:
        command = {"list": "ls -la", "read": f"cat {step[-1]}", "run": step[-1]}[kind]
        tool = offered_shell(request)
        arguments = SHELL_TOOLS[tool](command)
    return [
        {
            "type": "function_call",
            "id": f"fc_{secrets.token_hex(12)}",
            "call_id": f"call_{secrets.token_hex(12)}",
            "name": tool,
            **({"namespace": namespace} if namespace else {}),
            "arguments": json.dumps(arguments),
            "status": "completed",
        }
    ]


def openai_stream(request: dict, items: list) -> bytes:
    base = {
        "id": f"resp_{secrets.token_hex(12)}",
        "object": "response",
        "created_at": int(time.time()),
        "model": request.get("model", "fake-model"),
        "output": [],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
    }
    events = [
        event("response.created", response={**base, "status": "in_progress"}),
        event("response.in_progress", response={**base, "status": "in_progress"}),
    ]
    for index, item in enumerate(items):
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            added = {**item, "arguments": "", "status": "in_progress"}
            events.append(event("response.output_item.added", output_index=index, item=added))
            events.append(event("response.function_call_arguments.delta", **at, delta=item["arguments"]))
            events.append(event("response.function_call_arguments.done", **at, arguments=item["arguments"]))
        else:
            text = item["content"][0]["text"]
            added = {**item, "status": "in_progress", "content": []}
            events.append(event("response.output_item.added", output_index=index, item=added))
            part = {"type": "output_text", "text": "", "annotations": []}
            events.append(event("response.content_part.added", **at, content_index=0, part=part))
            events.append(event("response.output_text.delta", **at, content_index=0, delta=text))
            events.append(event("response.output_text.done", **at, content_index=0, text=text))
            events.append(event("response.content_part.done", **at, content_index=0, part={**part, "text": text}))
        events.append(event("response.output_item.done", output_index=index, item=item))
    input_tokens = tokens(request.get("input", [])) + tokens(request.get("instructions", ""))
    output_tokens = tokens(items)
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
    done = {**base, "status": "completed", "output": items, "usage": usage}
    events.append(event("response.completed", response=done))
    return sse([{**data, "sequence_number": n} for n, data in enumerate(events)])


# --------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "FakeModels"

    def do_POST(self):
        self.handle_request()

    def do_GET(self):
        self.handle_request()

    def handle_request(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        entry = {"time": time.time(), "method": self.command, "path": self.path, "headers": dict(self.headers.items())}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        entry["body"] = body
        status, content_type, data = 404, "application/json", None
        try:
            if self.command == "POST" and path == "/v1/messages" and isinstance(body, dict):
                done = anthropic_done(body)
                sub = bool(self.headers.get("x-claude-code-agent-id"))
                step = self.server.scenario(done, sub)
                blocks, stop = anthropic_reply(body, step, working_directory(body, self.server.workdir))
                entry["answer"] = {"step": len(done), "subagent": sub, "content": blocks, "stop_reason": stop}
                status, content_type, data = 200, "text/event-stream", anthropic_stream(body, blocks, stop)
            elif self.command == "POST" and path == "/v1/responses" and isinstance(body, dict):
                done = openai_done(body)
                items = openai_reply(body, self.server.scenario(done))
                entry["answer"] = {"step": len(done), "output": items}
                status, content_type, data = 200, "text/event-stream", openai_stream(body, items)
        except LookupError as e:
            status, data = 400, json.dumps({"error": {"type": "invalid_request_error", "message": str(e)}}).encode()
        if data is None:
            error = {"type": "not_found_error", "message": f"no route {self.command} {path}"}
            data = json.dumps({"error": error}).encode()
        entry["status"] = status
        self.server.record(entry)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", f"req_{secrets.token_hex(12)}")
        self.send_header("x-request-id", f"req_{secrets.token_hex(12)}")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        sys.stderr.write("fake_models: " + format % args + "\n")


class FakeModels(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, scenario: str, record_path: str, workdir: str = ""):
        super().__init__(("127.0.0.1", port), Handler)
        self.scenario = SCENARIOS[scenario]
        self.workdir = workdir
        self.record_path = record_path
        self.lock = threading.Lock()

    def record(self, entry: dict) -> None:
        if not self.record_path:
            return
        with self.lock, open(self.record_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def write_whole(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="where to write the port once listening")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="basic")
    parser.add_argument("--record", default="", help="append every request here as a JSON line")
    parser.add_argument("--workdir", default="", help="the agent's working directory (else read from the request)")
    args = parser.parse_args()
    server = FakeModels(args.port, args.scenario, args.record, args.workdir)
    if args.port_file:
        write_whole(args.port_file, str(server.server_address[1]))
    port = server.server_address[1]
    print(f"fake_models: listening on 127.0.0.1:{port} ({args.scenario})", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
