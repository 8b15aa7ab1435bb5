"""The task option dataclasses (localize, caption, classify, search), each parameter declared once
with its default, range and help (``option``), and the validation they share: one-line UserErrors.

Light imports only (no torch, rasterio, open_clip at import time): job specs and the CLI's parser
import this module to take their defaults and help texts from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.coca_decoder import DECODING_METHODS, DecodingOptions

if TYPE_CHECKING:
    from rs_vlm_app.geo.grid import GridSpec


def parse_grid(grid: str | GridSpec) -> GridSpec:
    """A GridSpec from its text form ("256", "256,512@0.25", "selo", ...) or as given."""
    from rs_vlm_app.geo.grid import GridSpec  # numpy: only when options are built, not for `rsvlm --help`

    if isinstance(grid, GridSpec):
        return grid
    if not isinstance(grid, str):
        raise UserError(f"grid must be text such as '256' or '256,512@0.25', not {grid!r}")
    return GridSpec.parse(grid)


def check_bands(bands: Sequence[int] | None) -> tuple[int, ...] | None:
    """None, or 1 or 3 band numbers (1-based)."""
    if bands is None:
        return None
    try:
        values = tuple(int(b) for b in bands)
    except (TypeError, ValueError):
        raise UserError(f"bands must be band numbers such as 4,3,2, not {bands!r}") from None
    if len(values) not in (1, 3) or any(b < 1 for b in values) or any(int(b) != b for b in bands):
        raise UserError(f"bands must be one or three band numbers counted from 1, not {bands!r}")
    return values


def check_fraction(name: str, value: float) -> float:
    if not isinstance(value, int | float) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise UserError(f"{name} must be between 0 and 1, not {value!r}")
    return float(value)


def check_count(name: str, value: int, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
        limit = f"between {minimum} and {maximum}" if maximum else f"at least {minimum}"
        raise UserError(f"{name} must be a whole number {limit}, not {value!r}")
    return value


class TileOptionsIO:
    """Mixin for frozen option dataclasses with ``grid`` (text) and ``bands`` fields: the parsed grid
    and a JSON round trip (``from_dict(to_dict()) == self``) that names unknown keys."""

    task_name: ClassVar[str] = "task"

    @property
    def grid_spec(self) -> GridSpec:
        return parse_grid(self.grid)  # type: ignore[attr-defined]

    def to_dict(self) -> dict:
        out = asdict(self)  # type: ignore[call-overload]
        out["bands"] = list(self.bands) if self.bands else None  # type: ignore[attr-defined]
        return out

    @classmethod
    def from_dict(cls, data: dict):
        unknown = set(data) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        if unknown:
            raise UserError(f"unknown {cls.task_name} option(s): {', '.join(sorted(unknown))}")
        data = dict(data)
        if data.get("bands") is not None:
            data["bands"] = tuple(data["bands"])
        return cls(**data)


# -- declared options: one place per parameter -----------------------------------------------------
#
# Each task parameter is declared once, here, with ``option(default, help=..., minimum=..., ...)``:
# the dataclass field holds the default, its range or choices and the help text. The job specs
# (rs_vlm_app/jobs/kinds/) take their defaults from ``default_of``, the CLI builds its options with
# rs_vlm_app.commands.options.add_option, and tests/tasks/test_option_contract.py checks the QGIS
# plugin's Processing parameters against ``declared`` (the plugin cannot import this module).
# Values are validated once, by ``check_declared`` in the dataclass's __post_init__.
# A new option: add an ``option(...)`` field to the task's dataclass below; the contract test then
# says where else it must appear.

OPTION_KEY = "rs_vlm_option"


@dataclass(frozen=True)
class OptionInfo:
    """What is declared about one task parameter."""

    name: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    #: a number must be a whole number (bool excluded)
    integer: bool = False


def option(default: Any, *, help: str, minimum: float | None = None, maximum: float | None = None,
           choices: Sequence | None = None, integer: bool = False) -> Any:
    """A dataclass field declaring a task parameter: its default, range (inclusive), choices, help.
    ``None`` values are never range-checked (None means "chosen by the task")."""
    meta = {OPTION_KEY: {"help": help, "minimum": minimum, "maximum": maximum,
                         "choices": tuple(choices) if choices is not None else None, "integer": integer}}
    return field(default=default, metadata=meta)


def declared(cls) -> dict[str, OptionInfo]:
    """The declared options of an options dataclass (class or instance), in field order."""
    out = {}
    for f in fields(cls):
        meta = f.metadata.get(OPTION_KEY)
        if meta is not None:
            out[f.name] = OptionInfo(f.name, f.default, **meta)
    return out


def default_of(cls, name: str) -> Any:
    """The declared default of option ``name`` of ``cls`` (job specs take theirs from here)."""
    info = declared(cls).get(name)
    if info is None:
        raise KeyError(f"{cls.__name__} declares no option {name!r}")
    return info.default


def check_value(info: OptionInfo, value: Any) -> None:
    """One-line UserError when ``value`` is outside what ``info`` declares (None always passes)."""
    if value is None:
        return
    if info.choices is not None:
        if value not in info.choices:
            raise UserError(f"{info.name} must be one of {', '.join(map(str, info.choices))}, not {value!r}")
        return
    if info.minimum is None and info.maximum is None and not info.integer:
        return
    number_ok = isinstance(value, int | float) and not isinstance(value, bool)
    low, high = info.minimum, info.maximum
    if low is not None and high is not None:
        limit = f"between {low:g} and {high:g}"
    else:
        limit = f"at least {low:g}" if low is not None else f"at most {high:g}" if high is not None else ""
    what = f"a whole number {limit}".strip() if info.integer else limit
    if info.integer and not (number_ok and float(value).is_integer()):
        raise UserError(f"{info.name} must be {what}, not {value!r}")
    if not number_ok or math.isnan(value):
        raise UserError(f"{info.name} must be a number {limit}, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise UserError(f"{info.name} must be {what}, not {value!r}")


def check_declared(options) -> None:
    """Check every declared option of ``options`` against its range or choices."""
    for name, info in declared(options).items():
        check_value(info, getattr(options, name))


def _aoi_text(value):
    from rs_vlm_app.geo.aoi import check_aoi_text  # shapely: only when an options object is built

    return check_aoi_text(value)


_GRID_HELP = ("tile windows: '256' (side in pixels), '256,512' (several scales), '256@0.5' (50% overlap), "
              "'selo' (256/512/768, each with a half-shifted grid: the SeLo protocol)")
_BANDS_HELP = "bands shown as red, green, blue, counted from 1 (default: the raster's RGB bands)"
_MIN_VALID_HELP = "skip tiles with less valid (non-nodata) area than this fraction"
_AOI_HELP = "area of interest (a vector file, FILE or FILE:LAYER): only tiles overlapping it"


class _TileOptions(TileOptionsIO):
    """__post_init__ shared by the tile tasks' options: grid text, bands, AoI, declared ranges."""

    @property
    def grid_spec(self) -> GridSpec:
        """The grid, parsed once when the options were built."""
        return self._grid_spec  # type: ignore[attr-defined]

    def _check_common(self) -> None:
        if hasattr(self, "aoi"):
            object.__setattr__(self, "aoi", _aoi_text(self.aoi))
        spec = parse_grid(self.grid)  # the one parse: text (or a GridSpec) in, its key text kept
        object.__setattr__(self, "_grid_spec", spec)
        object.__setattr__(self, "grid", spec.key())
        object.__setattr__(self, "bands", check_bands(self.bands))
        check_declared(self)


@dataclass(frozen=True)
class LocalizeOptions(_TileOptions):
    """How `localize` works (plain data: JSON-serialisable). ``grid`` may be given as a GridSpec."""

    task_name: ClassVar[str] = "localize"

    grid: str = option("selo", help=_GRID_HELP)
    compat: str | None = option(None, choices=("selo",),
                                help="reproduce the published SeLo protocol step for step")
    bands: tuple[int, ...] | None = option(None, help=_BANDS_HELP)
    min_valid: float = option(0.5, minimum=0.0, maximum=1.0, help=_MIN_VALID_HELP)
    hotspot_threshold: float = option(0.6, minimum=0.0, maximum=1.0,
                                      help="hot spots are regions of the normalised heat map at or above this")
    heatmap_pixel: float | None = option(None, minimum=1e-9,
                                         help="source pixels per heat-map pixel (default: smallest window / 32; "
                                              "1 with compat selo)")
    cog: bool = option(False, help="write heat maps as Cloud-Optimized GeoTIFFs")
    aoi: str | None = option(None, help=_AOI_HELP + "; outputs masked to it")

    def __post_init__(self) -> None:
        self._check_common()


@dataclass(frozen=True)
class CaptionOptions(_TileOptions):
    """How `caption_scene` tiles the raster and decodes captions (plain data: JSON-serialisable)."""

    task_name: ClassVar[str] = "caption"

    grid: str = option("256", help=_GRID_HELP)
    decoding: str = option(DecodingOptions.method, choices=DECODING_METHODS,
                           help="greedy: fastest; beam: keeps the N best partial captions")
    beams: int = option(DecodingOptions.beams, minimum=1, integer=True, help="beams for beam decoding")
    max_len: int = option(DecodingOptions.max_len, minimum=1, integer=True, help="most tokens per caption")
    min_len: int = option(DecodingOptions.min_len, minimum=0, integer=True, help="fewest tokens per caption")
    length_penalty: float = option(DecodingOptions.length_penalty,
                                   help="beam ranking: log-probability / length**A (1: mean per token)")
    bands: tuple[int, ...] | None = option(None, help=_BANDS_HELP)
    min_valid: float = option(0.5, minimum=0.0, maximum=1.0, help=_MIN_VALID_HELP)
    aoi: str | None = option(None, help=_AOI_HELP)

    def __post_init__(self) -> None:
        self._check_common()
        self.decoding_options  # noqa: B018 - validates the decoding fields together (min_len <= max_len)

    @property
    def decoding_options(self) -> DecodingOptions:
        return DecodingOptions(self.decoding, beams=self.beams, max_len=self.max_len, min_len=self.min_len,
                               length_penalty=self.length_penalty)


#: class indexes 0..254 in a uint8 class raster, 255 = nodata
MAX_CLASSES = 255


@dataclass(frozen=True)
class ClassifyOptions(_TileOptions):
    """How `classify_scene` works (plain data: JSON-serialisable)."""

    task_name: ClassVar[str] = "classify"

    classes: str = option("aid", help="a built-in class list (aid, resisc45, eurosat) or a class file")
    templates: str | None = option(None, help="prompt templates, one per line with {} for the class (default: the "
                                              "built-in remote-sensing set)")
    grid: str = option("256", help=_GRID_HELP)
    top_k: int = option(3, minimum=1, integer=True, help="classes per tile in tiles.gpkg")
    bands: tuple[int, ...] | None = option(None, help=_BANDS_HELP)
    min_valid: float = option(0.5, minimum=0.0, maximum=1.0, help=_MIN_VALID_HELP)
    pixel: float | None = option(None, minimum=1.0,
                                 help="source pixels per output pixel (default: smallest window / 8)")
    probabilities: bool = option(True, help="write probabilities.tif")
    cog: bool = option(False, help="write Cloud-Optimized GeoTIFFs")
    aoi: str | None = option(None, help=_AOI_HELP + "; maps masked to it")

    def __post_init__(self) -> None:
        self._check_common()
        if not isinstance(self.classes, str) or not self.classes.strip():
            raise UserError("give the classes: aid, resisc45, eurosat or a class file")

    def load(self):
        """The ClassList and templates (read and checked: call before loading a model)."""
        from rs_vlm_app.tasks.classes import load_classes, load_templates

        classes = load_classes(self.classes)
        if len(classes) > MAX_CLASSES - 1:
            raise UserError(f"{len(classes)} classes; a class raster holds at most {MAX_CLASSES - 1}",
                            path=classes.source)
        return classes, load_templates(self.templates)


@dataclass(frozen=True)
class SearchOptions(_TileOptions):
    """How `search_scenes` works (plain data: JSON-serialisable)."""

    task_name: ClassVar[str] = "search"

    top_k: int = option(20, minimum=1, maximum=100_000, integer=True, help="tiles to return")
    grid: str = option("256", help=_GRID_HELP)
    bands: tuple[int, ...] | None = option(None, help=_BANDS_HELP)
    min_valid: float = option(0.5, minimum=0.0, maximum=1.0, help=_MIN_VALID_HELP)
    crs: str = option("first", help="CRS of the footprints: 'first' (the first scene's) or e.g. EPSG:4326")
    contact_sheet: bool = option(True, help="write the PNG contact sheet")
    columns: int = option(5, minimum=1, maximum=100, integer=True, help="contact sheet columns")
    cell: int = option(192, minimum=16, maximum=2048, integer=True, help="contact sheet: pixels per tile")
    aoi: str | None = option(None, help=_AOI_HELP + " are searched")

    def __post_init__(self) -> None:
        self._check_common()
        if not isinstance(self.crs, str) or not self.crs.strip():
            raise UserError("crs must be 'first' or a CRS such as EPSG:4326")
        if self.crs != "first":
            target_crs(self.crs)


def target_crs(text: str):
    """A rasterio CRS from any CRS text; one-line UserError when unknown."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise UserError(f"unknown CRS {text!r}; give e.g. EPSG:4326 or 'first'") from None
