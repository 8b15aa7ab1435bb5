"""open_clip imported without transformers, timm, huggingface_hub and torch._dynamo
(rs_vlm_app.models.open_clip_import), and what needs them still works. Each check runs in a fresh interpreter: the test session itself
imported open_clip the plain way long before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from rs_vlm_app.models.factory import load_model
from rs_vlm_app.models.spec import ModelSpec
from tests import tinymodels
from tests.conftest import REPO

HEAVY = ("transformers", "timm", "huggingface_hub", "torch._dynamo")


def run_python(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_text_path_imports_none_of_the_heavy_optional_packages(tiny_clip):
    """Loading a CLIP and encoding text: none of HEAVY is imported, and the image tower's weights
    are not assigned until images come."""
    out = run_python(f"""
        import json, sys
        from rs_vlm_app.models.encoder import ClipEncoder
        from rs_vlm_app.models.factory import load_model
        from rs_vlm_app.models.spec import ModelSpec
        loaded = load_model(ModelSpec(checkpoint={str(tiny_clip["checkpoint"])!r},
                                      model_config={str(tiny_clip["config"])!r}), device="cpu")
        encoder = ClipEncoder(loaded)
        text = encoder.encode_texts(["a lake", "a road"])
        after_text = {{"visual_loaded": loaded.visual_loaded,
                       "imported": [m for m in {HEAVY!r} if m in sys.modules]}}
        import numpy as np
        images = encoder.encode_images(np.full((2, 64, 64, 3), 90, np.uint8))
        print(json.dumps({{"after_text": after_text, "visual_loaded": loaded.visual_loaded,
                           "text": text.tolist(), "images": images.tolist()}}))
    """)
    assert out["after_text"] == {"visual_loaded": False, "imported": []}
    assert out["visual_loaded"]
    import open_clip

    reference = tiny_clip["model"]
    tokens = open_clip.tokenize(["a lake", "a road"], context_length=32)
    with torch.no_grad():
        text = torch.nn.functional.normalize(reference.encode_text(tokens), dim=-1).numpy()
    np.testing.assert_allclose(out["text"], text, rtol=1e-5, atol=1e-6)
    assert np.isfinite(out["images"]).all() and np.allclose(np.linalg.norm(out["images"], axis=1), 1, atol=1e-5)


def test_deferred_image_tower_gives_the_models_own_image_embeddings(tiny_clip):
    loaded = load_model(ModelSpec(checkpoint=tiny_clip["checkpoint"], model_config=tiny_clip["config"]), device="cpu")
    assert not loaded.visual_loaded
    assert loaded.network.visual.conv1.weight.device.type == "meta"
    whole = loaded.model  # the whole model: the image tower is loaded on the way
    assert loaded.visual_loaded and whole is loaded.network
    assert not any(p.device.type == "meta" for p in whole.parameters())
    assert not any(p.requires_grad for p in whole.parameters()) and not whole.visual.training
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(whole.encode_image(images), tiny_clip["model"].encode_image(images))
    assert list(whole.state_dict()) == list(tiny_clip["model"].state_dict())  # module order kept


@pytest.mark.slow
def test_models_that_need_transformers_or_timm_still_build(tmp_path):
    """After the blocked import, an HF text tower and a timm image tower build (the blocked imports
    are completed on first use), and torchvision's dynamo stand-in has given way to the real module."""
    hf = tmp_path / "tiny-bert"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 128, "max_position_embeddings": 40, "pad_token_id": 0}))
    hf_config = tinymodels.tiny_config("clip")
    hf_config["text_cfg"] = {"hf_model_name": str(hf), "hf_tokenizer_name": str(hf), "hf_proj_type": "linear",
                             "hf_pooler_type": "cls_pooler", "context_length": 16}
    timm_config = tinymodels.tiny_config("clip")
    timm_config["vision_cfg"] = {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                                 "timm_pool": "avg", "timm_proj": "linear", "image_size": 224}
    hf_path = tinymodels.write_config(tmp_path, "rsvlm-test-hf-text", hf_config)
    timm_path = tinymodels.write_config(tmp_path, "rsvlm-test-timm-vision", timm_config)
    out = run_python(f"""
        import json, sys, torch
        from rs_vlm_app.models.open_clip_import import import_open_clip, open_clip_complete
        open_clip = import_open_clip()
        before = [m for m in {HEAVY!r} if m in sys.modules]
        roi_align = sys.modules["torchvision.ops.roi_align"]  # torchvision.ops.roi_align is also a function
        from torch._dynamo.utils import is_compile_supported
        forwarded = roi_align.is_compile_supported("cpu") == is_compile_supported("cpu")
        real_utils = sys.modules["torch._dynamo.utils"].__file__ is not None
        open_clip.add_model_config({str(hf_path)!r})
        open_clip.add_model_config({str(timm_path)!r})
        hf = open_clip.create_model("rsvlm-test-hf-text", pretrained=None, pretrained_text=False)
        timm = open_clip.create_model("rsvlm-test-timm-vision", pretrained=None, pretrained_image=False)
        with torch.no_grad():
            text = hf.encode_text(torch.randint(1, 100, (2, 16)))
            image = timm.encode_image(torch.rand(1, 3, 224, 224))
        print(json.dumps({{"before": before, "forwarded": forwarded, "real_utils": real_utils,
                           "complete": open_clip_complete(), "text": list(text.shape),
                           "image": list(image.shape), "hf": type(hf.text).__name__,
                           "timm": type(timm.visual).__name__}}))
    """)
    assert out["before"] == []
    assert out["forwarded"] and out["real_utils"]
    assert out["complete"] and (out["hf"], out["timm"]) == ("HFTextEncoder", "TimmModel")
    assert out["text"] == [2, 32] and out["image"] == [1, 32]


def test_completion_binds_what_a_plain_import_binds():
    """complete_open_clip leaves open_clip's optional-import names as a plain import does."""
    code = """
        import json, sys
        {prelude}
        import open_clip.coca_model as coca, open_clip.hf_model as hf, open_clip.timm_model as tm
        import open_clip.pretrained as pretrained
        push = sys.modules["open_clip.push_to_hf_hub"]  # open_clip.push_to_hf_hub is also a function
        names = {{m.__name__: sorted(k for k, v in vars(m).items() if not k.startswith("__"))
                 for m in (coca, hf, tm, pretrained, push)}}
        print(json.dumps({{"names": names, "has_transformers": coca._has_transformers,
                          "transformers": hf.transformers is not None, "timm": tm.timm is not None,
                          "hub": [pretrained._has_hf_hub, push._has_hf_hub, pretrained.hf_hub_download is not None]}}))
    """
    plain = run_python(code.format(prelude="import open_clip"))
    completed = run_python(code.format(prelude="from rs_vlm_app.models.open_clip_import import import_open_clip, "
                                               "complete_open_clip; import_open_clip(); complete_open_clip()"))
    assert completed == plain


def test_a_hub_download_completes_the_imports_first():
    """open_clip asks has_hf_hub() before every Hub download: that call completes the imports."""
    out = run_python("""
        import json, sys
        from rs_vlm_app.models.open_clip_import import import_open_clip
        open_clip = import_open_clip()
        before = "huggingface_hub" in sys.modules
        from open_clip.factory import download_pretrained_from_hf  # bound by name: the original function
        asked = open_clip.pretrained.has_hf_hub(True)
        print(json.dumps({"before": before, "asked": asked, "after": "huggingface_hub" in sys.modules,
                          "download": open_clip.pretrained.hf_hub_download is not None,
                          "upload": open_clip.push_to_hf_hub is sys.modules["open_clip.push_to_hf_hub"].push_to_hf_hub,
                          "callable": callable(download_pretrained_from_hf)}))
    """)
    assert out == {"before": False, "asked": True, "after": True, "download": True, "upload": True,
                   "callable": True}


def test_plain_imports_variable_turns_it_off():
    out = run_python("""
        import json, sys
        from rs_vlm_app.models.open_clip_import import import_open_clip
        import_open_clip()
        print(json.dumps([m in sys.modules for m in ("transformers", "timm")]))
    """, RSVLM_PLAIN_IMPORTS="1")
    assert out == [True, True]
