"""A small OpenAI-compatible chat server of our own on 127.0.0.1 that misbehaves on request.

It answers ``POST /v1/chat/completions`` with a reply made by ``responder(body)`` (text, or a dict of
message fields and ``finish_reason`` for replies such as reasoning-only or cut-off ones), or, per request,
with a scripted fault: an HTTP error, a 429 with Retry-After, a reply that is not JSON, JSON without
choices, empty content, a hang longer than the client's timeout, or a dropped connection. With
``upstream`` set it forwards the requests it does not break to a real server (a fault-injecting proxy).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rs_vlm_app.mpgi.backends.openai_compat import PREFLIGHT_PROMPT

Action = str | tuple


def user_text(body: dict[str, Any]) -> str:
    """The user message's text of a chat request."""
    content = body["messages"][-1]["content"]
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content


def has_image(body: dict[str, Any]) -> bool:
    content = body["messages"][-1]["content"]
    return isinstance(content, list) and any(p.get("type") == "image_url" for p in content)


class FakeChatServer:
    def __init__(self, responder: Callable[[dict], str] | None = None, upstream: str | None = None):
        self.responder = responder
        self.upstream = upstream
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.faults: list[tuple[Action, dict]] = []  # (action, body) of every broken request
        self.replies: list[tuple[dict, Any]] = []  # (body, reply) of every answered request
        self._script: deque[Action] = deque()
        self.rule: Callable[[dict, int], Action | None] | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._counter = 0
        self.delay_s = 0.0  # how long each good reply takes
        self.in_flight = 0
        self.max_in_flight = 0
        self.answer_preflight = True  # answer the start-up check outside the script and the rule
        self.record = True  # keep every request and reply (a long benchmark turns this off)
        self.keep_bodies = False  # keep the bodies only, for GET .../_bodies (a benchmark replays them)
        self.bodies: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------ set-up
    def script(self, *actions: Action) -> None:
        """Actions for the next requests, in arrival order ('ok' lets one through)."""
        self._script.extend(actions)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeChatServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as inference servers set it: without it a reply written as headers, then
            # body waits out the client's delayed ACK (about 40 ms more on every request)
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path.endswith("/_bodies"):  # the chat bodies received since the last call
                    with owner._lock:
                        bodies, owner.bodies = owner.bodies, []
                    self._send(200, bodies)
                    return
                self._send(200, {"status": "ok"} if self.path.endswith("health") else {"object": "list", "data": []})

            def do_POST(self):
                owner.headers.append(dict(self.headers))
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    self._send(400, {"error": "bad json"})
                    return
                owner._handle(self, body)

            def _send(self, status: int, payload: Any, headers: dict | None = None, raw: bytes | None = None):
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default listen backlog (5) resets a burst of 64 clients

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop_listening(self) -> None:
        """Refuse new connections from now on (open ones stay until closed); callable from a rule."""
        server = self._server

        def close():
            server.shutdown()
            server.socket.close()

        threading.Thread(target=close, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------------------- answering
    def _handle(self, handler, body: dict) -> None:
        if user_text(body) == PREFLIGHT_PROMPT and self.answer_preflight:  # the build's start-up check
            handler._send(200, completion("OK"))
            return
        with self._lock:
            self._counter += 1
            number = self._counter
            if self.record:
                self.requests.append(body)
            if self.keep_bodies:
                self.bodies.append(body)
            action: Action | None = self._script.popleft() if self._script else None
            if action is None and self.rule is not None:
                action = self.rule(body, number)
        action = action or "ok"
        kind = action[0] if isinstance(action, tuple) else action
        if kind != "ok":
            with self._lock:
                self.faults.append((action, body))
        if kind == "ok":
            self._reply(handler, body, number)
        elif kind == "status":
            _, status, *rest = action
            headers = {"Retry-After": str(rest[0])} if rest else {}
            handler._send(status, {"error": {"message": f"injected {status}"}}, headers)
        elif kind == "garbage":
            handler._send(200, None, raw=b'{"choices": [{"message": {"content": "cut off')
        elif kind == "nochoices":
            handler._send(200, {"object": "chat.completion", "id": "x"})
        elif kind == "empty":
            handler._send(200, completion("   "))
        elif kind == "hang":
            time.sleep(action[1] if isinstance(action, tuple) else 5.0)
            with contextlib.suppress(OSError):
                handler._send(200, completion("too late"))
        elif kind == "drop":
            handler.close_connection = True
            handler.connection.close()
        else:
            raise ValueError(f"unknown fault {action!r}")

    def _reply(self, handler, body: dict, number: int) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            self._answer(handler, body, number)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, handler, body: dict, number: int) -> None:
        if self.upstream is not None:
            request = urllib.request.Request(f"{self.upstream}/chat/completions", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    handler._send(response.status, None, raw=response.read())
            except urllib.error.HTTPError as exc:
                handler._send(exc.code, None, raw=exc.read())
            return
        reply = self.responder(body) if self.responder else f"Reply {number}: an aerial image of a test scene."
        if self.record:
            with self._lock:
                self.replies.append((body, reply))
        handler._send(200, completion(reply))


def completion(reply: str | dict[str, Any]) -> dict[str, Any]:
    """A chat completion; ``reply`` is the content, or {"content", "reasoning_content", "finish_reason"}."""
    fields = dict(reply) if isinstance(reply, dict) else {"content": reply}
    finish = fields.pop("finish_reason", "stop")
    return {"id": "fake", "object": "chat.completion", "created": int(time.time()), "model": "fake",
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", **fields}}]}


def main() -> None:
    """``python -m tests.mpgi.fakechat [--delay-ms MS] [--keep-bodies]``: serve replies on 127.0.0.1 until
    killed, each after MS milliseconds (a server's latency); prints the base URL. With --keep-bodies,
    ``GET {base_url}/_bodies`` returns the chat bodies received since the last such call."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--keep-bodies", action="store_true")
    args = parser.parse_args()
    server = FakeChatServer().start()
    server.delay_s = args.delay_ms / 1000.0
    server.record = False
    server.keep_bodies = args.keep_bodies
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        sys.exit(0)


if __name__ == "__main__":
    main()
