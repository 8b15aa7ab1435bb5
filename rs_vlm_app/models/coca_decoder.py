"""Batched caption decoding for open_clip CoCa models: greedy and beam search with a key/value cache.

Why our own decoder: open_clip 3.3.0's ``CoCa.generate()`` imports transformers' BeamSearchScorer,
which transformers 5 removed (open_clip issue #1129), so every ``generate()`` call fails; we keep
transformers 5 for ``transformers serve``. docs/captioning.md has the details.

How it works. A CoCa caption is produced by two causal transformers stacked on each other: the
unimodal text tower (its CLS token is appended at the END of the sequence, so with the causal mask it
never influences the token positions) and the multimodal decoder (causal self-attention plus
cross-attention on the image tokens). :class:`CachedStepper` runs both one position at a time: every
self-attention layer keeps the keys and values of the positions seen so far, every cross-attention
layer projects an image's tokens once. Each step costs O(length) instead of a full forward pass over
the prefix, and its logits equal the model's own forward (the tests check this on every position).
:class:`ForwardStepper` recomputes the model's forward on the whole prefix: the fallback for CoCa
variants whose blocks the cache does not know (e.g. Hugging Face text towers).

Both decoders treat the end-of-text token AND the padding token as the end of a caption, as
open_clip's ``generate()`` does.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rs_vlm_app.errors import UserError

log = logging.getLogger(__name__)

#: open_clip's SimpleTokenizer special tokens
START_OF_TEXT = 49406
END_OF_TEXT = 49407

DECODING_METHODS = ("greedy", "beam")


@dataclass(frozen=True)
class DecodingOptions:
    """How captions are decoded.

    method: "greedy" (the most likely token at every step) or "beam" (the ``beams`` best partial
    captions are kept at every step). max_len / min_len count caption tokens (BPE pieces), not the
    start and end tokens. Beam captions are ranked by ``sum of log-probabilities / length **
    length_penalty`` (length counts the end token): 0 ranks by raw probability (favours short
    captions), 1 by mean log-probability.
    """

    method: Literal["greedy", "beam"] = "beam"
    beams: int = 3
    max_len: int = 30
    min_len: int = 1
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in DECODING_METHODS:
            raise UserError(f"decoding must be one of {', '.join(DECODING_METHODS)}, not {self.method!r}")
        if int(self.beams) != self.beams or self.beams < 1:
            raise UserError(f"the number of beams must be a whole number >= 1, not {self.beams}")
        if int(self.max_len) != self.max_len or self.max_len < 1:
            raise UserError(f"the maximum caption length must be a whole number >= 1, not {self.max_len}")
        if int(self.min_len) != self.min_len or not 0 <= self.min_len <= self.max_len:
            raise UserError(f"the minimum caption length must lie in 0..{self.max_len}, not {self.min_len}")
        if not math.isfinite(self.length_penalty):
            raise UserError(f"the length penalty must be a finite number, not {self.length_penalty}")

    def key(self) -> str:
        """Short text naming these options (enters checkpoint keys)."""
        if self.method == "greedy":
            return f"greedy-max{self.max_len}-min{self.min_len}"
        return f"beam{self.beams}-max{self.max_len}-min{self.min_len}-lp{self.length_penalty:g}"


@dataclass(frozen=True)
class GeneratedCaption:
    """One decoded caption: its tokens (no start/end token) and how the decoder scored it."""

    tokens: tuple[int, ...]
    logprob: float   # sum of the log-probabilities of the scored tokens
    length: int      # scored tokens: the caption tokens, plus the end token when one was generated
    ended: bool      # False when the caption was cut at max_len
    score: float     # logprob / length ** length_penalty (what beam search ranks by)

    @property
    def mean_logprob(self) -> float:
        return self.logprob / self.length if self.length else 0.0


def _scored(tokens: Sequence[int], logprob: float, length: int, ended: bool, penalty: float) -> GeneratedCaption:
    score = logprob / (length**penalty) if length else logprob
    return GeneratedCaption(tuple(tokens), float(logprob), length, ended, float(score))


class CachedStepper:
    """Runs a CoCa's text tower and multimodal decoder one position at a time with a key/value cache.

    Rows come in groups of ``group`` rows per image (the beams of one image); cross-attention keys and
    values are computed once per image and shared by its rows.
    """

    def __init__(self, model, image_embs, group: int, max_positions: int):
        import torch.nn.functional as F

        self._F = F
        self.text = model.text
        self.decoder = model.text_decoder
        self.group = group
        self.dtype = self.text.transformer.get_cast_dtype()
        image_embs = image_embs.to(self.dtype)
        self.max_positions = max_positions
        n_layers = len(self.text.transformer.resblocks) + len(self.decoder.resblocks)
        # allocated at the first step, in the dtype the projections produce (autocast may lower it)
        self.keys: list = [None] * n_layers
        self.values: list = [None] * n_layers
        self.cross_kv = []
        for block in self.decoder.cross_attn:
            attn = block.attn
            width = attn.embed_dim
            heads, head_dim = _heads(block)
            context = block.ln_1_kv(image_embs)
            k = F.linear(context, attn.in_proj_weight[width:2 * width], _bias(attn, width, 2 * width))
            v = F.linear(context, attn.in_proj_weight[2 * width:], _bias(attn, 2 * width, 3 * width))
            self.cross_kv.append((_split_heads(k, heads, head_dim), _split_heads(v, heads, head_dim)))

    def step(self, tokens, position: int):
        """Logits (rows, vocab) for the token after ``tokens`` (rows,) placed at ``position``."""
        x = self.text.token_embedding(tokens).to(self.dtype) + self.text.positional_embedding[position].to(self.dtype)
        x = x[:, None, :]
        n_text = len(self.text.transformer.resblocks)
        for i, block in enumerate(self.text.transformer.resblocks):
            x = self._self_block(block, i, x, position)
        # CoCa's text tower hands its token states to the decoder without ln_final.
        for j, (block, cross) in enumerate(zip(self.decoder.resblocks, self.decoder.cross_attn, strict=True)):
            x = self._self_block(block, n_text + j, x, position)
            x = self._cross_block(cross, j, x)
        out = self.decoder.ln_final(x)
        if self.decoder.text_projection is not None:
            out = out @ self.decoder.text_projection
        return out[:, 0]

    def select(self, rows) -> None:
        """Keep and reorder rows (beam reordering, finished rows dropped); groups stay together."""
        for i in range(len(self.keys)):
            if self.keys[i] is not None:
                self.keys[i] = self.keys[i].index_select(0, rows)
                self.values[i] = self.values[i].index_select(0, rows)
        images = rows[:: self.group] // self.group
        self.cross_kv = [(k.index_select(0, images), v.index_select(0, images)) for k, v in self.cross_kv]

    def _self_block(self, block, layer: int, x, position: int):
        F = self._F
        attn = block.attn
        heads, head_dim = _heads(block)
        rows = x.shape[0]
        q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        if self.keys[layer] is None:
            shape = (rows, heads, self.max_positions, head_dim)
            self.keys[layer] = k.new_empty(shape)
            self.values[layer] = v.new_empty(shape)
        self.keys[layer][:, :, position] = k.reshape(rows, heads, head_dim)
        self.values[layer][:, :, position] = v.reshape(rows, heads, head_dim)
        q = q.reshape(rows, 1, heads, head_dim).transpose(1, 2)
        a = F.scaled_dot_product_attention(
            q, self.keys[layer][:, :, : position + 1], self.values[layer][:, :, : position + 1])
        a = attn.out_proj(a.transpose(1, 2).reshape(rows, 1, heads * head_dim))
        x = x + block.ls_1(a)
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def _cross_block(self, block, layer: int, x):
        F = self._F
        attn = block.attn
        width = attn.embed_dim
        heads, head_dim = _heads(block)
        rows = x.shape[0]
        images = rows // self.group
        q = F.linear(block.ln_1(x), attn.in_proj_weight[:width], _bias(attn, 0, width))
        # the beams of one image become query positions of one attention over that image's tokens
        q = q.reshape(images, self.group, heads, head_dim).transpose(1, 2)
        k, v = self.cross_kv[layer]
        a = F.scaled_dot_product_attention(q, k, v)  # (images, heads, group, head_dim)
        a = attn.out_proj(a.transpose(1, 2).reshape(rows, 1, width))
        x = x + block.ls_1(a)
        return x + block.ls_2(block.mlp(block.ln_2(x)))


class ForwardStepper:
    """Recomputes the model's own forward on the whole prefix at every step (no cache)."""

    def __init__(self, model, image_embs, group: int, max_positions: int):
        import torch

        self.model = model
        self.group = group
        self.image_embs = image_embs.repeat_interleave(group, dim=0)
        self.prefix = torch.empty((self.image_embs.shape[0], 0), dtype=torch.long, device=image_embs.device)

    def step(self, tokens, position: int):
        import torch

        self.prefix = torch.cat([self.prefix, tokens[:, None]], dim=1)
        _, token_embs = self.model._encode_text(self.prefix)
        return self.model.text_decoder(self.image_embs, token_embs)[:, -1]

    def select(self, rows) -> None:
        self.prefix = self.prefix.index_select(0, rows)
        self.image_embs = self.image_embs.index_select(0, rows)


def _heads(block) -> tuple[int, int]:
    return block.attn.num_heads, block.attn.head_dim


def _bias(attn, start: int, stop: int):
    return None if attn.in_proj_bias is None else attn.in_proj_bias[start:stop]


def _split_heads(x, heads: int, head_dim: int):
    n, length, _ = x.shape
    return x.reshape(n, length, heads, head_dim).transpose(1, 2)


def cache_supported(model) -> str | None:
    """None when :class:`CachedStepper` can run ``model``; otherwise the reason it cannot."""
    from torch import nn

    from rs_vlm_app.models.open_clip_import import import_open_clip

    import_open_clip()
    from open_clip.transformer import MultimodalTransformer, ResidualAttentionBlock, TextTransformer

    text, decoder = getattr(model, "text", None), getattr(model, "text_decoder", None)
    if not isinstance(text, TextTransformer):
        return f"text tower is {type(text).__name__}, not open_clip's TextTransformer"
    if not isinstance(decoder, MultimodalTransformer):
        return f"text decoder is {type(decoder).__name__}, not open_clip's MultimodalTransformer"
    if text.cls_emb is None or text.attn_mask is None or text.use_pad_mask:
        return "text tower is not a causal CoCa tower with an appended CLS token"
    blocks = [*text.transformer.resblocks, *decoder.resblocks, *decoder.cross_attn]
    for block in blocks:
        attn = getattr(block, "attn", None)
        if type(block) is not ResidualAttentionBlock or not isinstance(attn, nn.MultiheadAttention):
            return f"block type {type(block).__name__} is not supported"
        if not (attn.batch_first and attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn):
            return "attention layers use options the cache does not reproduce"
    if not (text.transformer.batch_first and decoder.batch_first):
        return "sequence-first transformers are not supported"
    return None


class CocaDecoder:
    """Turns images into captions with an open_clip CoCa model (batched greedy or beam search).

    ``model`` is an open_clip ``CoCa`` in eval mode; images given to :meth:`generate` are already
    preprocessed tensors (N, 3, S, S) on the model's device. ``use_cache=False`` forces the uncached
    :class:`ForwardStepper` (slow; for checks and benchmarks).
    """

    def __init__(self, model, *, sot_id: int = START_OF_TEXT, eos_id: int = END_OF_TEXT,
                 pad_id: int | None = None, use_cache: bool = True):
        self.model = model
        self.sot_id = sot_id
        pad_id = getattr(model, "pad_id", 0) if pad_id is None else pad_id
        self.end_ids = tuple(dict.fromkeys([eos_id, pad_id]))
        self.context_length = _context_length(model)
        reason = cache_supported(model) if use_cache else "disabled"
        if use_cache and reason:
            log.warning("decoding this CoCa without a key/value cache (slower): %s", reason)
        self.stepper_class = CachedStepper if reason is None else ForwardStepper

    @property
    def cached(self) -> bool:
        return self.stepper_class is CachedStepper

    def image_tokens(self, images):
        """The image token embeddings the text decoder attends to: (N, tokens, width)."""
        import torch

        with torch.no_grad():
            _, image_embs = self.model._encode_image(images)
        return image_embs

    def generate(self, images, options: DecodingOptions | None = None) -> list[GeneratedCaption]:
        """One caption per image of ``images`` (N, 3, S, S), in order."""
        if images.shape[0] == 0:
            return []
        return self.generate_from_image_tokens(self.image_tokens(images), options)

    def generate_from_image_tokens(self, image_embs, options: DecodingOptions | None = None) -> list[GeneratedCaption]:
        import torch

        options = options or DecodingOptions()
        if options.max_len > self.context_length:
            raise UserError(f"maximum caption length {options.max_len} exceeds this model's text context of "
                            f"{self.context_length} tokens")
        if image_embs.shape[0] == 0:
            return []
        with torch.no_grad():
            if options.method == "greedy":
                return self._greedy(image_embs, options)
            return self._beam(image_embs, options)

    def _greedy(self, image_embs, options: DecodingOptions) -> list[GeneratedCaption]:
        import torch

        n = image_embs.shape[0]
        device = image_embs.device
        stepper = self.stepper_class(self.model, image_embs, 1, options.max_len)
        end = torch.tensor(self.end_ids, device=device)
        tokens: list[list[int]] = [[] for _ in range(n)]
        logprob = [0.0] * n
        ended = [False] * n
        active = list(range(n))
        current = torch.full((n,), self.sot_id, dtype=torch.long, device=device)
        for g in range(options.max_len):
            logits = stepper.step(current, g).float()
            if g < options.min_len:
                logits[:, end] = -math.inf
            chosen = logits.argmax(dim=-1)
            chosen_logprob = logits.log_softmax(dim=-1).gather(1, chosen[:, None])[:, 0]
            keep = []
            for row, (image, token, lp) in enumerate(zip(active, chosen.tolist(), chosen_logprob.tolist(),
                                                         strict=True)):
                logprob[image] += lp
                if token in self.end_ids:
                    ended[image] = True
                else:
                    tokens[image].append(token)
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(active):
                rows = torch.tensor(keep, dtype=torch.long, device=device)
                stepper.select(rows)
                chosen = chosen.index_select(0, rows)
                active = [active[r] for r in keep]
            current = chosen
        return [_scored(tokens[i], logprob[i], len(tokens[i]) + ended[i], ended[i], options.length_penalty)
                for i in range(n)]

    def _beam(self, image_embs, options: DecodingOptions) -> list[GeneratedCaption]:
        import torch

        n = image_embs.shape[0]
        beams = options.beams
        device = image_embs.device
        penalty = options.length_penalty
        stepper = self.stepper_class(self.model, image_embs, beams, options.max_len)
        end = torch.tensor(self.end_ids, device=device)
        finished: list[list[GeneratedCaption]] = [[] for _ in range(n)]
        active = list(range(n))
        row_tokens: list[list[int]] = [[] for _ in range(n * beams)]
        sums = torch.full((n, beams), -math.inf, device=device)
        sums[:, 0] = 0.0  # all beams start from the same prefix: only the first may expand
        current = torch.full((n * beams,), self.sot_id, dtype=torch.long, device=device)
        n_candidates = beams * (1 + len(self.end_ids))  # always leaves >= beams non-end candidates

        for g in range(options.max_len):
            logits = stepper.step(current, g).float()
            if g < options.min_len:
                logits[:, end] = -math.inf
            logp = logits.log_softmax(dim=-1)
            vocab = logp.shape[1]
            candidates = (sums.reshape(-1, 1) + logp).reshape(len(active), beams * vocab)
            values, flat = candidates.topk(min(n_candidates, candidates.shape[1]), dim=1)
            next_active, next_rows, next_tokens, next_sums, next_row_tokens = [], [], [], [], []
            for a, (image, vals, idxs) in enumerate(zip(active, values.tolist(), flat.tolist(), strict=True)):
                expanded: list[tuple[int, int, float]] = []
                for rank, (value, index) in enumerate(zip(vals, idxs, strict=True)):
                    if value == -math.inf:
                        break
                    beam, token = divmod(index, vocab)
                    row = a * beams + beam
                    if token in self.end_ids:
                        if rank < beams:
                            _keep_best(finished[image], _scored(row_tokens[row], value, g + 1, True, penalty),
                                       beams)
                        continue
                    expanded.append((row, token, value))
                    if len(expanded) == beams:
                        break
                if not expanded:
                    continue
                hyps = finished[image]
                if len(hyps) >= beams and hyps[-1].score >= expanded[0][2] / ((g + 1) ** penalty):
                    continue  # no unfinished beam would beat the kept captions: this image is done
                while len(expanded) < beams:  # tiny vocabularies only
                    expanded.append((expanded[0][0], expanded[0][1], -math.inf))
                next_active.append(image)
                for row, token, value in expanded:
                    next_rows.append(row)
                    next_tokens.append(token)
                    next_sums.append(value)
                    next_row_tokens.append([*row_tokens[row], token])
            if not next_active:
                active = []
                break
            rows = torch.tensor(next_rows, dtype=torch.long, device=device)
            stepper.select(rows)
            current = torch.tensor(next_tokens, dtype=torch.long, device=device)
            sums = torch.tensor(next_sums, device=device).reshape(-1, beams)
            active, row_tokens = next_active, next_row_tokens

        # captions still running at max_len are cut there
        for a, image in enumerate(active):
            for b in range(beams):
                value = float(sums[a, b])
                if value > -math.inf:
                    tokens = row_tokens[a * beams + b]
                    _keep_best(finished[image], _scored(tokens, value, len(tokens), False, penalty), beams)
        return [hyps[0] if hyps else _scored((), -math.inf, 0, False, penalty) for hyps in finished]

    def decode_text(self, tokenizer, caption: GeneratedCaption) -> str:
        """The caption as text (tokenizer = the model's open_clip tokenizer)."""
        return tidy_caption(tokenizer.decode(list(caption.tokens)))


def _keep_best(hyps: list[GeneratedCaption], new: GeneratedCaption, limit: int) -> None:
    """Insert ``new`` into ``hyps`` (best first; an equal score keeps the earlier one first)."""
    position = len(hyps)
    while position > 0 and hyps[position - 1].score < new.score:
        position -= 1
    hyps.insert(position, new)
    del hyps[limit:]


_SPECIAL = re.compile(r"<start_of_text>|<end_of_text>")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:])")


def tidy_caption(text: str) -> str:
    """Drop special tokens, collapse white space, no space before punctuation."""
    text = _SPECIAL.sub(" ", text)
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))


def _context_length(model) -> int:
    """Most caption tokens the model can be fed: its text context (CLS excluded) and decoder context."""
    limits = [int(getattr(model.text_decoder, "context_length", 77))]
    text = model.text
    if hasattr(text, "num_pos"):
        limits.append(int(text.num_pos) - (1 if getattr(text, "cls_emb", None) is not None else 0))
    return min(limits)
