"""The OpenTelemetry SDK's own OTLP span exporters, set up from the command line or the environment.

Shared by the test clients in this directory, so that every one of them reaches aop the way an
instrumented application does: through `OTLPSpanExporter` (HTTP/protobuf or gRPC), never through a
hand-written request.
"""

import argparse
import json
import os
import sys

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

PROTOCOLS = ("http/protobuf", "grpc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every client takes to find aop."""
    parser.add_argument("--endpoint", help="aop's base URL, e.g. http://127.0.0.1:4317 (no /v1/traces)")
    parser.add_argument("--token", help="aop's access token, sent as Authorization: Bearer")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="http/protobuf")
    parser.add_argument("--compression", choices=("none", "gzip"), default="none")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per export (retries included)")
    parser.add_argument(
        "--from-env",
        action="store_true",
        help="configure the exporter only from OTEL_EXPORTER_OTLP_* (ENDPOINT, PROTOCOL, HEADERS, ...)",
    )


def make_exporter(args: argparse.Namespace) -> SpanExporter:
    """An OTLP span exporter as the options (or, with --from-env, only the environment) say."""
    if args.from_env:
        # What `opentelemetry-instrument` does: the protocol picks the exporter, which reads the rest
        # (endpoint, headers, compression, timeout) from OTEL_EXPORTER_OTLP_* itself.
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        sys.exit(f"unsupported OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}")

    if not args.endpoint:
        sys.exit("--endpoint is required unless --from-env")
    base = args.endpoint.rstrip("/")
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    if args.protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        compression = grpc.Compression.Gzip if args.compression == "gzip" else grpc.Compression.NoCompression
        return OTLPSpanExporter(
            endpoint=base, insecure=True, headers=headers, timeout=args.timeout, compression=compression
        )

    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    compression = Compression.Gzip if args.compression == "gzip" else Compression.NoCompression
    return OTLPSpanExporter(
        endpoint=f"{base}/v1/traces", headers=headers, timeout=args.timeout, compression=compression
    )


class Recording(SpanExporter):
    """Passes every batch to the real exporter and remembers the spans and what it answered.

    The span processors only log a failed export; this keeps the exporter's own result so the
    client can report it, and the spans so they can be sent again (as an exporter's retry would).
    """

    def __init__(self, inner: SpanExporter):
        self.inner = inner
        self.spans = []
        self.results = []

    def export(self, spans):
        result = self.inner.export(spans)
        self.spans.extend(spans)
        self.results.append(result)
        return result

    def resend(self) -> SpanExportResult:
        """Exports every span seen so far once more, in one batch."""
        result = self.inner.export(list(self.spans))
        self.results.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def succeeded(self) -> bool:
        return bool(self.results) and all(r is SpanExportResult.SUCCESS for r in self.results)

    def result_names(self) -> list:
        return [r.name for r in self.results]


def trace_hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def span_hex(span_id: int) -> str:
    return format(span_id, "016x")


def describe(span) -> dict:
    """A finished span as the summary lists it."""
    parent = span.parent.span_id if span.parent is not None else None
    return {
        "name": span.name,
        "trace_id": trace_hex(span.context.trace_id),
        "span_id": span_hex(span.context.span_id),
        "parent_span_id": span_hex(parent) if parent is not None else None,
        "status": span.status.status_code.name,
    }


def report(summary: dict) -> None:
    """The client's one line of output: a JSON object on stdout."""
    print(json.dumps(summary, sort_keys=True), flush=True)
