"""Live training curves: losses, learning rate and every evaluation metric against optimizer steps.

A widget of three pyqtgraph plots fed with :func:`rs_vlm_app.training.metrics_log.read_curves`
output; new series (an evaluation metric appearing at the first evaluation) get a line of their
own, and each update only replaces the data of the lines (cheap enough for a 1 s refresh).
"""

from __future__ import annotations

import pyqtgraph as pg
from PyQt6.QtWidgets import QVBoxLayout, QWidget

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22"]
#: train_log.csv columns that are not curves worth plotting against steps
SKIPPED = frozenset({"samples_per_s", "truncated_captions"})


def plot_group(name: str) -> str | None:
    """Which plot a series belongs on: "loss", "lr" or "eval" (None: not plotted)."""
    if name in SKIPPED:
        return None
    if name.endswith("loss"):  # validation losses beside the training losses, on one scale
        return "loss"
    if name.startswith("eval/"):
        return "eval"
    return "lr" if name == "lr" else None


class CurvesWidget(QWidget):
    """Three stacked plots sharing the step axis: losses, learning rate, other evaluation metrics."""

    TITLES = {"loss": "Loss (training, validation)", "lr": "Learning rate", "eval": "Evaluation metrics"}

    def __init__(self, parent=None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("w")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        self.plots: dict[str, pg.PlotItem] = {}
        for row, (group, title) in enumerate(self.TITLES.items()):
            plot = self.view.addPlot(row=row, col=0, title=title)
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.addLegend(offset=(-10, 10), brush=pg.mkBrush(255, 255, 255, 210))
            plot.setLabel("bottom", "step")
            if row:
                plot.setXLink(self.plots["loss"])
            self.plots[group] = plot
        self.lines: dict[str, pg.PlotDataItem] = {}
        self.points: dict[str, int] = {}

    def clear(self) -> None:
        for name, line in self.lines.items():
            self.plots[plot_group(name) or "loss"].removeItem(line)
        self.lines.clear()
        self.points.clear()

    def set_curves(self, curves: dict[str, list[tuple[int, float]]]) -> None:
        """Show ``curves`` (series name -> (step, value) points); series no longer there are removed."""
        components = [n for n in curves if plot_group(n) == "loss" and n != "loss" and not n.startswith("eval/")]
        hidden = set(components) if len(components) == 1 and curves[components[0]] == curves.get("loss") else set()
        for name in [n for n in self.lines if n not in curves or n in hidden]:
            self.plots[plot_group(name) or "loss"].removeItem(self.lines.pop(name))
            self.points.pop(name, None)
        for name, points in curves.items():
            group = plot_group(name)
            if group is None or name in hidden:  # CLIP's one loss is not drawn twice
                continue
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            line = self.lines.get(name)
            if line is None:
                colour = COLOURS[len([n for n in self.lines if plot_group(n) == group]) % len(COLOURS)]
                symbol = "o" if group == "eval" else None
                line = self.plots[group].plot(xs, ys, pen=pg.mkPen(colour, width=2), name=name.removeprefix("eval/"),
                                              symbol=symbol, symbolSize=6, symbolBrush=colour)
                self.lines[name] = line
            else:
                line.setData(xs, ys)
            self.points[name] = len(points)

    def series(self) -> dict[str, int]:
        """Points shown per series (what a test or a status line reads)."""
        return dict(self.points)
