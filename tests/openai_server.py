"""A local server speaking the OpenAI chat-completions and embeddings wire formats: the test
double for hosted LLM APIs (which this machine cannot reach). It answers from the prompt, can be told to fail or
to stall, and records what it was asked."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OpenAIServer:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.fail_with: int | None = None
        self.stall_s = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                if outer.stall_s:
                    time.sleep(outer.stall_s)
                if outer.fail_with:
                    self.send_response(outer.fail_with)
                    self.end_headers()
                    return
                if self.path.endswith("/embeddings"):
                    # Deterministic vectors from the text (8 dims): enough to check the wire format.
                    import hashlib

                    rows = [{"object": "embedding", "index": i,
                             "embedding": [b / 255 for b in hashlib.sha256(t.encode()).digest()[:8]]}
                            for i, t in enumerate(body["input"])]
                    self._json({"object": "list", "data": rows[::-1], "model": body["model"]})
                    return
                prompt = body["messages"][-1]["content"]
                text = f"echo from {body['model']}: {prompt}"
                reply = {"id": "cmpl-1", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                                   "total_tokens": len(prompt.split()) + len(text.split())}}
                self._json(reply)

            def _json(self, reply: dict) -> None:
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:
                    pass  # the client gave up waiting (the stall test): nothing to answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
