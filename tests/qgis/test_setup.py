"""QGIS without a terminal: the plugin zip of `rsvlm qgis package`, and its "Set up rs-vlm" dialog
that builds rs-vlm's own environment (plugin_qgis/envsetup.py, envdetect.py, setup_dialog.py).

The end-to-end test starts a fresh QGIS process with a new profile folder (tests/qgis/setup_driver.py),
installs the zip the way QGIS's "Install from ZIP" does, drives the dialog against a local
wheelhouse holding the project's freshly built wheel, and runs a localization through the plugin's
Processing algorithm on the environment it made. The other tests check the installer's parts
(GPU and torch build choice, the messages of failed steps, cancel, disk space) without QGIS widgets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from plugin_qgis import envdetect, envsetup
from tests.qgis.conftest import NAIP, PLUGIN_ID, REPO, app_python, run_app

# -- the installer's parts ------------------------------------------------------------------------------

SMI_QUERY = "NVIDIA GeForce RTX 4090, 550.54.14\nNVIDIA GeForce RTX 4090, 550.54.14\n"
SMI_BANNER = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.14              Driver Version: 550.54.14      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
"""


@pytest.mark.parametrize(("cuda", "tag"), [("13.0", "cu130"), ("12.9", "cu128"), ("12.6", "cu126"),
                                           ("12.4", "cu118"), ("11.4", "cpu")])
def test_an_nvidia_gpu_picks_the_newest_cuda_build_its_driver_runs(cuda, tag):
    gpu = envdetect.parse_nvidia_smi(SMI_QUERY, SMI_BANNER.format(cuda=cuda))
    assert gpu.names == ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090") and gpu.driver == "550.54.14"
    build = envdetect.choose_torch_build(gpu, platform="linux")
    assert build.tag == tag
    if tag == "cpu":
        assert build.index_url == "https://download.pytorch.org/whl/cpu" and "too old" in build.why
    else:
        assert build.index_url == f"https://download.pytorch.org/whl/{tag}" and "RTX 4090" in build.why


def test_no_gpu_takes_the_cpu_build_and_macos_the_standard_one():
    assert envdetect.parse_nvidia_smi("", "") is None
    assert envdetect.choose_torch_build(None, platform="linux").index_url.endswith("/whl/cpu")
    assert envdetect.choose_torch_build(None, platform="win32").tag == "cpu"
    mac = envdetect.choose_torch_build(None, platform="darwin")
    assert mac.tag == "default" and mac.index_url == ""


def _plan(tmp_path: Path, **changes) -> envsetup.SetupPlan:
    values = dict(envs_root=tmp_path / "envs", torch=envdetect.torch_build("cpu"), base_python=sys.executable,
                  requirements=envdetect.EngineRequirements("0.1.0", "rs-vlm==0.1.0", ("torch==2.14.1",)))
    values.update(changes)
    return envsetup.SetupPlan(**values)


PIP_MISSING = """\
Looking in links: /data/wheels
Processing /data/wheels/rs_vlm-0.1.0-py3-none-any.whl
INFO: pip is looking at multiple versions of rs-vlm to determine which version is compatible with other requirements.
ERROR: Could not find a version that satisfies the requirement torch==2.14.1 (from rs-vlm) (from versions: none)
ERROR: No matching distribution found for torch==2.14.1
"""
UV_MISSING = """\
  × No solution found when resolving dependencies:
  ╰─▶ Because torch==2.14.1 was not found in the provided package locations and rs-vlm==0.1.0 depends on
      torch==2.14.1, we can conclude that rs-vlm==0.1.0 cannot be used.
"""
PIP_CONFLICT = """\
ERROR: Cannot install rs-vlm==0.1.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    rs-vlm 0.1.0 depends on torch==2.14.1
    The user requested (constraint) torch<=2.13.0

To fix this you could try to:
1. loosen the range of package versions you've specified

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""
PIP_DISK_FULL = "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device\n"
PIP_OFFLINE = ("WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(': Failed to "
               "establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/torch/\n")


def test_failed_installs_are_explained_in_one_line(tmp_path):
    offline = _plan(tmp_path, wheelhouse="/data/wheels")
    online = _plan(tmp_path, index_url="https://pypi.example/simple")
    for output in (PIP_MISSING, UV_MISSING):
        text = envsetup.explain_output(output.splitlines(), offline, 1)
        assert text.startswith("the wheelhouse /data/wheels has no wheel for torch==2.14.1"), text
    assert envsetup.explain_output(PIP_MISSING.splitlines(), online, 1) == \
        "https://pypi.example/simple has no torch==2.14.1 for this Python and system"
    assert envsetup.explain_output(PIP_CONFLICT.splitlines(), offline, 1) == (
        "no versions fit together: rs-vlm 0.1.0 depends on torch==2.14.1; "
        "The user requested (constraint) torch<=2.13.0")
    assert "the disk is full" in envsetup.explain_output(PIP_DISK_FULL.splitlines(), online, 1)
    assert envsetup.explain_output(PIP_OFFLINE.splitlines(), online, 1).startswith(
        "cannot reach https://pypi.example/simple (no internet?)")
    assert "python3-venv" in envsetup.explain_output(
        ["Error: Command '['/x/bin/python3', '-m', 'ensurepip']' returned non-zero exit status 1.",
         "The virtual environment was not created successfully because ensurepip is not available."], online, 1)


def test_commands_for_pip_and_uv_online_and_offline(tmp_path):
    pip = envsetup.Installer(_plan(tmp_path, torch=envdetect.torch_build("cu128")))
    python = str(envsetup.env_python(pip.env_dir))
    assert pip.steps == ["check", "create the environment", "install torch", "install rs-vlm", "start the worker"]
    assert pip.create_command() == [sys.executable, "-m", "venv", str(pip.env_dir)]
    assert pip.env_dir.parent == tmp_path / "envs" and pip.env_dir.name.startswith("rs-vlm-0.1.0-")
    assert pip.install_command(["torch==2.14.1"], "https://download.pytorch.org/whl/cu128") == [
        python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "--index-url", "https://download.pytorch.org/whl/cu128", "torch==2.14.1"]
    uv = envsetup.Installer(_plan(tmp_path, tool="uv", uv="/opt/uv", base_python="", wheelhouse="/w"))
    assert uv.steps == ["check", "create the environment", "install rs-vlm", "start the worker"]
    assert uv.create_command() == ["/opt/uv", "venv", "--offline", "--no-project", "--python", "3.11", str(uv.env_dir)]
    assert uv.install_command(["rs-vlm==0.1.0"]) == [
        "/opt/uv", "pip", "install", "--python", str(envsetup.env_python(uv.env_dir)), "--no-index",
        "--find-links", "/w", "rs-vlm==0.1.0"]


def test_a_step_that_fails_names_itself_and_a_cancel_stops_it_at_once(tmp_path):
    installer = envsetup.Installer(_plan(tmp_path))
    (tmp_path / "envs").mkdir()
    with pytest.raises(envsetup.SetupError) as failed:
        installer.run_command(envsetup.STEP_APP, [sys.executable, "-c", f"print({PIP_DISK_FULL!r}); raise SystemExit(1)"])
    assert str(failed.value) == (f"install rs-vlm: the disk is full ({tmp_path / 'envs'}); free some space and "
                                 "set up again")

    lines = []
    installer = envsetup.Installer(_plan(tmp_path), lambda e: lines.append(e.text) if e.kind == "line" else None)
    outcome = {}

    def target():
        try:
            installer.run_command(envsetup.STEP_CREATE, [sys.executable, "-c",
                                                         "import time; print('Collecting torch', flush=True); time.sleep(120)"])
        except envsetup.SetupCancelled:
            outcome["cancelled"] = time.monotonic()

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 30
    while "Collecting torch" not in lines and time.monotonic() < deadline:
        time.sleep(0.05)
    asked = time.monotonic()
    installer.cancel()
    thread.join(30)
    assert "cancelled" in outcome and outcome["cancelled"] - asked < 5


def test_checks_refuse_a_plan_before_anything_is_created(tmp_path):
    empty = tmp_path / "wheels"
    empty.mkdir()
    (empty / "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"")
    result = envsetup.Installer(_plan(tmp_path, wheelhouse=str(empty))).run()
    assert result.status == "error" and result.step == "check"
    assert result.message == (f"set-up failed at step 'check': the wheelhouse {empty} has no wheel for rs-vlm==0.1.0; "
                              "add rs-vlm's wheel (and its dependencies') and set up again")
    assert not (tmp_path / "envs").exists()

    too_new = envdetect.EngineRequirements("0.1.0", "rs-vlm==0.1.0", python_min=(3, 99))
    result = envsetup.Installer(_plan(tmp_path, requirements=too_new)).run()
    version = ".".join(map(str, sys.version_info[:2]))
    assert result.message == (f"set-up failed at step 'check': {sys.executable} is Python {version}; rs-vlm needs "
                              "Python 3.99 or newer")

    with pytest.raises(envsetup.SetupError, match=r"^check: not enough free disk space in .*GB free, about .* GB needed"):
        envsetup.check_free_space(tmp_path, shutil.disk_usage(tmp_path).free + 1024 ** 4)


def test_pruning_removes_only_old_environments_of_the_set_up(tmp_path):
    for name in ("rs-vlm-0.1.0-20260101-000000", "rs-vlm-0.1.0-20260102-000000", "my-own-env"):
        (tmp_path / name / "bin").mkdir(parents=True)
    removed = envsetup.prune_envs(tmp_path, keep=[tmp_path / "rs-vlm-0.1.0-20260102-000000"])
    assert [p.name for p in removed] == ["rs-vlm-0.1.0-20260101-000000"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-own-env", "rs-vlm-0.1.0-20260102-000000"]


# -- the zip, and the dialog in a fresh QGIS ------------------------------------------------------------


@pytest.fixture(scope="module")
def plugin_zip(need_app, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("zip") / "rs_vlm.zip"
    run_app("-m", "rs_vlm_app", "qgis", "package", "-o", str(target))
    return target


def test_the_zip_carries_the_set_up_and_the_release_it_installs(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as archive:
        names = set(archive.namelist())
        engine = json.loads(archive.read(f"{PLUGIN_ID}/engine.json"))
    for name in ("setup_dialog.py", "envsetup.py", "envdetect.py", "protocol.py", "metadata.txt", "worker.py"):
        assert f"{PLUGIN_ID}/{name}" in names, name
    version = run_app("-c", "import rs_vlm_app; print(rs_vlm_app.__version__)").stdout.strip()
    pins = re.findall(r'"(torch(?:vision)?==[^"]+)"', (REPO / "pyproject.toml").read_text())
    assert engine == {"app_version": version, "requirement": f"rs-vlm=={version}", "torch": pins, "python_min": "3.11"}


@pytest.fixture(scope="module")
def wheelhouse(need_app, tmp_path_factory) -> Path:
    """The project's own wheel, built from a copy of the checkout with the app environment's setuptools
    (no build isolation: nothing is downloaded)."""
    source = tmp_path_factory.mktemp("source") / "rs-vlm"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "tests", "docs", "bench", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
        ".ruff_cache", ".pytest_cache", "scripts", ".ci", "out", "demo_out"))
    folder = tmp_path_factory.mktemp("wheelhouse")
    proc = subprocess.run([str(app_python()), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           str(source), "-w", str(folder)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(folder.glob("rs_vlm-*.whl"))) == 1
    return folder


@pytest.fixture(scope="module")
def reuse_site(need_app, tmp_path_factory) -> Path:
    """The app environment's installed packages (torch & co.) without rs-vlm itself and pip, as links,
    for the new environments to read through a .pth file."""
    site = Path(run_app("-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    folder = tmp_path_factory.mktemp("reuse")
    skip = re.compile(r"^(rs_vlm|__editable__|pip\b|pip-|__pycache__)", re.IGNORECASE)
    for entry in site.iterdir():
        if not skip.match(entry.name) and entry.suffix != ".pth":
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def fresh_qgis(plugin_zip, wheelhouse, reuse_site, tiny_models, tmp_path_factory) -> dict:
    """The report of tests/qgis/setup_driver.py run in a new QGIS process with a new profile."""
    work = tmp_path_factory.mktemp("fresh-qgis")
    (work / "out").mkdir()
    (work / "empty-wheelhouse").mkdir()
    config = {
        "profile": str(work / "profiles" / "default"), "zip": str(plugin_zip), "repo": str(REPO),
        "wheelhouse": str(wheelhouse), "empty_wheelhouse": str(work / "empty-wheelhouse"),
        "reuse_site": str(reuse_site), "base_python": str(app_python()), "scene": str(NAIP),
        "checkpoint": tiny_models["clip"]["checkpoint"], "model_config": tiny_models["clip"]["config"],
        "out": str(work / "out"),
    }
    (work / "config.json").write_text(json.dumps(config))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", RSVLM_CACHE_DIR=str(work / "cache"),
               HOME=str(work / "home"), XDG_CONFIG_HOME=str(work / "home" / ".config"))
    # pip reads only what the set-up passes it: not this machine's pip.conf links, indexes and constraints
    env = {k: v for k, v in env.items() if not k.startswith(("PIP_", "UV_"))
           and k not in ("RSVLM_APP_PYTHON", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_CONFIG_FILE"] = os.devnull
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("setup_driver.py")), str(work / "config.json")],
                          capture_output=True, text=True, timeout=1500, env=env, cwd=work)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the QGIS process ended without a report ({proc.returncode}):\n{proc.stderr[-4000:]}"
    (work / "report.json").write_text(lines[-1])  # for a person looking into a failure
    report = json.loads(lines[-1])
    assert "crash" not in report, report["crash"] + "\n" + json.dumps({k: v for k, v in report.items() if k != "crash"},
                                                                      indent=1)[:6000]
    report["work"] = str(work)
    return report


@pytest.mark.slow
def test_a_fresh_qgis_sets_up_rs_vlm_from_a_wheelhouse_and_localizes(fresh_qgis, wheelhouse, plugin_zip):
    report = fresh_qgis
    profile = Path(report["work"]) / "profiles" / "default"
    # a fresh profile; the plugin unzipped into its python/plugins the way QGIS installs a zip
    assert Path(report["settings_dir"]).resolve() == profile.resolve()
    assert Path(report["settings_file"]).resolve() == (profile / "QGIS" / "QGIS3.ini").resolve()
    assert report["loaded"] is True
    assert Path(report["plugin_path"]) == (profile / "python" / "plugins" / PLUGIN_ID).resolve()
    assert {f"{PLUGIN_ID}/engine.json", f"{PLUGIN_ID}/setup_dialog.py", f"{PLUGIN_ID}/protocol.py"} <= set(report["plugin_files"])
    # no engine: the plugin offers the set-up, whose button opens the dialog
    assert report["engine_before"] == ""
    assert any("no rs-vlm engine is set up yet" in m for m in report["offer"]) and report["offer_buttons"] == 1
    assert report["detected"] and report["builds"][0].startswith("cpu (no NVIDIA GPU found")
    assert report["installers"][-1] == "pip"

    # 1. a wheelhouse without rs-vlm: refused at the check, nothing created or recorded
    empty = report["empty_wheelhouse"]
    assert empty["status"] == "error" and empty["step"] == "check"
    assert "has no wheel for rs-vlm==" in empty["message"] and empty["envs"] == [] and empty["engine"] == ""
    assert "No engine was recorded." in empty["status_text"]

    # 2. cancelled while creating the environment: its folder is gone, nothing recorded
    cancelled = report["cancelled"]
    assert "step 2 of 4: create the environment" in cancelled["cancelled_at"]
    assert cancelled["status"] == "cancelled" and cancelled["envs"] == [] and cancelled["engine"] == ""

    # 3. the set-up: a new environment in the profile, recorded only once its worker said hello
    setup = report["setup"]
    assert setup["status"] == "ok", setup
    assert setup["progress"] == 1000 and setup["status_text"].startswith("✔ rs-vlm 0.1.0 is set up in")
    env_dir = Path(report["recorded"]["env"])
    assert env_dir.parent == profile / "rs_vlm" / "envs" and setup["envs"] == [env_dir.name]
    assert report["recorded"]["python"] == setup["python"] == setup["engine"] == str(env_dir / "bin" / "python")
    assert setup["origin"] == "setup"
    assert "rs-vlm 0.1.0" in report["recorded"]["summary"] and "device: cpu" in report["recorded"]["summary"]
    assert report["marker"]["status"] == "ready" and report["marker"]["source"] == str(wheelhouse)
    installed = list(env_dir.glob("lib/python3*/site-packages/rs_vlm_app/__init__.py"))
    assert len(installed) == 1  # rs-vlm itself is the wheel's copy in the new environment

    # 4. a later set-up that fails (the wheelhouse lacks rs-vlm's dependencies) keeps the first engine
    failed = report["missing_wheel"]
    assert failed["status"] == "error" and failed["step"] == "install rs-vlm"
    assert re.search(r"the wheelhouse .* has no wheel for \S+ \(for this Python and system\)", failed["message"])
    assert failed["envs"] == [env_dir.name] and report["engine_after_failure"] == setup["python"]
    assert f"The engine in use is unchanged: {setup['python']}" in failed["status_text"]

    # the Processing algorithm ran on the set-up engine's worker
    assert Path(report["localize"]["heatmap"]).is_file()
    assert report["worker_argv"][:3] == [setup["python"], "-m", "rs_vlm_app"]

    # the installed wheel carries the plugin's source: `rsvlm qgis package` works outside a checkout too
    rebuilt = Path(report["work"]) / "from-wheel.zip"
    proc = subprocess.run([setup["python"], "-m", "rs_vlm_app", "qgis", "package", "-o", str(rebuilt)],
                          capture_output=True, text=True, timeout=120, cwd=report["work"],
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    with zipfile.ZipFile(rebuilt) as fresh, zipfile.ZipFile(plugin_zip) as checkout:
        assert sorted(fresh.namelist()) == sorted(checkout.namelist())
        assert fresh.read(f"{PLUGIN_ID}/engine.json") == checkout.read(f"{PLUGIN_ID}/engine.json")


def test_the_newer_of_the_set_up_and_rsvlm_qgis_install_is_the_engine(tmp_path, monkeypatch):
    """A Python chosen by hand wins; else the set-up's environment or `rsvlm qgis install`'s record,
    whichever was made last."""
    from qgis.core import QgsSettings

    from plugin_qgis import settings

    record = tmp_path / "app.json"
    monkeypatch.setattr(settings, "install_record_path", lambda: record)
    s = QgsSettings()
    saved = {key: s.value(f"rs_vlm/{key}") for key in ("python", "pythonpath")}
    try:
        s.remove("rs_vlm/python")
        record.write_text(json.dumps({"python": "/old/install/python", "installed": "2000-01-01T00:00:00+00:00"}))
        settings.record_engine("/envs/rs-vlm-0.1.0/bin/python", "/envs/rs-vlm-0.1.0", "rs-vlm 0.1.0")
        assert settings.detected_python() == ("/envs/rs-vlm-0.1.0/bin/python", "", "setup")
        assert settings.load_config().python_origin == "setup"
        record.write_text(json.dumps({"python": "/new/install/python", "installed": "2999-01-01T00:00:00+00:00"}))
        assert settings.detected_python() == ("/new/install/python", "", "install")
        s.setValue("rs_vlm/python", "/my/python")
        assert settings.load_config().python == "/my/python"
        settings.record_engine("/envs/rs-vlm-0.1.1/bin/python", "/envs/rs-vlm-0.1.1", "rs-vlm 0.1.1")
        assert s.value("rs_vlm/python") is None  # setting up again is choosing anew
    finally:
        for key in settings.ENGINE_KEYS:
            s.remove(f"rs_vlm/engine/{key}")
        for key, value in saved.items():
            if value is None:
                s.remove(f"rs_vlm/{key}")
            else:
                s.setValue(f"rs_vlm/{key}", value)
