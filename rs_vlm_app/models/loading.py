"""Safe weight loading: safetensors, or torch.load(weights_only=True); never a partial load.

Accepted layouts: a plain state_dict (GeoRSCLIP, RemoteCLIP), a training checkpoint
({"state_dict": ...} as open_clip's training script writes, or {"model": ...}), DDP's "module." and
torch.compile's "_orig_mod." prefixes. TorchScript archives (OpenAI's original CLIP .pt downloads) are
refused: loading one means trusting code in the file; the catalogue's openai-* entries fetch
open_clip's plain-weights copies instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.weights_info import describe_state_dict, matching_archs

log = logging.getLogger(__name__)

#: Keys that carry no weights and are dropped when the model has no such entry:
#: OpenAI's TorchScript state_dicts carry these three size scalars; old open_clip versions saved the
#: causal attention mask (rebuilt from the context length); Hugging Face text towers saved
#: ``position_ids`` (an arange) before transformers 4.31 made it non-persistent.
HARMLESS_KEYS = frozenset({"input_resolution", "context_length", "vocab_size", "attn_mask", "text.attn_mask"})
HARMLESS_SUFFIXES = (".position_ids",)

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 4


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of checkpoint ``path`` as a flat state_dict; a one-line UserError naming the file if not."""
    path = Path(path)
    if not path.exists():
        raise UserError("checkpoint file not found", path=path)
    if path.is_dir():
        raise UserError("is a folder; the checkpoint must be a weights file (.pt, .pth, .bin, .safetensors)", path=path)
    size = path.stat().st_size
    if size == 0:
        raise UserError("checkpoint file is empty (0 bytes): an interrupted download? fetch it again", path=path)
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise UserError("is a Git LFS pointer, not the weights: run `git lfs pull` in its repository or download "
                        "the file itself", path=path)
    if head.lstrip()[:1] == b"<":
        raise UserError("is a web page (HTML), not a checkpoint: the download saved an error page; fetch it again",
                        path=path)
    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(head, size):
        raw = _read_safetensors(path)
    else:
        raw = _read_torch(path, head)
    return _flatten(raw, path)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len <= size - 8 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"is not a readable safetensors file (corrupt or truncated?): {_short(exc)}",
                        path=path) from None


def _read_torch(path: Path, head: bytes) -> object:
    is_zip = zipfile.is_zipfile(path)
    if is_zip and _is_torchscript(path):
        raise UserError(
            "is a TorchScript (JIT) archive, like OpenAI's original CLIP downloads; rs-vlm loads only plain "
            "weights (a TorchScript archive can carry code): use the catalogue models openai-vit-b-32 or openai-vit-l-14, "
            "or save the model's state_dict as .safetensors", path=path)
    if not is_zip and head.startswith(b"PK\x03\x04"):
        raise UserError("is a truncated or corrupt checkpoint (its zip archive is incomplete: an interrupted "
                        "download or copy?); fetch it again", path=path)
    try:
        with warnings.catch_warnings():  # torch's notes on foreign pickle protocols are not for users
            warnings.simplefilter("ignore", UserWarning)
            # mmap: tensors a training checkpoint also holds (optimizer state) are never read into memory
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise UserError("contains Python objects that weights_only loading refuses; only tensor checkpoints "
                            "are accepted (save the model's state_dict, or convert it to .safetensors)",
                            path=path) from None
        raise UserError(f"is not a PyTorch or safetensors checkpoint, or it is corrupt: {_short(exc)}",
                        path=path) from None
    except Exception as exc:  # the unpickler fails in many ways on foreign bytes (IndexError, KeyError, ...)
        problem = "truncated or corrupt" if is_zip else "not a PyTorch or safetensors checkpoint, or it is corrupt"
        raise UserError(f"is {problem}: {_short(exc)}", path=path) from None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _flatten(obj: object, path: Path) -> dict[str, torch.Tensor]:
    state = obj
    for _ in range(3):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
            break
        wrapped = next((state[k] for k in _WRAPPER_KEYS if isinstance(state, dict) and isinstance(state.get(k), dict)),
                       None)
        if wrapped is None:
            break
        state = wrapped
    if not isinstance(state, dict) or not state:
        raise UserError(f"holds no model weights (found {_kind(obj)})", path=path)
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise UserError(f"holds no model weights: expected a state_dict of tensors, found entries such as "
                        f"{', '.join(map(str, not_tensors[:_SHOWN]))}", path=path)
    state = {str(k): v for k, v in state.items()}
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped = True
    return state


#: In-place tensor methods that only set values (torch.nn.init and modules' reset_parameters use
#: these): on a meta tensor they have nothing to set.
_VALUE_ONLY_INPLACE = frozenset({
    "normal_", "uniform_", "fill_", "zero_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_",
    "clamp_min_", "clamp_max_", "copy_", "exponential_", "bernoulli_", "random_", "log_normal_",
    "cauchy_", "geometric_", "fill_diagonal_", "abs_", "neg_", "sqrt_", "exp_", "log_",
})


class _SkipInitOnMeta(torch.overrides.TorchFunctionMode):
    """Skips value-only in-place ops on meta tensors (a meta tensor has shape and dtype, no values).

    Besides the wasted work, ``normal_`` on a meta tensor runs torch's Python reference, which is
    wrapped in ``torch._disable_dynamo`` and so imports all of torch._dynamo (seconds) on first use."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _VALUE_ONLY_INPLACE:
            target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by keyword
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules whose parameters live on the meta device: no memory, and no random
    initialisation (value-only in-place ops on meta tensors are skipped). Buffers stay real (causal
    masks and the like are computed as usual). Load the weights with :func:`load_weights`, which
    assigns the checkpoint's tensors (memory-mapped where the file allows) instead of copying them
    into a second full set."""
    register = torch.nn.Module.register_parameter

    def register_on_meta(module: torch.nn.Module, name: str, param) -> None:
        register(module, name, param)
        param = module._parameters.get(name)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        with _SkipInitOnMeta():
            yield
    finally:
        torch.nn.Module.register_parameter = register


def load_weights(model: torch.nn.Module, state_dict: dict, *, model_name: str, path: Path,
                 defer: str | None = None) -> Callable[[], None] | None:
    """Load ``state_dict`` into ``model`` exactly, or raise a UserError naming the mismatched keys.

    A model built under :func:`parameters_on_meta` takes the checkpoint's tensors themselves (no copy;
    those not in float32 are converted one by one); a real model gets them copied in.

    ``defer`` (a model built on meta only): the name of a child module (e.g. "visual") whose weights
    are checked now with all the others but assigned later, by the function returned (call it once;
    it converts and assigns them the same way). Until then that child's parameters stay on meta.
    Returns None when nothing was deferred."""
    state = dict(state_dict)
    expected = model.state_dict()
    for key in [k for k in state if k not in expected and (k in HARMLESS_KEYS or k.endswith(HARMLESS_SUFFIXES))]:
        del state[key]
    # open_clip's own fix-ups: old CLIP layout into a custom-text model, and a scalar vs 1-d logit scale
    if ("positional_embedding" in state and "positional_embedding" not in expected
            and "text.positional_embedding" in expected and not any(k.startswith("text_decoder.") for k in expected)):
        from rs_vlm_app.models.open_clip_import import import_open_clip

        state = import_open_clip().model.convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        if key in state and key in expected and state[key].numel() == expected[key].numel() == 1:
            state[key] = state[key].reshape(expected[key].shape)

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or reshaped:
        raise UserError(_mismatch_message(model_name, state, expected, missing, unexpected, reshaped), path=path)
    on_meta = any(p.device.type == "meta" for p in model.parameters())
    if not on_meta:
        model.load_state_dict(state, strict=True)
        return None
    later: dict[str, torch.Tensor] = {}
    child = getattr(model, defer, None) if defer else None
    if isinstance(child, torch.nn.Module):
        later = {k[len(defer) + 1:]: state.pop(k) for k in list(state) if k.startswith(f"{defer}.")}
    _assign(model, state, strict=not later)  # every key was checked above: non-strict misses only `later`
    _check_no_meta(model, model_name, path, skip=f"{defer}." if later else None)
    if not later:
        return None
    return functools.partial(_assign_deferred, child, later, model_name, path)


def _assign(module: torch.nn.Module, state: dict, *, strict: bool) -> None:
    """``module`` takes ``state``'s tensors (load_state_dict(assign=True)), each converted to the
    dtype of the tensor it replaces (the checkpoint may be fp16)."""
    expected = module.state_dict()
    state = {key: value.to(expected[key].dtype) if value.dtype != expected[key].dtype and value.is_floating_point()
             else value for key, value in state.items()}
    module.load_state_dict(state, strict=strict, assign=True)


def _assign_deferred(module: torch.nn.Module, state: dict, model_name: str, path: Path) -> None:
    _assign(module, state, strict=True)
    _check_no_meta(module, model_name, path)


def _check_no_meta(module: torch.nn.Module, model_name: str, path: Path, skip: str | None = None) -> None:
    """Cannot fail after a strict load; a clear error beats a meta tensor in a forward pass."""
    left = [name for name, p in module.named_parameters()
            if p.device.type == "meta" and not (skip and name.startswith(skip))]
    if left:
        raise UserError(f"{model_name}: no weights for {', '.join(left[:_SHOWN])}", path=path)


def _mismatch_message(model_name, state, expected, missing, unexpected, reshaped) -> str:
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
    if reshaped:
        shown = ", ".join(f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}" for k in reshaped[:_SHOWN])
        more = ", ..." if len(reshaped) > _SHOWN else ""
        problems.append(f"{len(reshaped)} of another shape (file vs model: {shown}{more})")
    text = f"does not fit model {model_name}: {'; '.join(problems)} keys"
    found, wanted = describe_state_dict(state), describe_state_dict(expected)
    if found.family is None:
        return f"{text}; it does not look like an open_clip CLIP or CoCa checkpoint"
    differences = found.differences(wanted)
    text += f"; the file looks like {found.summary()}"
    if differences:
        text += f" ({'; '.join(differences[:3])})"
    try:
        like = matching_archs(found)
    except Exception:  # a hint only; never hide the real error behind a failure here
        like = []
    if like:
        text += f", as open_clip's {' / '.join(like)}"
    return text


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")


def _kind(obj: object) -> str:
    if isinstance(obj, dict):
        keys = ", ".join(map(str, list(obj)[:_SHOWN])) or "nothing"
        return f"a dict with keys {keys}"
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {list(obj.shape)}"
    return f"a {type(obj).__name__}"


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

