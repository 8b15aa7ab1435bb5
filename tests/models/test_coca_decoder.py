"""Our CoCa decoder against the model's own forward, open_clip's generate() and a plain beam search."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.coca_decoder import (
    END_OF_TEXT,
    START_OF_TEXT,
    CachedStepper,
    CocaDecoder,
    DecodingOptions,
    ForwardStepper,
    tidy_caption,
)
from tests import tinymodels

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def coca2(tmp_path_factory):
    """A random CoCa with two layers in the text tower and in the multimodal decoder."""
    config = tinymodels.tiny_config("coca")
    config["text_cfg"]["layers"] = 2
    config["multimodal_cfg"]["layers"] = 2
    path = tinymodels.write_config(tmp_path_factory.mktemp("coca2"), "rsvlm-test-coca-2layer", config)
    return tinymodels.build_model(path, seed=3)


@pytest.fixture(scope="module")
def coca_ending(coca2):
    """coca2 whose end-of-text logit competes with its favourite token, so captions end at varied steps."""
    model = copy.deepcopy(coca2)
    greedy = CocaDecoder(model).generate(_images(6, seed=5), DecodingOptions("greedy", max_len=12))
    favourite = np.bincount(np.concatenate([c.tokens for c in greedy])).argmax()
    projection = model.text_decoder.text_projection
    with torch.no_grad():
        noise = torch.randn(projection.shape[0], generator=torch.Generator().manual_seed(0))
        projection[:, END_OF_TEXT] = projection[:, favourite] + 0.15 * noise * projection[:, favourite].std()
    return model


def _images(n: int, seed: int):
    return torch.randn((n, 3, 64, 64), generator=torch.Generator().manual_seed(seed))


def _model_logits(model, image_embs, prefix):
    """The model's own forward on whole prefixes: (rows, len, vocab)."""
    with torch.no_grad():
        _, token_embs = model._encode_text(prefix)
        return model.text_decoder(image_embs, token_embs)


def test_cache_reproduces_model_forward_at_every_position(coca2):
    images = _images(3, seed=0)
    image_embs = CocaDecoder(coca2).image_tokens(images)
    generator = torch.Generator().manual_seed(1)
    prefix = torch.randint(1, 49406, (3, 14), generator=generator)
    prefix[:, 0] = START_OF_TEXT
    expected = _model_logits(coca2, image_embs, prefix)
    stepper = CachedStepper(coca2, image_embs, group=1, max_positions=14)
    with torch.no_grad():
        for position in range(14):
            got = stepper.step(prefix[:, position], position)
            torch.testing.assert_close(got, expected[:, position], atol=2e-5, rtol=1e-4)


def test_cache_follows_beam_reordering(coca2):
    """Rows reordered and dropped between steps give the logits of the sequences they now hold."""
    images = _images(2, seed=2)
    image_embs = CocaDecoder(coca2).image_tokens(images)
    generator = torch.Generator().manual_seed(4)
    stepper = CachedStepper(coca2, image_embs, group=2, max_positions=6)
    history = torch.full((4, 1), START_OF_TEXT)  # 2 images x 2 beams
    owner = torch.tensor([0, 0, 1, 1])
    # beam 1 of image 0 duplicated; images swapped; first group (image 1) dropped; no change...
    schedule = [[1, 1, 2, 3], [3, 2, 0, 1], [2, 3], [1, 0], [0, 1]]
    with torch.no_grad():
        for position in range(6):
            got = stepper.step(history[:, -1], position)
            expected = _model_logits(coca2, image_embs[owner], history)[:, -1]
            torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
            if position < len(schedule):
                order = torch.tensor(schedule[position])
                stepper.select(order)
                history, owner = history[order], owner[order]
            new = torch.randint(1, 49406, (len(history), 1), generator=generator)
            history = torch.cat([history, new], dim=1)


def _reference_greedy(model, images, max_len: int, min_len: int) -> list[list[int]]:
    """Step-by-step greedy over the model's own forward (no cache): one image at a time."""
    out = []
    with torch.no_grad():
        image_embs = model._encode_image(images)[1]
        for i in range(len(images)):
            prefix = [START_OF_TEXT]
            for g in range(max_len):
                logits = _model_logits(model, image_embs[i : i + 1], torch.tensor([prefix]))[0, -1]
                if g < min_len:
                    logits[[END_OF_TEXT, 0]] = -math.inf
                token = int(logits.argmax())
                if token in (END_OF_TEXT, 0):
                    break
                prefix.append(token)
            out.append(prefix[1:])
    return out


@pytest.mark.parametrize(("max_len", "min_len"), [(9, 1), (5, 0)])
def test_greedy_equals_step_by_step_model_forward(coca_ending, max_len, min_len):
    images = _images(5, seed=7)
    got = CocaDecoder(coca_ending).generate(images, DecodingOptions("greedy", max_len=max_len, min_len=min_len))
    expected = _reference_greedy(coca_ending, images, max_len, min_len)
    assert [list(c.tokens) for c in got] == expected
    assert any(c.ended for c in got) and any(len(c.tokens) < max_len for c in got)


def _open_clip_greedy(model, images, max_len: int, min_len: int, monkeypatch) -> list[list[int]]:
    """open_clip's own generate() (top-k sampling with k=1 = greedy), its processors rebound for transformers 5."""
    import open_clip.coca_model as coca_model
    from transformers import TopKLogitsWarper

    from rs_vlm_app.models.open_clip_import import complete_open_clip

    complete_open_clip()  # if open_clip was imported without transformers, bind its names before patching them
    monkeypatch.setattr(coca_model, "_has_transformers", True)
    monkeypatch.setitem(coca_model.GENERATION_TYPES, "top_k", TopKLogitsWarper)
    with torch.no_grad():
        out = model.generate(images, generation_type="top_k", top_k=1, seq_len=max_len + 2,
                             min_seq_len=min_len + 1)
    captions = []
    for row in out.tolist():
        tokens = []
        for token in row[1:]:
            if token in (END_OF_TEXT, 0):
                break
            tokens.append(token)
        captions.append(tokens)
    return captions


def test_greedy_equals_open_clip_generate(coca_ending, monkeypatch):
    images = _images(6, seed=11)
    got = CocaDecoder(coca_ending).generate(images, DecodingOptions("greedy", max_len=10, min_len=2))
    assert [list(c.tokens) for c in got] == _open_clip_greedy(coca_ending, images, 10, 2, monkeypatch)


def _reference_beam(model, image, options: DecodingOptions) -> tuple[list[int], float]:
    """A plain beam search for one image over the model's own forward (no cache, no batching)."""
    beams = options.beams
    penalty = options.length_penalty
    running = [([], 0.0)]
    finished: list[tuple[float, list[int]]] = []
    with torch.no_grad():
        image_embs = model._encode_image(image[None])[1]
        for g in range(options.max_len):
            prefixes = torch.tensor([[START_OF_TEXT, *tokens] for tokens, _ in running])
            logits = _model_logits(model, image_embs.expand(len(running), -1, -1), prefixes)[:, -1].float()
            if g < options.min_len:
                logits[:, [END_OF_TEXT, 0]] = -math.inf
            totals = torch.tensor([s for _, s in running])[:, None] + logits.log_softmax(-1)
            values, flat = totals.flatten().topk(3 * beams)
            expanded = []
            for rank, (value, index) in enumerate(zip(values.tolist(), flat.tolist(), strict=True)):
                beam, token = divmod(index, logits.shape[1])
                if token in (END_OF_TEXT, 0):
                    if rank < beams:
                        finished.append((value / (g + 1) ** penalty, running[beam][0]))
                        finished.sort(key=lambda f: -f[0])  # stable: equal scores keep their order
                        del finished[beams:]
                    continue
                expanded.append((running[beam][0] + [token], value))
                if len(expanded) == beams:
                    break
            if len(finished) >= beams and finished[-1][0] >= expanded[0][1] / (g + 1) ** penalty:
                running = []
                break
            running = expanded
        for tokens, value in running:
            finished.append((value / len(tokens) ** penalty, tokens))
            finished.sort(key=lambda f: -f[0])
    return finished[0][1], finished[0][0]


@pytest.mark.parametrize(("beams", "penalty"), [(2, 1.0), (3, 0.0), (4, 2.0)])
def test_beam_equals_plain_reference(coca_ending, beams, penalty):
    images = _images(4, seed=13)
    options = DecodingOptions("beam", beams=beams, max_len=8, min_len=1, length_penalty=penalty)
    got = CocaDecoder(coca_ending).generate(images, options)
    for i, caption in enumerate(got):
        tokens, score = _reference_beam(coca_ending, images[i], options)
        assert list(caption.tokens) == tokens
        assert caption.score == pytest.approx(score, abs=1e-4)


@pytest.mark.parametrize("penalty", [0.0, 1.0, 2.0])
def test_one_beam_is_greedy(coca_ending, penalty):
    images = _images(6, seed=17)
    decoder = CocaDecoder(coca_ending)
    greedy = decoder.generate(images, DecodingOptions("greedy", max_len=10, length_penalty=penalty))
    beam = decoder.generate(images, DecodingOptions("beam", beams=1, max_len=10, length_penalty=penalty))
    assert [c.tokens for c in beam] == [c.tokens for c in greedy]
    np.testing.assert_allclose([c.score for c in beam], [c.score for c in greedy], atol=1e-5)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_cached_and_uncached_decoders_agree(coca_ending, method):
    images = _images(5, seed=19)
    options = DecodingOptions(method, beams=3, max_len=9)
    cached, plain = CocaDecoder(coca_ending), CocaDecoder(coca_ending, use_cache=False)
    assert cached.cached and plain.stepper_class is ForwardStepper
    a, b = cached.generate(images, options), plain.generate(images, options)
    assert [c.tokens for c in a] == [c.tokens for c in b]
    np.testing.assert_allclose([c.logprob for c in a], [c.logprob for c in b], atol=1e-4)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_taught_coca_says_its_sentence(taught_coca, method):
    import open_clip

    decoder = CocaDecoder(taught_coca["model"])
    images = torch.rand((4, 3, 64, 64), generator=torch.Generator().manual_seed(29)) * 4 - 2
    captions = decoder.generate(images, DecodingOptions(method, beams=3))
    tokenizer = open_clip.tokenizer.SimpleTokenizer()
    assert [decoder.decode_text(tokenizer, c) for c in captions] == [taught_coca["sentence"]] * 4
    assert all(c.ended and c.length == len(c.tokens) + 1 for c in captions)


def test_max_len_beyond_context_is_a_user_error(coca2):
    with pytest.raises(UserError, match="exceeds this model's text context of 32 tokens"):
        CocaDecoder(coca2).generate(_images(1, seed=0), DecodingOptions("greedy", max_len=40))


def test_empty_batch(coca2):
    assert CocaDecoder(coca2).generate(_images(0, seed=0), DecodingOptions("beam")) == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "sample"}, "decoding must be one of greedy, beam"),
    ({"beams": 0}, "number of beams"),
    ({"max_len": 0}, "maximum caption length"),
    ({"min_len": 31}, "minimum caption length must lie in 0..30"),
    ({"length_penalty": float("nan")}, "length penalty"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(UserError, match=message):
        DecodingOptions(**kwargs)


def test_tidy_caption():
    assert tidy_caption("<start_of_text>many  trees are near a lake . <end_of_text>") == "many trees are near a lake."
