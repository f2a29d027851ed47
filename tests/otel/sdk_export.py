"""One agent run traced by hand with the OpenTelemetry SDK and exported to aop over OTLP.

Exercises the GenAI semantic conventions as an agent framework emits them, through the SDK's own
`OTLPSpanExporter` (HTTP/protobuf or gRPC, gzip or not) behind a real span processor:

    invoke_agent research-agent          root agent span: gen_ai.agent.name, gen_ai.conversation.id
    ├── chat gpt-4o                      LLM call: provider, request model, input/output tokens
    ├── execute_tool web_search          a tool call that succeeds
    ├── execute_tool fetch_page          a tool call that fails: ERROR status + an `exception` event
    ├── parse_results                    a plain internal span (no GenAI attributes)
    ├── invoke_agent summarizer          a nested agent span...
    │   └── chat gpt-4o-mini             ...with an LLM call of its own
    ├── chat gpt-4o                      a second LLM call
    └── execute_tool poll_job  x N       with --loop N: the same call, same input and result, N times

Prints one JSON object: the trace id, the conversation id, the spans, and what the exporter
answered to each export (`"ok"` is true only if every export succeeded).
"""

import argparse
import secrets

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

import exporting

# Token counts of the three LLM calls, in the order they happen; the tests add them up.
MAIN_CHATS = [("gpt-4o", 100, 20), ("gpt-4o", 150, 30)]
SUMMARIZER_CHAT = ("gpt-4o-mini", 80, 16)


def chat(tracer, model: str, input_tokens: int, output_tokens: int) -> None:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "gen_ai.response.finish_reasons": ["stop"],
    }
    with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes):
        pass


def tool(tracer, name: str, call_id: str, arguments: str, result: str) -> None:
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.type": "function",
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.call.arguments": arguments,
        "gen_ai.tool.call.result": result,
    }
    with tracer.start_as_current_span(f"execute_tool {name}", attributes=attributes):
        pass


def failing_tool(tracer) -> None:
    """A tool that raises: the SDK records the exception as a span event and sets ERROR status."""
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "fetch_page",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.call.id": "call_fetch_1",
        "gen_ai.tool.call.arguments": '{"url": "https://example.com/slow"}',
    }
    try:
        with tracer.start_as_current_span("execute_tool fetch_page", attributes=attributes) as span:
            span.set_attribute("error.type", "TimeoutError")
            raise TimeoutError("fetch_page timed out after 30 s")
    except TimeoutError:
        pass


def agent_run(tracer, agent: str, conversation_id: str, loop: int, fail: bool) -> None:
    root_attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent,
        "gen_ai.conversation.id": conversation_id,
        "gen_ai.provider.name": "openai",
    }
    with tracer.start_as_current_span(f"invoke_agent {agent}", attributes=root_attributes) as root:
        chat(tracer, *MAIN_CHATS[0])
        tool(tracer, "web_search", "call_search_1", '{"query": "otlp span kinds"}', "3 results")
        failing_tool(tracer)
        with tracer.start_as_current_span("parse_results", attributes={"results.count": 3}):
            pass
        summarizer = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "summarizer"}
        with tracer.start_as_current_span("invoke_agent summarizer", attributes=summarizer):
            chat(tracer, *SUMMARIZER_CHAT)
        chat(tracer, *MAIN_CHATS[1])
        for i in range(loop):
            tool(tracer, "poll_job", f"call_poll_{i}", '{"job": 7}', "still queued")
        if fail:
            root.set_status(Status(StatusCode.ERROR, "the agent gave up"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    exporting.add_arguments(parser)
    parser.add_argument("--processor", choices=("batch", "simple"), default="batch",
                        help="batch: one export at the flush; simple: one export per span as it ends")
    parser.add_argument("--agent", default="research-agent", help="gen_ai.agent.name of the root span")
    parser.add_argument("--service", default="otel-test-app", help="the resource's service.name")
    parser.add_argument("--conversation-id", help="gen_ai.conversation.id (default: a fresh random one)")
    parser.add_argument("--loop", type=int, default=0, metavar="N", help="N identical execute_tool spans")
    parser.add_argument("--fail", action="store_true", help="the root span ends with ERROR status")
    parser.add_argument("--resend", action="store_true",
                        help="after the flush, export every span once more (as an exporter's retry would)")
    args = parser.parse_args()

    conversation_id = args.conversation_id or f"conv-{secrets.token_hex(6)}"
    recording = exporting.Recording(exporting.make_exporter(args))
    provider = TracerProvider(resource=Resource.create({"service.name": args.service}))
    processor = BatchSpanProcessor(recording) if args.processor == "batch" else SimpleSpanProcessor(recording)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("aop.tests.sdk_export", "1.0.0")

    agent_run(tracer, args.agent, conversation_id, args.loop, args.fail)
    flushed = provider.force_flush(timeout_millis=int(args.timeout * 1000) + 5000)
    if args.resend:
        recording.resend()
    provider.shutdown()

    spans = [exporting.describe(s) for s in recording.spans]
    exporting.report({
        "ok": flushed and recording.succeeded(),
        "exports": recording.result_names(),
        "trace_ids": sorted({s["trace_id"] for s in spans}),
        "conversation_id": conversation_id,
        "spans": spans,
    })


if __name__ == "__main__":
    main()
