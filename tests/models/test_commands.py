"""`rsvlm models ...` and the shared model/device options."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rs_vlm_app import cli, paths
from rs_vlm_app.commands.options import add_device_options, add_model_options, model_spec_from_args
from rs_vlm_app.models.spec import ModelSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_logging():
    """cli.main() points the rs_vlm_app logger at this test's captured stderr; undo that afterwards."""
    logger = logging.getLogger("rs_vlm_app")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def test_models_list_marks_defaults_and_cache_state(capsys):
    folder = paths.models_cache_dir() / "remoteclip-vit-b-32"
    folder.mkdir(parents=True)
    (folder / "RemoteCLIP-ViT-B-32.pt").write_bytes(b"weights")
    assert cli.main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    default = next(line for line in lines if "georsclip-vit-b-32" in line).split()
    assert default == ["*", "georsclip-vit-b-32", "clip", "ViT-B-32", "yes", "hf:Zilun/GeoRSCLIP/ckpt/RS5M_ViT-B-32.pt",
                       "no"]
    cached = next(line for line in lines if "remoteclip-vit-b-32" in line).split()
    assert cached[-1] == "yes"
    assert any(line.split()[:2] == ["*", "coca-vit-b-32-mscoco"] for line in lines)


def test_models_list_json(capsys):
    assert cli.main(["models", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    hqrs = next(r for r in rows if r["name"] == "hqrs-clip")
    assert hqrs["source"] == "user file" and hqrs["quick_gelu"] is True and hqrs["cached"] is False
    assert hqrs["path"] == str(paths.models_cache_dir() / "hqrs-clip" / "HQRS-CLIP.pt")


def test_models_path(capsys):
    assert cli.main(["models", "path", "GeoRSCLIP-ViT-B-32"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(paths.models_cache_dir() / "georsclip-vit-b-32" / "RS5M_ViT-B-32.pt")
    assert "not in the cache yet" in out.err and "rsvlm models fetch georsclip-vit-b-32" in out.err


def test_unknown_model_exits_2_with_one_line(capsys):
    assert cli.main(["models", "path", "georsclip"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rsvlm: error: unknown model 'georsclip'; did you mean georsclip-vit-b-32")
    assert err.count("\n") == 1


def test_fetch_offline_says_where_to_put_the_file(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["models", "fetch", "openai-vit-b-32"]) == 2
    err = capsys.readouterr().err
    target = paths.models_cache_dir() / "openai-vit-b-32" / "open_clip_model.safetensors"
    assert "downloads are off (HF_HUB_OFFLINE is set)" in err and str(target) in err


def test_models_list_imports_no_torch():
    """The listing answers at once: it must not import torch or open_clip."""
    code = ("import sys; from rs_vlm_app.cli import main; main(['models', 'list']); "
            "print('heavy:', 'torch' in sys.modules or 'open_clip' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip().endswith("heavy: False")


def parse(argv):
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    add_device_options(parser)
    return parser.parse_args(argv)


def test_options_to_request():
    args = parse(["--checkpoint", "ft.pt", "--arch", "ViT-B-32", "--quick-gelu", "--offline", "--device", "cpu",
                  "--precision", "bf16", "--batch-size", "8"])
    assert model_spec_from_args(args) == ModelSpec(checkpoint=Path("ft.pt"), arch="ViT-B-32", quick_gelu=True,
                                                   allow_download=False, device="cpu", precision="bf16",
                                                   batch_size=8)
    assert (args.device, args.precision, args.batch_size) == ("cpu", "bf16", 8)
    defaults = parse([])
    assert model_spec_from_args(defaults) == ModelSpec()
    assert (defaults.device, defaults.precision, defaults.batch_size) == ("auto", "auto", None)
    assert model_spec_from_args(parse(["--model", "hqrs-clip", "--no-quick-gelu"])) == ModelSpec(
        name="hqrs-clip", quick_gelu=False)


@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["--batch-size", "many"], ["--precision", "fp8"]])
def test_bad_device_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
