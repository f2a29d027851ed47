"""A tiny OpenAI-compatible HTTP server on loopback, for the `openai` client the instrumentors hook.

Answers `POST /v1/chat/completions` (non-streaming) and `POST /v1/embeddings` with well-formed
responses that carry `usage`, echoing the requested model. Token counts follow from the request
(so each call's differ, and the client reports what it got). Binds 127.0.0.1 on a free port
(or --port), prints `{"port": N}` on stdout once it listens, and serves until killed or until its
stdin closes.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def words(value) -> int:
    """A stand-in tokenizer: the number of words in every string of the value."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(words(v) for v in value)
    if isinstance(value, dict):
        return sum(words(v) for v in value.values())
    return 0


def chat_completion(request: dict) -> dict:
    prompt_tokens = 5 + words(request.get("messages", []))
    reply = f"A fake answer to {len(request.get('messages', []))} message(s)."
    completion_tokens = len(reply.split())
    return {
        "id": f"chatcmpl-fake{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "unknown"),
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def embeddings(request: dict) -> dict:
    inputs = request.get("input", [])
    inputs = [inputs] if isinstance(inputs, str) else inputs
    prompt_tokens = max(1, words(inputs))
    return {
        "object": "list",
        "model": request.get("model", "unknown"),
        "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


ROUTES = {"/v1/chat/completions": chat_completion, "/v1/embeddings": embeddings}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        route = ROUTES.get(self.path.split("?")[0])
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if route is None:
            return self.answer(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return self.answer(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
        if request.get("stream"):
            return self.answer(400, {"error": {"message": "streaming is not faked", "type": "invalid_request_error"}})
        self.answer(200, route(request))

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        sys.stderr.write("fake_openai: " + format % args + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    # Serve until whoever started us closes our stdin (or kills us).
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
