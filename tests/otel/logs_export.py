"""Log records (events) of one agent conversation, exported to aop by the SDK's own OTLP log
exporters (HTTP/protobuf, HTTP/JSON or gRPC, gzip or not) behind a real batch processor:

    user_prompt                        only a conversation id (`session.id`): the conversation's session
    gen_ai.client.inference.operation.details
                                       a GenAI event inside a span, its messages in a structured
                                       body (a map of arrays of maps): the span's trace's session
    tool_result                        only a conversation id, with an `event.sequence`
    gen_ai.client.inference.operation.details
                                       outside any span, with its model, usage and messages: the
                                       conversation's model call
    exception                          outside any span: a failed step of the conversation

With --resend, every record is exported once more in one batch, as an exporter's retry would.
Prints one JSON object: the conversation id, the trace id and span id of the span, the records,
and what the exporter answered to each export (`"ok"` is true only if every export succeeded).
"""

import argparse
import json
import secrets
import time

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

PROTOCOLS = ("http/protobuf", "http/json", "grpc")


def make_exporter(args) -> LogRecordExporter:
    base = args.endpoint.rstrip("/")
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    if args.protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        compression = grpc.Compression.Gzip if args.compression == "gzip" else grpc.Compression.NoCompression
        return OTLPLogExporter(endpoint=base, insecure=True, headers=headers, timeout=10, compression=compression)
    if args.protocol == "http/json":
        from opentelemetry.exporter.otlp.common.http import Compression
        from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter

        compression = Compression.GZIP if args.compression == "gzip" else Compression.NONE
        return OTLPLogExporter(endpoint=f"{base}/v1/logs", headers=headers, timeout=10, compression=compression)
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    compression = Compression.Gzip if args.compression == "gzip" else Compression.NoCompression
    return OTLPLogExporter(endpoint=f"{base}/v1/logs", headers=headers, timeout=10, compression=compression)


class Recording(LogRecordExporter):
    """Passes every batch to the real exporter and remembers the records and what it answered."""

    def __init__(self, inner: LogRecordExporter):
        self.inner = inner
        self.records = []
        self.results = []

    def export(self, batch):
        result = self.inner.export(batch)
        self.records.extend(batch)
        self.results.append(result)
        return result

    def resend(self):
        self.results.append(self.inner.export(list(self.records)))

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True, help="aop's base URL (no /v1/logs)")
    parser.add_argument("--token")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="http/protobuf")
    parser.add_argument("--compression", choices=("none", "gzip"), default="none")
    parser.add_argument("--resend", action="store_true")
    args = parser.parse_args()

    conversation = f"conv-{secrets.token_hex(6)}"
    resource = Resource.create({"service.name": "support-bot"})
    recording = Recording(make_exporter(args))
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(recording))
    logger = provider.get_logger("support-bot.events")
    tracer = TracerProvider(resource=resource).get_tracer("support-bot")

    now = time.time_ns()
    logger.emit(
        timestamp=now,
        event_name="user_prompt",
        body="Where is my order?",
        attributes={"session.id": conversation, "event.sequence": 1, "prompt_length": 18},
    )
    with tracer.start_as_current_span("chat gpt-4o") as span:
        ctx = span.get_span_context()
        # The SDK's attributes hold only scalars and arrays of them; the messages go in the body,
        # which may be a map of arrays of maps.
        logger.emit(
            timestamp=now + 1_000_000,
            event_name="gen_ai.client.inference.operation.details",
            body={
                "gen_ai.input.messages": [
                    {"role": "user", "parts": [{"type": "text", "content": "Where is my order?"}]}
                ]
            },
            attributes={
                "gen_ai.conversation.id": conversation,
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.finish_reasons": ["stop"],
            },
        )
    logger.emit(
        timestamp=now + 2_000_000,
        event_name="tool_result",
        attributes={"session.id": conversation, "event.sequence": 2, "tool_name": "lookup_order", "success": "true"},
    )
    logger.emit(
        timestamp=now + 3_000_000,
        event_name="gen_ai.client.inference.operation.details",
        body={
            "gen_ai.output.messages": [
                {"role": "assistant", "parts": [{"type": "text", "content": "It ships tomorrow."}]}
            ]
        },
        attributes={
            "gen_ai.conversation.id": conversation,
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 8,
        },
    )
    logger.emit(
        timestamp=now + 4_000_000,
        event_name="exception",
        attributes={
            "gen_ai.conversation.id": conversation,
            "exception.type": "TimeoutError",
            "exception.message": "the order service did not answer",
        },
    )
    provider.force_flush()
    if args.resend:
        recording.resend()
    provider.shutdown()

    print(
        json.dumps(
            {
                "conversation": conversation,
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
                "records": len(recording.records),
                "results": [r.name for r in recording.results],
                "ok": bool(recording.results)
                and all(r is LogRecordExportResult.SUCCESS for r in recording.results),
            }
        )
    )


if __name__ == "__main__":
    main()
