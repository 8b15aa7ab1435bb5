"""Output-path checks every task and evaluation makes before any model work (one-line UserErrors)."""

from __future__ import annotations

from pathlib import Path

from rs_vlm_app.atomic import atomic_path
from rs_vlm_app.errors import UserError

_PROBE = ".rsvlm-write-test"


def check_output_dir(out_dir: Path) -> None:
    """Create ``out_dir`` if needed and prove it can be written; fail early when it cannot."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / _PROBE) as probe:
            probe.write_bytes(b"")
        (out_dir / _PROBE).unlink()
    except OSError as exc:
        raise UserError(f"cannot write to the output folder ({exc.strerror or exc})", path=out_dir) from None


def check_vector_output(out: Path, layers: int = 1) -> None:
    """A vector output whose extension names its format (.gpkg, .parquet, .geojson; see
    rs_vlm_app.geo.vectors) in a folder that can be written."""
    from rs_vlm_app.geo.vectors import vector_format

    out = Path(out)
    vector_format(out, layers)
    if out.is_dir():
        raise UserError("is a folder; give a file name such as results.gpkg", path=out)
    check_output_dir(out.parent if str(out.parent) else Path("."))


def check_output_file(out: Path, suffix: str = ".gpkg") -> None:
    """The output must be a ``suffix`` file in a folder that can be written."""
    out = Path(out)
    if out.suffix.lower() != suffix:
        raise UserError(f"the output must be a {suffix} file", path=out)
    if out.is_dir():
        raise UserError(f"is a folder; give a {suffix} file name", path=out)
    check_output_dir(out.parent if str(out.parent) else Path("."))
