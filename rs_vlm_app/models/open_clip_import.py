"""Import open_clip without paying for what a model does not use (whole seconds per command).

``import open_clip`` imports, whatever the model:

- transformers (open_clip.hf_model, open_clip.coca_model), needed only by Hugging Face text towers
  (``text_cfg.hf_model_name``) and open_clip's own ``CoCa.generate`` (rs-vlm decodes captions with
  rs_vlm_app.models.coca_decoder instead);
- timm (open_clip.timm_model), needed only by timm image towers (``vision_cfg.timm_model_name``);
- huggingface_hub (open_clip.pretrained, open_clip.push_to_hf_hub), needed only to download from
  or upload to the Hub through open_clip (rs-vlm resolves its weights in rs_vlm_app.models.resolve);
- torchvision (open_clip.utils, open_clip.transform), whose ``torchvision.ops.roi_align`` imports
  ``torch._dynamo.utils`` at module level and with it all of torch._dynamo (about as long as
  ``import torch`` itself), although it calls only ``is_compile_supported``, inside ``roi_align()``.

:func:`import_open_clip` is how rs-vlm imports open_clip. The first time (open_clip not yet imported):

1. torchvision is imported with a stand-in ``torch._dynamo.utils`` in ``sys.modules`` whose one
   function, ``is_compile_supported``, imports the real torch._dynamo when it is called. The stand-in
   is removed as soon as torchvision is imported, so a later ``import torch._dynamo`` (torch.compile,
   RSVLM_COMPILE) loads the real package as usual. If torchvision's import asks the stand-in for
   anything else, it is removed and torchvision imported the ordinary way.
2. open_clip is imported with the three optional packages blocked (``sys.modules[name] = None``,
   which makes ``import name`` raise ImportError): open_clip catches that error (its optional
   imports are ``try: import ... except ImportError``) and records the package as absent.
   Packages imported before are not blocked (nothing to save).
3. Completion: the first time one of :data:`COMPLETING_CALLS` runs (building an HF text tower or a
   timm image tower, ``CoCa.generate``, a Hub download or upload), :func:`complete_open_clip`
   re-runs, in each module imported while the packages were blocked, the module-level ``try``
   statements that import them (read from the module's source), now without the block: the
   module's names are then exactly what a plain ``import open_clip`` would have bound. Any code path
   that needs them (rs-vlm's factory, training, the Python API, a persistent worker's later job)
   gets them. Code that reads open_clip's optional-import globals directly (``open_clip.coca_model.
   _has_transformers``...) must call :func:`complete_open_clip` first.

``RSVLM_PLAIN_IMPORTS=1`` turns all this off (a plain ``import open_clip``), should a future torch,
torchvision or open_clip break it. The block is process-wide for the duration of open_clip's import
(under a second): another thread importing one of the three packages for the first time at that
very moment gets an ImportError; rs-vlm loads models on one thread at a time.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

#: Packages open_clip imports optionally, kept out until a model needs them.
OPTIONAL_PACKAGES = ("transformers", "timm", "huggingface_hub")
#: The variable that turns the deferred imports off.
PLAIN_IMPORTS_VARIABLE = "RSVLM_PLAIN_IMPORTS"

_lock = threading.RLock()
#: module name -> packages that were blocked while it was imported (to complete later)
_incomplete: dict[str, tuple[str, ...]] = {}


def import_open_clip() -> types.ModuleType:
    """The open_clip package, imported as the module docstring says (once per process)."""
    module = sys.modules.get("open_clip")
    if module is not None:
        return module
    with _lock:
        module = sys.modules.get("open_clip")
        if module is not None:
            return module
        if os.environ.get(PLAIN_IMPORTS_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on"):
            import open_clip

            return open_clip
        if "torchvision" not in sys.modules:
            _import_torchvision()
        blocked = tuple(name for name in OPTIONAL_PACKAGES if name not in sys.modules)
        before = set(sys.modules)
        with _blocked(blocked):
            import open_clip
        if blocked:
            for name in set(sys.modules) - before:
                _incomplete[name] = blocked
            _complete_on_use()
        return open_clip


def open_clip_complete() -> bool:
    """True when nothing open_clip imported is waiting for a blocked package."""
    return not _incomplete


def complete_open_clip() -> None:
    """Re-run the optional imports that were blocked while open_clip was imported (see the module
    docstring); a no-op when nothing was blocked or it ran before. Costs what importing the blocked
    packages costs."""
    with _lock:
        pending = dict(_incomplete)
        _incomplete.clear()
        for name, packages in pending.items():
            module = sys.modules.get(name)
            if module is not None:
                _rerun_optional_imports(module, packages)


def _import_torchvision() -> None:
    """Import torchvision with torch._dynamo deferred (step 1 of the module docstring)."""
    if "torch._dynamo" in sys.modules or "torch._dynamo.utils" in sys.modules:
        import torchvision  # noqa: F401 - dynamo is loaded anyway: nothing to defer
        return
    stand_in = _dynamo_utils_stand_in()
    sys.modules["torch._dynamo.utils"] = stand_in
    try:
        import torchvision  # noqa: F401
    except ImportError:
        log.debug("torchvision needs more of torch._dynamo than the stand-in offers; importing it plainly",
                  exc_info=True)
    finally:
        if sys.modules.get("torch._dynamo.utils") is stand_in:
            del sys.modules["torch._dynamo.utils"]
    if "torchvision" not in sys.modules:
        import torchvision  # noqa: F401


def _dynamo_utils_stand_in() -> types.ModuleType:
    module = types.ModuleType("torch._dynamo.utils", "rs-vlm's stand-in while torchvision is imported "
                                                     "(rs_vlm_app.models.open_clip_import)")

    def is_compile_supported(device_type):
        from torch._dynamo.utils import is_compile_supported as real

        return real(device_type)

    module.is_compile_supported = is_compile_supported
    return module


@contextlib.contextmanager
def _blocked(names: tuple[str, ...]) -> Iterator[None]:
    for name in names:
        sys.modules[name] = None  # type: ignore[assignment] - None makes `import name` fail
    try:
        yield
    finally:
        for name in names:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def _rerun_optional_imports(module: types.ModuleType, packages: tuple[str, ...]) -> None:
    """Run again, in ``module``'s namespace, its module-level ``try`` statements that import one of
    ``packages``."""
    try:
        source = module.__loader__.get_source(module.__name__)  # type: ignore[union-attr]
    except Exception:  # a module without a loader or source (a C extension, a namespace package)
        return
    if not source or not any(package in source for package in packages):
        return
    filename = getattr(module, "__file__", None) or module.__name__
    statements = [node for node in ast.parse(source, filename).body
                  if isinstance(node, ast.Try) and _imports_any(node.body, packages)]
    if statements:
        log.debug("completing the optional imports of %s", module.__name__)
        code = compile(ast.Module(body=statements, type_ignores=[]), filename, "exec")
        exec(code, vars(module))


def _imports_any(body: list[ast.stmt], packages: tuple[str, ...]) -> bool:
    def named(name: str | None) -> bool:
        return bool(name) and any(name == p or name.startswith(p + ".") for p in packages)

    for statement in body:
        for node in ast.walk(statement):
            if isinstance(node, ast.Import) and any(named(alias.name) for alias in node.names):
                return True
            if isinstance(node, ast.ImportFrom) and node.level == 0 and named(node.module):
                return True
    return False


#: What needs the blocked packages in open_clip: calling one of these completes the imports first.
#: "Class.method" is patched on the class; a function is replaced wherever open_clip's modules bind it.
COMPLETING_CALLS = (
    ("open_clip.hf_model", "HFTextEncoder.__init__"),  # a Hugging Face text tower (transformers)
    ("open_clip.timm_model", "TimmModel.__init__"),  # a timm image tower (timm)
    ("open_clip.coca_model", "CoCa.generate"),  # open_clip's own caption generation (transformers)
    ("open_clip.pretrained", "has_hf_hub"),  # asked before every Hugging Face Hub download
    ("open_clip.push_to_hf_hub", "push_to_hf_hub"),  # uploads to the Hub
)


def _complete_on_use() -> None:
    """Make the calls that need transformers, timm or huggingface_hub complete the imports first (step 3)."""
    modules = [m for name, m in list(sys.modules.items())
               if m is not None and (name == "open_clip" or name.startswith("open_clip."))]
    for module_name, target in COMPLETING_CALLS:
        owner: object = sys.modules.get(module_name)
        *path, name = target.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        original = getattr(owner, name, None) if owner is not None else None
        if original is None or getattr(original, "_rsvlm_completes", False):
            continue
        wrapper = _completing(original)
        if path:  # a method: every caller finds it on the class
            setattr(owner, name, wrapper)
            continue
        for module in modules:  # a function: its own module and every `from ... import` of it
            for key, value in list(vars(module).items()):
                if value is original:
                    setattr(module, key, wrapper)


def _completing(function: Callable) -> Callable:
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if _incomplete:
            complete_open_clip()
        return function(*args, **kwargs)

    wrapper._rsvlm_completes = True  # type: ignore[attr-defined]
    return wrapper
