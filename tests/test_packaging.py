"""The wheel's package list (pyproject.toml) covers every code folder and every resources folder."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO


def test_every_folder_is_packaged():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    code = {".".join(p.parent.relative_to(REPO).parts) for top in ("rs_vlm_app", "rs_vlm")
            for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts}
    data = {".".join(("rs_vlm_app", *d.relative_to(REPO).parts)) for d in [REPO / "resources",
            *(p for p in (REPO / "resources").rglob("*") if p.is_dir())]}
    # the QGIS plugin's source travels in the wheel as rs_vlm_app.plugin_qgis (for `rsvlm qgis package`)
    data |= {".".join(("rs_vlm_app", *p.parent.relative_to(REPO).parts)) for p in (REPO / "plugin_qgis").rglob("*.py")
             if "__pycache__" not in p.parts}
    assert setuptools["package-dir"]["rs_vlm_app.resources"] == "resources"
    assert setuptools["package-dir"]["rs_vlm_app.plugin_qgis"] == "plugin_qgis"
    assert code | data == listed, f"missing: {sorted(code | data - listed)}; extra: {sorted(listed - code - data)}"
