"""Fixtures of the dataset-builder tests: tiny chat models, a real `transformers serve`, a fake server."""

from __future__ import annotations

import pytest

from tests import tinyllm
from tests.mpgi.fakechat import FakeChatServer


@pytest.fixture(scope="session")
def tiny_llms(request, tmp_path_factory):
    """{"text": folder, "vision": folder} of tiny chat models (built once, cached between sessions)."""
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("rsvlm-tinyllm") if cache is not None else tmp_path_factory.mktemp("tinyllm")
    return tinyllm.cached_models(root)


@pytest.fixture(scope="session")
def serve(tiny_llms, tmp_path_factory):
    """A real OpenAI-compatible server (`transformers serve`) on 127.0.0.1 with both tiny models warm."""
    server = tinyllm.TransformersServe(hf_home=tmp_path_factory.mktemp("hf-home"))
    server.start()
    try:
        for folder in tiny_llms.values():
            server.chat(folder, "Reply with OK.", max_tokens=4)
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_server():
    with FakeChatServer() as server:
        yield server
