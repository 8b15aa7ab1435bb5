"""What this machine has and what the plugin needs, for setting up rs-vlm's environment.

The NVIDIA GPU (nvidia-smi) and the torch build it calls for, the Pythons that can create a
virtual environment, uv, and the rs-vlm release (with its torch pins) this plugin talks to.
Standard library only, no Qt; the set-up dialog runs these in a background thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .appenv import worker_environment

#: what ``rsvlm qgis package`` writes into the plugin: the rs-vlm release and torch pins to install
REQUIREMENTS_FILE = "engine.json"
#: PyTorch's own package index; CPU and CUDA builds live in sub-folders named by their tag
TORCH_INDEX = "https://download.pytorch.org/whl/"
#: CUDA builds of torch, newest first, with the CUDA version the GPU driver must support
CUDA_BUILDS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("cu130", (13, 0)), ("cu128", (12, 8)), ("cu126", (12, 6)), ("cu118", (11, 8)),
)


# -- what to install ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineRequirements:
    """The rs-vlm release this plugin talks to, and the torch pins of that release."""

    app_version: str
    requirement: str                          # "rs-vlm==0.1.0"
    torch: tuple[str, ...] = ()               # ("torch==2.14.1", "torchvision==0.29.1")
    python_min: tuple[int, int] = (3, 11)

    def to_json(self) -> dict:
        return {"app_version": self.app_version, "requirement": self.requirement, "torch": list(self.torch),
                "python_min": ".".join(map(str, self.python_min))}

    @classmethod
    def from_json(cls, data: dict) -> EngineRequirements:
        version = str(data.get("app_version") or "")
        minimum = tuple(int(p) for p in str(data.get("python_min") or "3.11").split(".")[:2])
        return cls(version, str(data.get("requirement") or (f"rs-vlm=={version}" if version else "rs-vlm")),
                   tuple(str(t) for t in data.get("torch") or ()), minimum)  # type: ignore[arg-type]


def load_requirements(plugin_dir: Path) -> EngineRequirements:
    """``engine.json`` of a built plugin; for a plugin run from a source checkout, the checkout's
    pyproject.toml; at worst the plugin's own version from metadata.txt, without torch pins."""
    plugin_dir = Path(plugin_dir)
    try:
        return EngineRequirements.from_json(json.loads((plugin_dir / REQUIREMENTS_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        pass
    pyproject = plugin_dir.parent / "pyproject.toml"
    if pyproject.is_file():
        try:
            import tomllib  # Python 3.11+; QGIS builds on 3.10 fall through to metadata.txt

            project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
            return requirements_from_project(project["version"], project.get("dependencies", []),
                                             project.get("requires-python", ""))
        except (ImportError, OSError, KeyError, ValueError):
            pass
    version = ""
    with contextlib.suppress(OSError):
        for line in (plugin_dir / "metadata.txt").read_text(encoding="utf-8").splitlines():
            if line.startswith("version="):
                version = line.split("=", 1)[1].strip()
    return EngineRequirements(version, f"rs-vlm=={version}" if version else "rs-vlm")


def requirements_from_project(version: str, dependencies: Sequence[str], requires_python: str = "") -> EngineRequirements:
    """The requirements of rs-vlm ``version`` whose dependencies are ``dependencies`` (PEP 508 strings)."""
    torch = tuple(d.replace(" ", "") for d in dependencies
                  if re.match(r"^\s*(torch|torchvision)\s*[=<>!~]", d))
    match = re.search(r">=\s*(\d+)\.(\d+)", requires_python or "")
    minimum = (int(match.group(1)), int(match.group(2))) if match else (3, 11)
    return EngineRequirements(version, f"rs-vlm=={version}", torch, minimum)


# -- the machine -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    """NVIDIA GPUs as nvidia-smi reports them; ``cuda``: the newest CUDA the driver runs."""

    names: tuple[str, ...]
    driver: str
    cuda: tuple[int, int] | None

    def describe(self) -> str:
        cuda = f", CUDA {self.cuda[0]}.{self.cuda[1]}" if self.cuda else ""
        return f"{', '.join(self.names)} (driver {self.driver}{cuda})"


def parse_nvidia_smi(query: str, banner: str) -> Gpu | None:
    """A Gpu from ``nvidia-smi --query-gpu=name,driver_version --format=csv,noheader`` and from the
    banner of plain ``nvidia-smi`` (which holds "CUDA Version: 12.4"); None when no GPU is listed."""
    names, driver = [], ""
    for line in query.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[0]:
            names.append(parts[0])
            driver = driver or parts[1]
    if not names:
        return None
    match = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", banner)
    return Gpu(tuple(names), driver, (int(match.group(1)), int(match.group(2))) if match else None)


def detect_gpu(timeout: float = 10.0) -> Gpu | None:
    """The machine's NVIDIA GPUs (None without nvidia-smi, without a GPU, or when it fails)."""
    smi = shutil.which("nvidia-smi")
    if smi is None and sys.platform.startswith("win"):
        candidate = Path(os.environ.get("PROGRAMFILES", r"C:\Program Files")) / "NVIDIA Corporation" / "NVSMI" / "nvidia-smi.exe"
        smi = str(candidate) if candidate.is_file() else None
    if smi is None:
        return None
    try:
        query = subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=timeout, **hidden_window())
        banner = subprocess.run([smi], capture_output=True, text=True, timeout=timeout, **hidden_window())
    except (OSError, subprocess.SubprocessError):
        return None
    if query.returncode != 0:
        return None
    return parse_nvidia_smi(query.stdout, banner.stdout)


@dataclass(frozen=True)
class TorchBuild:
    """Which torch to install: ``tag`` "cpu", "cu126", ... or "default" (the package index's own
    build), from ``index_url`` ("" = the package index)."""

    tag: str
    index_url: str
    why: str = ""

    @property
    def cuda(self) -> bool:
        return self.tag.startswith("cu")


def torch_build(tag: str, why: str = "") -> TorchBuild:
    if tag == "default":
        return TorchBuild("default", "", why)
    return TorchBuild(tag, TORCH_INDEX + tag, why)


def choose_torch_build(gpu: Gpu | None, platform: str = sys.platform) -> TorchBuild:
    """The torch build for this machine: the newest CUDA build the GPU's driver runs, else the CPU
    build. macOS takes the package index's build (it uses Apple GPUs through MPS)."""
    if platform == "darwin":
        return torch_build("default", "macOS: the standard build (Apple GPUs through MPS)")
    if gpu is not None and gpu.cuda is not None:
        for tag, needs in CUDA_BUILDS:
            if gpu.cuda >= needs:
                return torch_build(tag, f"NVIDIA GPU {gpu.describe()}")
        return torch_build("cpu", f"the GPU driver of {gpu.describe()} is too old for torch's CUDA builds "
                                  f"(needs CUDA {CUDA_BUILDS[-1][1][0]}.{CUDA_BUILDS[-1][1][1]}+): CPU build")
    if gpu is not None:
        return torch_build("cpu", f"nvidia-smi does not say which CUDA {gpu.describe()} supports: CPU build")
    return torch_build("cpu", "no NVIDIA GPU found: CPU build")


def find_uv() -> str:
    """The uv program, if installed (PATH, or where its installer puts it); '' otherwise."""
    found = shutil.which("uv")
    if found:
        return found
    home = Path.home()
    exe = "uv.exe" if sys.platform.startswith("win") else "uv"
    for candidate in (home / ".local" / "bin" / exe, home / ".cargo" / "bin" / exe):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return ""


def python_version(python: str, timeout: float = 30.0) -> tuple[int, int] | None:
    """(major, minor) of an interpreter that can create venvs, None when it cannot run."""
    try:
        proc = subprocess.run([python, "-c", "import sys, venv; print(*sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=timeout, env=clean_env(),
                              **hidden_window())
    except (OSError, subprocess.SubprocessError):
        return None
    parts = proc.stdout.split()
    if proc.returncode != 0 or len(parts) != 2:
        return None
    return int(parts[0]), int(parts[1])


def python_candidates() -> list[str]:
    """Interpreters that may create the environment: QGIS's own Python's base installation first,
    then the python3.x programs on PATH, newest first."""
    out: list[str] = []
    base = Path(sys.base_prefix)
    if sys.platform.startswith("win"):
        out.append(str(base / "python.exe"))
        launcher = shutil.which("py")
        if launcher:
            out.append(launcher)
    else:
        minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        out += [str(base / "bin" / minor), str(base / "bin" / "python3")]
    for name in ("python3.13", "python3.12", "python3.11", "python3", "python"):
        found = shutil.which(name)
        if found:
            out.append(found)
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p)) and Path(p).is_file()]


def find_base_python(minimum: tuple[int, int]) -> tuple[str, tuple[int, int] | None]:
    """The first candidate Python at least ``minimum`` that can create venvs: (path, version), or
    ('', None) when none is found."""
    for candidate in python_candidates():
        version = python_version(candidate)
        if version is not None and version >= minimum:
            return candidate, version
    return "", None


def clean_env(qgis_prefix: str = "") -> dict[str, str]:
    """The environment for pip, uv and the new Python: the user's, without QGIS's Python, GDAL and
    library variables (appenv.py), without the user's site-packages, without prompts."""
    env = worker_environment(qgis_prefix=qgis_prefix)
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", UV_NO_PROGRESS="1")
    return env


def hidden_window() -> dict:
    """subprocess arguments that keep a console window from flashing up on Windows."""
    if sys.platform.startswith("win"):
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {}
