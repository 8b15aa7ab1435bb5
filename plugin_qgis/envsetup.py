"""Setting up rs-vlm's own Python environment from inside QGIS: no terminal needed.

A QGIS user who installed the plugin from a zip has no rs-vlm engine. This module builds one: a
fresh virtual environment in the QGIS profile folder (``<profile>/rs_vlm/envs/<name>``), made with
uv when it is available, else with ``python -m venv`` and pip; the torch build that matches the
machine (an NVIDIA GPU found by nvidia-smi picks a CUDA build, anything else the CPU build); then
rs-vlm itself, from the package index or from a local folder of wheels (a "wheelhouse", for
machines without internet: ``pip install --no-index --find-links``); and finally the worker's
``hello`` proves the environment runs.

Each environment is built in a new folder, and a failure or a cancel removes that folder: the
engine the plugin uses is switched (by the caller, in settings.py) only after the whole set-up
succeeded, so the previous engine stays usable and nothing half-installed is ever recorded.

Standard library only, no Qt: :class:`Installer` runs in a background thread of the set-up
dialog (setup_dialog.py), and in plain Python for tests. It never imports torch & co.: those
live in the new environment and only its own processes load them.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .envdetect import EngineRequirements, TorchBuild, clean_env, hidden_window, python_version

#: the folder of environments made by the set-up, inside <profile>/rs_vlm/
ENVS_FOLDER = "envs"
#: the name of every environment the set-up makes starts so (rs-vlm-<version>-<date>-<time>)
ENV_PREFIX = "rs-vlm-"
#: written into every environment this module creates: how far it got (only "ready" ones are used)
MARKER = "rsvlm-env.json"
GIB = 1024 ** 3
#: disk space an environment needs, by torch build (CUDA builds bundle the CUDA libraries)
NEEDED_CPU = 3 * GIB
NEEDED_CUDA = 9 * GIB
#: lines of installer output kept to explain a failure
TAIL = 200

OnEvent = Callable[["SetupEvent"], None]


class SetupError(Exception):
    """A step of the set-up failed; ``str()`` is one line saying which step and why."""

    def __init__(self, step: str, reason: str):
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


class SetupCancelled(Exception):
    pass


# -- the plan ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupPlan:
    """Everything one set-up needs; made by the dialog, run by :class:`Installer`."""

    envs_root: Path                       # <profile>/rs_vlm/envs
    requirements: EngineRequirements
    torch: TorchBuild
    tool: str = "pip"                     # "uv" or "pip"
    uv: str = ""                          # the uv program, when tool == "uv"
    base_python: str = ""                 # "" only with uv: uv provides a Python
    wheelhouse: str = ""                  # offline: a folder of wheels; "" = the package index
    index_url: str = ""                   # online: the package index ("" = PyPI or pip's configuration)
    qgis_prefix: str = ""                 # QGIS's install folder (its PATH entries are hidden on Windows)
    hello_timeout: float = 300.0

    @property
    def offline(self) -> bool:
        return bool(self.wheelhouse)

    def needed_bytes(self) -> int:
        """Disk space the environment will take: what its wheels unpack to offline, else an estimate
        by torch build."""
        if self.offline:
            size = sum(p.stat().st_size for p in Path(self.wheelhouse).glob("*") if p.is_file())
            return int(2.5 * size) + GIB // 4
        return NEEDED_CUDA if self.torch.cuda else NEEDED_CPU


@dataclass
class SetupEvent:
    """Reported while the set-up runs: ``kind`` "step" (a step begins), "progress" or "line" (a
    line of the installer's output)."""

    kind: str
    step: str
    fraction: float = 0.0
    text: str = ""


@dataclass
class SetupResult:
    status: str                          # "ok", "error" or "cancelled"
    message: str = ""                    # one line
    step: str = ""                       # the step that failed
    python: str = ""                     # the new environment's interpreter (ok only)
    env_dir: str = ""
    hello: Any = None
    warning: str = ""                    # ok, but something to know (e.g. the worker sees no GPU)
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# -- steps -------------------------------------------------------------------------------------------

STEP_CHECK = "check"
STEP_CREATE = "create the environment"
STEP_TORCH = "install torch"
STEP_APP = "install rs-vlm"
STEP_HELLO = "start the worker"


def env_python(env_dir: Path, platform: str = sys.platform) -> Path:
    return env_dir / ("Scripts/python.exe" if platform.startswith("win") else "bin/python")


def wheel_names(folder: Path, project: str) -> list[Path]:
    """The wheels (and source archives) of ``project`` in a wheelhouse folder."""
    norm = re.sub(r"[-_.]+", "_", project).lower()
    out = []
    for path in sorted(Path(folder).iterdir()):
        name = path.name.lower()
        if name.endswith((".whl", ".tar.gz", ".zip")) and re.sub(r"[-_.]+", "_", name).startswith(norm + "_"):
            out.append(path)
    return out


def check_free_space(folder: Path, needed: int) -> None:
    """SetupError when ``folder``'s disk has less than ``needed`` bytes free."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise SetupError(STEP_CHECK, f"not enough free disk space in {folder}: {free / GIB:.1f} GB free, "
                                     f"about {needed / GIB:.1f} GB needed; free some space or set up on another disk")


def explain_output(lines: Sequence[str], plan: SetupPlan, returncode: int | None) -> str:
    """One line saying why pip, uv or venv failed, from the end of what it printed."""
    text = "\n".join(lines)
    where = f"the wheelhouse {plan.wheelhouse}" if plan.offline else (plan.index_url or "the package index")
    if "No space left on device" in text or "[Errno 28]" in text or "os error 28" in text:
        return f"the disk is full ({plan.envs_root}); free some space and set up again"
    missing = (re.search(r"No matching distribution found for ([^\s;]+)", text)
               or re.search(r"Because ([A-Za-z0-9_.\-\[\]]+(?:[<>=!~]=?[^\s,]+)?) was not found", text)
               or re.search(r"([A-Za-z0-9_.\-]+(?:[<>=!~]=?[^\s,]+)?) was not found in the (?:package registry|provided package locations)", text))
    if missing:
        what = missing.group(1)
        if plan.offline:
            return f"{where} has no wheel for {what} (for this Python and system); add it and set up again"
        return f"{where} has no {what} for this Python and system"
    if "conflicting dependencies" in text or "ResolutionImpossible" in text:
        causes = [" ".join(line.split()) for line in lines if re.match(r"^\s{2,}\S.* (depends on|requested) ", line)]
        if causes:
            return "no versions fit together: " + "; ".join(causes[:4])
    if re.search(r"Failed to establish a new connection|Temporary failure in name resolution|Name or service not known"
                 r"|ConnectTimeout|ConnectionError|Network is unreachable|failed to fetch|dns error|Could not fetch URL",
                 text, re.IGNORECASE):
        return f"cannot reach {where} (no internet?); install from a wheelhouse folder instead"
    if "ensurepip is not available" in text or "No module named venv" in text or "No module named ensurepip" in text:
        return ("this Python cannot create environments (its venv/ensurepip module is missing: on Debian/Ubuntu "
                "install python3-venv), or install uv")
    if "externally-managed-environment" in text:
        return "pip refused to install into a system Python"
    for line in reversed(lines):
        stripped = " ".join(line.split())
        if stripped.startswith(("ERROR:", "error:", "×", "Error:")) or "Error" in stripped.split(":")[0]:
            return stripped[:300]
    for line in reversed(lines):
        stripped = " ".join(line.split())
        if stripped and not stripped.startswith(("File ", "Traceback", "^", "~", "╰", "│")):
            return stripped[:300]
    return f"exited with status {returncode} without saying why"


class Installer:
    """Runs one :class:`SetupPlan`: ``run()`` blocks (call it from a thread), ``cancel()`` from any
    thread stops it. ``on_event`` receives :class:`SetupEvent` objects on the running thread."""

    def __init__(self, plan: SetupPlan, on_event: OnEvent | None = None):
        self.plan = plan
        self.on_event = on_event
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{ENV_PREFIX}{plan.requirements.app_version or 'dev'}-{stamp}"
        self.env_dir = plan.envs_root / name
        for number in range(2, 100):  # never build into a folder that exists (a set-up in the same second)
            if not self.env_dir.exists():
                break
            self.env_dir = plan.envs_root / f"{name}-{number}"
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL)
        self._cancelled = threading.Event()
        self._popen: subprocess.Popen | None = None
        self._lock = threading.Lock()
        steps = [(STEP_CHECK, 0.02), (STEP_CREATE, 0.10)]
        if not plan.offline:
            steps += [(STEP_TORCH, 0.45), (STEP_APP, 0.33)]
        else:
            steps += [(STEP_APP, 0.78)]
        steps.append((STEP_HELLO, 0.10))
        self._weights = dict(steps)
        self._starts: dict[str, float] = {}
        total = 0.0
        for name, weight in steps:
            self._starts[name] = total
            total += weight
        self.steps = [name for name, _ in steps]

    # -- public ----------------------------------------------------------------------------------

    def run(self) -> SetupResult:
        step = STEP_CHECK
        created = False
        try:
            step = STEP_CHECK
            self._begin(step)
            self.check()
            step = STEP_CREATE
            self._begin(step)
            created = True
            self.create()
            if STEP_TORCH in self.steps:
                step = STEP_TORCH
                self._begin(step)
                self.install_torch()
            step = STEP_APP
            self._begin(step)
            self.install_app()
            step = STEP_HELLO
            self._begin(step)
            hello = self.check_worker()
            self._write_marker("ready", hello=_hello_summary(hello))
            self._progress(step, 1.0)
            return SetupResult("ok", f"rs-vlm {hello.app_version} is set up in {self.env_dir}",
                               python=str(env_python(self.env_dir)), env_dir=str(self.env_dir), hello=hello,
                               warning=self._gpu_warning(hello), log=list(self.tail))
        except SetupCancelled:
            self._discard(created)
            return SetupResult("cancelled", "set-up cancelled; nothing was changed", step, log=list(self.tail))
        except SetupError as exc:
            self._discard(created)
            return SetupResult("error", f"set-up failed at step '{exc.step}': {exc.reason}", exc.step,
                               log=list(self.tail))
        except OSError as exc:
            self._discard(created)
            if exc.errno == errno.ENOSPC:
                reason = f"the disk is full ({self.plan.envs_root}); free some space and set up again"
            else:
                reason = f"{exc.strerror or exc}" + (f": {exc.filename}" if getattr(exc, "filename", None) else "")
            return SetupResult("error", f"set-up failed at step '{step}': {reason}", step, log=list(self.tail))

    def cancel(self) -> None:
        self._cancelled.set()
        with self._lock:
            popen = self._popen
        if popen is not None:
            _terminate_tree(popen)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # -- steps -----------------------------------------------------------------------------------

    def check(self) -> None:
        plan = self.plan
        if plan.tool not in ("uv", "pip"):
            raise SetupError(STEP_CHECK, f"unknown installer {plan.tool!r} (uv or pip)")
        if plan.tool == "uv" and not plan.uv:
            raise SetupError(STEP_CHECK, "uv was chosen but is not installed; choose venv + pip")
        if plan.base_python:
            version = python_version(plan.base_python)
            if version is None:
                raise SetupError(STEP_CHECK, f"{plan.base_python} is not a Python that can create environments "
                                             "(it does not run, or lacks the venv module)")
            if version < plan.requirements.python_min:
                need = ".".join(map(str, plan.requirements.python_min))
                raise SetupError(STEP_CHECK, f"{plan.base_python} is Python {version[0]}.{version[1]}; rs-vlm "
                                             f"needs Python {need} or newer")
        elif plan.tool != "uv":
            need = ".".join(map(str, plan.requirements.python_min))
            raise SetupError(STEP_CHECK, f"no Python {need}+ found to create the environment: install one "
                                         "(python.org) or uv, or choose it in this dialog")
        if plan.offline:
            folder = Path(plan.wheelhouse)
            if not folder.is_dir():
                raise SetupError(STEP_CHECK, f"the wheelhouse folder {folder} does not exist")
            if not wheel_names(folder, "rs-vlm"):
                raise SetupError(STEP_CHECK, f"the wheelhouse {folder} has no wheel for {plan.requirements.requirement}; "
                                             "add rs-vlm's wheel (and its dependencies') and set up again")
        try:
            plan.envs_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            raise SetupError(STEP_CHECK, f"cannot create {plan.envs_root} ({exc.strerror or exc})") from None
        if not os.access(plan.envs_root, os.W_OK):
            raise SetupError(STEP_CHECK, f"{plan.envs_root} is not writable")
        check_free_space(plan.envs_root, plan.needed_bytes())
        self._progress(STEP_CHECK, 1.0)

    def create(self) -> None:
        self.run_command(STEP_CREATE, self.create_command())
        if not env_python(self.env_dir).exists():
            raise SetupError(STEP_CREATE, f"the environment has no Python ({env_python(self.env_dir)})")
        self._write_marker("building")

    def install_torch(self) -> None:
        """The chosen torch build first, from its own index: rs-vlm's install then finds torch satisfied."""
        requirements = list(self.plan.requirements.torch) or ["torch", "torchvision"]
        argv = self.install_command(requirements, index_url=self.plan.torch.index_url or self.plan.index_url)
        self.run_command(STEP_TORCH, argv)

    def install_app(self) -> None:
        self.run_command(STEP_APP, self.install_command([self.plan.requirements.requirement],
                                                        index_url=self.plan.index_url))

    def check_worker(self):
        """The new environment's worker hello (its protocol must be this plugin's). The worker is
        started by worker.probe in a helper thread, so a cancel does not wait for it."""
        from .worker import WorkerError, probe

        python = str(env_python(self.env_dir))
        self._emit(SetupEvent("line", STEP_HELLO, text=f"$ {python} -m rs_vlm_app worker --serve"))
        outcome: dict[str, Any] = {}

        def target():
            try:
                outcome["hello"] = probe(python, "", qgis_prefix=self.plan.qgis_prefix,
                                         timeout=self.plan.hello_timeout)
            except WorkerError as exc:
                outcome["error"] = str(exc)
            except Exception as exc:  # a plugin bug must end the set-up, not hang it
                outcome["error"] = f"rs-vlm plugin error: {exc}"

        thread = threading.Thread(target=target, daemon=True, name="rsvlm-setup-hello")
        thread.start()
        while thread.is_alive():
            thread.join(0.1)
            if self.cancelled:
                raise SetupCancelled
        if "error" in outcome:
            raise SetupError(STEP_HELLO, outcome["error"])
        hello = outcome.get("hello")
        if hello is None:
            raise SetupError(STEP_HELLO, f"the rs-vlm worker ({python}) ended without saying hello")
        self._emit(SetupEvent("line", STEP_HELLO, text=f"hello: rs-vlm {hello.app_version}, device {hello.device}"))
        return hello

    # -- commands --------------------------------------------------------------------------------

    def create_command(self) -> list[str]:
        """argv creating the new environment: ``uv venv`` (uv provides a Python when none is given),
        else ``python -m venv`` (with pip, from the Python's own ensurepip)."""
        plan = self.plan
        if plan.tool == "uv":
            python = plan.base_python or ".".join(map(str, plan.requirements.python_min))
            return [plan.uv, "venv", *(["--offline"] if plan.offline else []), "--no-project", "--python", python,
                    str(self.env_dir)]
        return [plan.base_python, "-m", "venv", str(self.env_dir)]

    def install_command(self, requirements: list[str], index_url: str = "") -> list[str]:
        """argv installing ``requirements`` into the new environment (uv pip or pip)."""
        plan = self.plan
        python = str(env_python(self.env_dir))
        if plan.tool == "uv":
            argv = [plan.uv, "pip", "install", "--python", python]
        else:
            argv = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                    "--progress-bar", "off"]
        if plan.offline:
            argv += ["--no-index", "--find-links", str(plan.wheelhouse)]
        elif index_url:
            argv += ["--index-url", index_url]
        return argv + requirements

    def run_command(self, step: str, argv: list[str]) -> None:
        """Run ``argv``, forwarding its output lines; SetupError explaining a non-zero exit."""
        if self.cancelled:
            raise SetupCancelled
        self._emit(SetupEvent("line", step, text="$ " + " ".join(argv)))
        kwargs: dict[str, Any] = hidden_window()
        if not sys.platform.startswith("win"):
            kwargs["start_new_session"] = True  # its children (pip's build backends) are stopped with it
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=clean_env(self.plan.qgis_prefix),
                                     cwd=str(self.plan.envs_root), **kwargs)
        except OSError as exc:
            raise SetupError(step, f"cannot run {argv[0]} ({exc.strerror or exc})") from None
        with self._lock:
            self._popen = popen
        if self.cancelled:
            _terminate_tree(popen)
        done = 0
        try:
            for raw in iter(popen.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                if not line.strip():
                    continue
                self.tail.append(line)
                self._emit(SetupEvent("line", step, text=line))
                done = _advance(line, done)
                self._progress(step, _fraction(line, done))
            popen.wait()
        finally:
            with self._lock:
                self._popen = None
            with contextlib.suppress(OSError):
                popen.stdout.close()
        if self.cancelled:
            raise SetupCancelled
        if popen.returncode != 0:
            raise SetupError(step, explain_output(list(self.tail)[-60:], self.plan, popen.returncode))
        self._progress(step, 1.0)

    # -- helpers ---------------------------------------------------------------------------------

    def _begin(self, step: str) -> None:
        if self.cancelled:
            raise SetupCancelled
        self._emit(SetupEvent("step", step, self._starts[step], step))

    def _progress(self, step: str, within: float) -> None:
        within = min(max(within, 0.0), 1.0)
        self._emit(SetupEvent("progress", step, self._starts[step] + self._weights[step] * within))

    def _emit(self, event: SetupEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _write_marker(self, status: str, **extra) -> None:
        data = {"status": status, "app_version": self.plan.requirements.app_version, "tool": self.plan.tool,
                "torch": self.plan.torch.tag, "source": self.plan.wheelhouse or self.plan.index_url or "index",
                "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **extra}
        partial = self.env_dir / (MARKER + ".part")
        partial.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(partial, self.env_dir / MARKER)

    def _discard(self, created: bool) -> None:
        if created and self.env_dir.exists():
            shutil.rmtree(self.env_dir, ignore_errors=True)

    def _gpu_warning(self, hello) -> str:
        if not self.plan.torch.cuda:
            return ""
        device = dict(getattr(hello, "device", {}) or {})
        if device.get("cuda"):
            return ""
        why = f": {device['error']}" if device.get("error") else ""
        return f"torch's {self.plan.torch.tag} build is installed, but the worker sees no CUDA GPU{why}"


def _advance(line: str, done: int) -> int:
    return done + 1 if line.lstrip().startswith(("Collecting ", "Processing ", "Downloading ", "Obtaining ")) else done


def _fraction(line: str, done: int) -> float:
    """How far an install step is, from the line pip or uv just printed (they say no totals)."""
    text = line.strip()
    if text.startswith("Successfully installed") or re.match(r"Installed \d+ package", text):
        return 1.0
    if text.startswith(("Installing collected packages", "Prepared ")):
        return 0.75
    if text.startswith("Resolved "):
        return 0.4
    return 0.7 * (1.0 - 0.9 ** done)


def _hello_summary(hello) -> dict:
    return {"app_version": getattr(hello, "app_version", ""), "versions": dict(getattr(hello, "versions", {}) or {}),
            "device": dict(getattr(hello, "device", {}) or {})}


def _terminate_tree(popen: subprocess.Popen) -> None:
    """Stop a command and what it started (pip's build processes, uv's workers)."""
    if popen.poll() is not None:
        return
    if sys.platform.startswith("win"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(popen.pid)], capture_output=True, timeout=30,
                           **hidden_window())
        return
    with contextlib.suppress(OSError):
        os.killpg(popen.pid, signal.SIGTERM)


# -- environments on disk ----------------------------------------------------------------------------


def envs_root(profile_dir: Path) -> Path:
    return Path(profile_dir) / "rs_vlm" / ENVS_FOLDER


def read_marker(env_dir: Path) -> dict:
    try:
        data = json.loads((Path(env_dir) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def prune_envs(root: Path, keep: Sequence[Path]) -> list[Path]:
    """Remove the environments the set-up made under ``root`` except ``keep``; the removed folders.
    Only folders named as this module names them are touched; one still in use stays for next time."""
    keep_resolved = {Path(k).resolve() for k in keep}
    removed = []
    if not Path(root).is_dir():
        return removed
    for folder in sorted(Path(root).iterdir()):
        if not folder.is_dir() or folder.resolve() in keep_resolved or not folder.name.startswith(ENV_PREFIX):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    return removed
