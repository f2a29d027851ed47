"""The `openai` client, instrumented by a real third-party instrumentor, exporting to aop over OTLP.

Exercises what an application gets from an instrumentation library without writing any span
itself: `--instrumentation openinference` (Arize's OpenInference: `openinference.span.kind`,
`llm.token_count.*`) or `--instrumentation openllmetry` (Traceloop's OpenLLMetry:
`gen_ai.*`, `llm.request.type`). The client makes two chat completions (and, with --embeddings, one
embeddings call) against an OpenAI-compatible server at --base-url (see fake_openai.py); the spans
go to aop through the SDK's OTLP exporter.

Each call is its own trace unless --parent NAME wraps them all in one span of that name.

Prints one JSON object: the trace ids, what the server answered to each call (model and usage), and
what the exporter answered (`"ok"` is true only if every export succeeded).
"""

import argparse

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import exporting

PROMPTS = [
    "Name three OpenTelemetry signals.",
    "Which one carries spans, in one word?",
]


def instrument(name: str, provider: TracerProvider):
    if name == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    else:
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    return instrumentor


def calls(client, model: str, with_embeddings: bool) -> list:
    """The calls the application makes; returns what the server said about each."""
    done = []
    messages = [{"role": "system", "content": "You answer briefly."}]
    for prompt in PROMPTS:
        messages.append({"role": "user", "content": prompt})
        response = client.chat.completions.create(model=model, messages=messages)
        messages.append({"role": "assistant", "content": response.choices[0].message.content})
        done.append({
            "operation": "chat",
            "model": response.model,
            "input_tokens": response.usage.prompt_tokens,
            "output_tokens": response.usage.completion_tokens,
        })
    if with_embeddings:
        response = client.embeddings.create(model="text-embedding-3-small", input=PROMPTS)
        done.append({
            "operation": "embeddings",
            "model": response.model,
            "input_tokens": response.usage.prompt_tokens,
            "output_tokens": 0,
        })
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    exporting.add_arguments(parser)
    parser.add_argument("--instrumentation", choices=("openinference", "openllmetry"), required=True)
    parser.add_argument("--base-url", required=True, help="the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--service", default="otel-openai-app", help="the resource's service.name")
    parser.add_argument("--parent", metavar="NAME", help="wrap every call in one span named NAME")
    parser.add_argument("--embeddings", action="store_true", help="also make one embeddings call")
    args = parser.parse_args()

    recording = exporting.Recording(exporting.make_exporter(args))
    provider = TracerProvider(resource=Resource.create({"service.name": args.service}))
    provider.add_span_processor(BatchSpanProcessor(recording))
    instrumentor = instrument(args.instrumentation, provider)

    import openai  # after instrumenting, as an application importing it anywhere would

    client = openai.OpenAI(base_url=args.base_url, api_key="sk-fake", max_retries=0, timeout=30)
    if args.parent:
        with provider.get_tracer("aop.tests.instrumented_openai").start_as_current_span(args.parent):
            results = calls(client, args.model, args.embeddings)
    else:
        results = calls(client, args.model, args.embeddings)

    flushed = provider.force_flush(timeout_millis=int(args.timeout * 1000) + 5000)
    instrumentor.uninstrument()
    provider.shutdown()

    spans = [exporting.describe(s) for s in recording.spans]
    exporting.report({
        "ok": flushed and recording.succeeded(),
        "exports": recording.result_names(),
        "openai_version": openai.__version__,
        "trace_ids": sorted({s["trace_id"] for s in spans}),
        "calls": results,
        "spans": spans,
    })


if __name__ == "__main__":
    main()
