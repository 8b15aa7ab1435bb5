"""Request bodies and prompt hashes written from parts escaped once are what plain JSON would be."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from rs_vlm_app.mpgi.backends import ChatRequest
from rs_vlm_app.mpgi.backends.openai_compat import OpenAICompatBackend
from rs_vlm_app.mpgi.config import BuildConfig
from rs_vlm_app.mpgi.imagefiles import EncodedImage
from rs_vlm_app.mpgi.plan import prompt_hash
from tests.mpgi import data


def backend(tmp_path, **extra) -> OpenAICompatBackend:
    config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(tmp_path)}],
                               data.openai_backend("http://127.0.0.1:9/v1", "modèle", **extra))
    return OpenAICompatBackend("mllm", BuildConfig.from_dict(config).backends["mllm"])


IMAGE = EncodedImage(bytes(range(256)) * 3, "image/jpeg")
REQUESTS = [
    ChatRequest('You are "careful".', "Facts:\n- 3 ships\t— «quay» 😀 \u2028 \x00 {x}", IMAGE, 64, 0.2),
    ChatRequest(None, "Write a caption.", None, 32, 1, seed=123456),
    ChatRequest("", "Caption 2 of 2.", None, 48, 0.75, seed=0),
]


@pytest.mark.parametrize("extra_body", [{}, {"top_p": 0.9, "chat_template_kwargs": {"enable_thinking": False}},
                                        {"seed": 7, "stream": False, "note": "é"}])
def test_the_body_is_the_json_httpx_would_write(tmp_path, extra_body):
    chat = backend(tmp_path, extra_body=extra_body)
    for request in REQUESTS:
        body = chat.body(request)
        plain = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        assert chat.payload(request) == plain
        assert json.loads(chat.payload(request)) == body
    assert json.loads(chat.payload(REQUESTS[0]))["messages"][1]["content"][1]["image_url"]["url"] == \
        "data:image/jpeg;base64," + base64.b64encode(IMAGE.data).decode()
    assert IMAGE.url_json is IMAGE.url_json  # encoded once, however many requests send it


def test_a_temperature_json_cannot_hold_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not JSON compliant"):
        backend(tmp_path).payload(ChatRequest(None, "x", None, 8, float("nan")))


def test_the_prompt_hash_is_that_of_the_plain_json(tmp_path):
    for request in REQUESTS:
        for key in (None, "AID/forest/forest_1.png", "Ünïcode/ключ.png"):
            plain = json.dumps(["modèle", request.system, request.user, key, request.max_tokens,
                                request.temperature], ensure_ascii=False)
            expected = hashlib.sha256(plain.encode("utf-8")).hexdigest()[:16]
            assert prompt_hash("modèle", request.system, request.user, key, request.max_tokens,
                               request.temperature, user_json=request.user_json) == expected
            assert prompt_hash("modèle", request.system, request.user, key, request.max_tokens,
                               request.temperature) == expected
