"""The "rs-vlm" Processing provider."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..shipped import icon_path
from .caption import CaptionAlgorithm
from .classify import ClassifyAlgorithm
from .dataset import BuildDatasetAlgorithm
from .finetune import FineTuneAlgorithm
from .localize import LocalizeAlgorithm
from .search import SearchAlgorithm

ALGORITHMS = (LocalizeAlgorithm, CaptionAlgorithm, ClassifyAlgorithm, SearchAlgorithm, BuildDatasetAlgorithm,
              FineTuneAlgorithm)


class RsVlmProvider(QgsProcessingProvider):
    """Algorithms that run in the rs-vlm worker: id ``rsvlm`` (e.g. ``rsvlm:localize``)."""

    def id(self) -> str:
        return "rsvlm"

    def name(self) -> str:
        return "rs-vlm"

    def longName(self) -> str:  # noqa: N802
        return "rs-vlm: vision-language models for remote sensing"

    def icon(self) -> QIcon:
        return QIcon(icon_path())

    def loadAlgorithms(self) -> None:  # noqa: N802
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]
