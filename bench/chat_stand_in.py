"""An OpenAI-compatible chat server that answers after a fixed latency: the benchmarks' stand-in for a
fast inference server, so that what they measure is the client, not a model.

Like vLLM's or ``transformers serve``'s OpenAI server it is one asyncio process (aiohttp.web; TCP_NODELAY
on), parses each JSON body, waits ``--delay-ms`` without holding the loop, and answers a chat
completion whose text differs for every request ("Reply N: ..."), so a builder keeps every caption.
With ``--keep-bodies``, ``GET {base_url}/_bodies`` returns the chat bodies received since the last such
call (a benchmark replays them with a plain client); the builder's start-up check is answered at
once and not kept.

usage: python bench/chat_stand_in.py [--delay-ms 50] [--keep-bodies]   (prints the base URL, serves
       on 127.0.0.1 until killed)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rs_vlm_app.mpgi.backends.openai_compat import PREFLIGHT_PROMPT  # noqa: E402
from tests.mpgi.fakechat import completion, user_text  # noqa: E402


def reply_body(text: str) -> bytes:
    return json.dumps(completion(text)).encode()


async def serve(delay_s: float, keep_bodies: bool) -> None:
    from aiohttp import web

    state = {"count": 0, "bodies": []}

    async def chat(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except json.JSONDecodeError:
            return web.json_response({"error": {"message": "bad json"}}, status=400)
        if user_text(body) == PREFLIGHT_PROMPT:
            return web.Response(body=reply_body("OK"), content_type="application/json")
        state["count"] += 1
        number = state["count"]
        if keep_bodies:
            state["bodies"].append(body)
        await asyncio.sleep(delay_s)
        return web.Response(body=reply_body(f"Reply {number}: an aerial image of a test scene."),
                            content_type="application/json")

    async def bodies(request: web.Request) -> web.Response:
        kept, state["bodies"] = state["bodies"], []
        return web.json_response(kept)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/_bodies", bodies)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, listener, backlog=1024)
    await site.start()
    print(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--keep-bodies", action="store_true")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.delay_ms / 1000.0, args.keep_bodies))


if __name__ == "__main__":
    main()
