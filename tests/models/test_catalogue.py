"""The shipped catalogue is valid and agrees with open_clip; bad catalogues are one-line errors."""

from __future__ import annotations

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.catalogue import (
    HubFile,
    OpenClipPretrained,
    UrlFile,
    UserFile,
    default_entry,
    get_entry,
    load_catalogue,
)

GOOD_ENTRY = """
[models.{name}]
family = "clip"
arch = "ViT-B-32"
quick_gelu = true
{extra}
source = {{ kind = "hf", repo = "org/repo", file = "weights.pt" }}
description = "d"
paper = "p"
license = "l"
"""


def write(tmp_path, text):
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_shipped_catalogue_names_the_expected_models():
    entries = load_catalogue()
    assert default_entry("clip").name == "georsclip-vit-b-32"
    assert default_entry("coca").family == "coca"
    geo = entries["georsclip-vit-b-32"]
    assert geo.source == HubFile("Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt")
    assert entries["georsclip-vit-l-14"].source.file == "ckpt/RS5M_ViT-L-14.pt"
    assert entries["georsclip-vit-h-14"].source.file == "ckpt/RS5M_ViT-H-14.pt"
    for arch in ("ViT-B-32", "ViT-L-14", "RN50"):
        assert entries[f"remoteclip-{arch.lower()}"].source == HubFile("chendelong/RemoteCLIP", f"RemoteCLIP-{arch}.pt")
    assert isinstance(entries["hqrs-clip"].source, UserFile) and entries["hqrs-clip"].arch == "ViT-B-32"
    assert isinstance(entries["rs-coca"].source, UserFile) and entries["rs-coca"].arch == "coca_ViT-L-14"
    assert isinstance(entries["skyclip-vit-l-14"].source, UrlFile)
    for entry in entries.values():
        assert entry.paper and entry.license and entry.description


def test_quick_gelu_flags_follow_the_weights_origin():
    """OpenAI-initialised fine-tunes need QuickGELU; LAION-initialised ones must not get it."""
    entries = load_catalogue()
    openai_based = ["georsclip-vit-b-32", "georsclip-vit-l-14", "georsclip-vit-l-14-336", "remoteclip-vit-b-32",
                    "remoteclip-vit-l-14", "remoteclip-rn50", "skyclip-vit-l-14", "hqrs-clip", "openai-vit-b-32",
                    "openai-vit-l-14"]
    laion_based = ["georsclip-vit-h-14", "skyclip-vit-b-32", "rs-coca", "coca-vit-b-32", "coca-vit-l-14-mscoco"]
    assert all(entries[n].quick_gelu for n in openai_based)
    assert not any(entries[n].quick_gelu for n in laion_based)


def test_catalogue_agrees_with_open_clip():
    """Every architecture exists, and open_clip sources match open_clip's own registry (tag, hub, QuickGELU)."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    known = set(open_clip.list_models())
    for entry in load_catalogue().values():
        assert entry.arch in known, entry.name
        family = "coca" if "multimodal_cfg" in open_clip.get_model_config(entry.arch) else "clip"
        assert family == entry.family, entry.name
        if isinstance(entry.source, OpenClipPretrained):
            cfg = get_pretrained_cfg(entry.arch, entry.source.tag)
            assert cfg, f"{entry.name}: open_clip has no tag {entry.source.tag}"
            assert entry.source.hf_hub == cfg["hf_hub"], entry.name
            assert entry.quick_gelu == cfg.get("quick_gelu", False), entry.name


def test_get_entry_suggests_close_names():
    assert get_entry("GeoRSCLIP-ViT-B-32").name == "georsclip-vit-b-32"
    with pytest.raises(UserError) as err:
        get_entry("georsclip")
    message = str(err.value)
    assert "unknown model 'georsclip'" in message and "georsclip-vit-b-32" in message
    assert "\n" not in message
    with pytest.raises(UserError, match="rsvlm models list"):
        get_entry("zzzz")


def test_custom_catalogue_loads(tmp_path):
    path = write(tmp_path, GOOD_ENTRY.format(name="mine", extra="default = true"))
    entries = load_catalogue(path)
    assert entries["mine"].source == HubFile("org/repo", "weights.pt")
    assert default_entry("clip", entries).name == "mine"
    with pytest.raises(UserError, match="no default coca model"):
        default_entry("coca", entries)


@pytest.mark.parametrize("text, problem", [
    ("[models.x\nfamily = 1", "not a valid TOML model catalogue"),
    ("title = 'nothing'", "no [models.NAME] tables"),
    (GOOD_ENTRY.format(name="x", extra="").replace('family = "clip"', 'family = "blip"'), "family must be one of"),
    (GOOD_ENTRY.format(name="x", extra="").replace('arch = "ViT-B-32"\n', ""), "missing 'arch'"),
    (GOOD_ENTRY.format(name="x", extra="").replace('kind = "hf"', 'kind = "ftp"'), "source kind must be one of"),
    (GOOD_ENTRY.format(name="x", extra="").replace(', file = "weights.pt"', ""), "hf source needs file"),
    (GOOD_ENTRY.format(name="x", extra="").replace("quick_gelu = true", 'quick_gelu = "yes"'), "true or false"),
    (GOOD_ENTRY.format(name="x", extra="colour = 1"), "unknown key(s) colour"),
    (GOOD_ENTRY.format(name="\"Bad Name\"", extra=""), "names use lower-case"),
    (GOOD_ENTRY.format(name="a", extra="default = true") + GOOD_ENTRY.format(name="b", extra="default = true"),
     "several clip models as default"),
    (GOOD_ENTRY.format(name="x", extra="mean = [1, 2]"), "'mean' must be a list of three numbers"),
])
def test_bad_catalogue_is_a_one_line_user_error(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_catalogue(path)
    message = str(err.value)
    assert problem in message
    assert str(path) in message and "\n" not in message


def test_missing_catalogue_file(tmp_path):
    with pytest.raises(UserError, match="model catalogue not found"):
        load_catalogue(tmp_path / "nope.toml")
