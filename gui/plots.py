"""Live training curves: events fill numpy buffers, a timer pushes them to curves created once.

Imported after the window is shown (pyqtgraph and numpy take a few hundred milliseconds). Buffers
double when full, curves get `setData` at most every REFRESH_MS, and downsampling plus clip-to-view
keep long runs fast; nothing is cleared and re-plotted per update.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QVBoxLayout, QWidget

REFRESH_MS = 40

TRAIN, VALIDATION, BATCHES, LR = (31, 119, 180), (214, 39, 40), (120, 160, 220, 110), (44, 160, 44)
# series name -> (plot, legend label, colour); per-epoch series get markers, validation is dashed
SERIES = {
    "batch_loss": ("loss", "train (batches)", BATCHES),
    "loss": ("loss", "train", TRAIN),
    "val_loss": ("loss", "validation", VALIDATION),
    "accuracy": ("accuracy", "train", TRAIN),
    "val_accuracy": ("accuracy", "validation", VALIDATION),
    "lr": ("lr", "learning rate", LR),
}
EPOCH_SERIES = ("loss", "val_loss", "accuracy", "val_accuracy")
# plot -> (title, legend offset): accuracy rises, so its legend sits bottom right, out of the way
PLOTS = {"loss": ("Loss", (-10, 10)), "accuracy": ("Accuracy", (-10, -10)), "lr": ("Learning rate", (-10, 10))}


class GrowingSeries:
    """x/y samples in arrays that double when full, so appending is amortised O(1)."""

    def __init__(self, capacity: int = 256):
        self._x = np.empty(capacity)
        self._y = np.empty(capacity)
        self.count = 0

    def append(self, x: float, y: float) -> None:
        if self.count == len(self._x):
            self._x = np.resize(self._x, 2 * self.count)
            self._y = np.resize(self._y, 2 * self.count)
        self._x[self.count] = x
        self._y[self.count] = y
        self.count += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self._x[:self.count], self._y[:self.count]

    def clear(self) -> None:
        self.count = 0


class TrainingPlots(QWidget):
    """Loss, accuracy and learning rate against (fractional) epochs."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        palette = self.palette()
        pg.setConfigOptions(antialias=True, background=palette.color(QPalette.ColorRole.Base),
                            foreground=palette.color(QPalette.ColorRole.Text))
        self.canvas = pg.GraphicsLayoutWidget()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.plots = {key: self._make_plot(row, *spec) for row, (key, spec) in enumerate(PLOTS.items())}
        for key in ("accuracy", "lr"):
            self.plots[key].setXLink(self.plots["loss"])
        self.series = {name: GrowingSeries() for name in SERIES}
        self.curves = {name: self._make_curve(name) for name in SERIES}
        self._dirty: set[str] = set()
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)

    def _make_plot(self, row: int, title: str, legend_offset: tuple[int, int]) -> pg.PlotItem:
        plot = self.canvas.addPlot(row=row, col=0, title=title)
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setDownsampling(auto=True, mode="peak")
        plot.setClipToView(True)
        plot.addLegend(offset=legend_offset)
        plot.setLabel("bottom", "epoch")
        return plot

    def _make_curve(self, name: str) -> pg.PlotDataItem:
        plot, label, colour = SERIES[name]
        style = Qt.PenStyle.DashLine if name.startswith("val_") else Qt.PenStyle.SolidLine
        pen = pg.mkPen(colour, width=1 if name == "batch_loss" else 2, style=style)
        markers = dict(symbol="o", symbolSize=5, symbolBrush=colour, symbolPen=None) if name in EPOCH_SERIES else {}
        return self.plots[plot].plot([], [], pen=pen, name=label, connect="finite", **markers)

    def set_side_by_side(self, side_by_side: bool) -> None:
        """The plots stacked (the default) or in one row, where the height is short (an automatic search's
        leaderboard above them)."""
        layout = self.canvas.ci
        placed = [(layout.getItem(0, i) is plot if side_by_side else layout.getItem(i, 0) is plot)
                  for i, plot in enumerate(self.plots.values())]
        if all(placed):
            return
        for plot in self.plots.values():
            layout.removeItem(plot)
        for index, plot in enumerate(self.plots.values()):
            layout.addItem(plot, row=0 if side_by_side else index, col=index if side_by_side else 0)

    # -- feeding -----------------------------------------------------------------------------
    def add_batch(self, logs: dict) -> None:
        x = logs["epoch"] - 1 + logs["batch"] / max(1, logs["batches"])
        self._append("batch_loss", x, logs["loss"])
        self._append("lr", x, logs["lr"])

    def add_epoch(self, epoch: int, logs: dict) -> None:
        for name in EPOCH_SERIES:
            self._append(name, epoch, logs[name])

    def _append(self, name: str, x: float, y: float) -> None:
        self.series[name].append(x, y)
        self._dirty.add(name)

    # -- drawing -----------------------------------------------------------------------------
    def start(self) -> None:
        """Clear the curves for a new run and start the refresh timer."""
        for series in self.series.values():
            series.clear()
        self._dirty = set(SERIES)
        self.refresh()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        self.refresh()

    def refresh(self) -> None:
        """Push only the series that changed since the last tick."""
        for name in self._dirty:
            self.curves[name].setData(*self.series[name].arrays())
        self._dirty.clear()

    def points(self, name: str) -> int:
        """How many points a curve shows now (tests, and the 'no data yet' hint)."""
        x, _ = self.curves[name].getData()
        return 0 if x is None else len(x)


# kind of candidate -> colour; trained runs are drawn larger than head trials scored on cached features
KIND_COLOURS = {"head": TRAIN, "last-blocks": LR, "ensemble": (148, 103, 189), "assessment": (150, 150, 150)}
TRAINED_SIZE, TRIAL_SIZE, BEST_SIZE = 12, 8, 18


class SearchScatter(QWidget):
    """A recipe search's finalists: accuracy on the validation images (%) with its 95 % interval, against
    seconds since the search started; pruned ones hollow, the best (or the winner, once chosen) a star.
    Screening scores (cross-validation inside the training images) are not drawn: they are measured another
    way and would read as a climb the finalists do not make."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.canvas = pg.PlotWidget()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        plot = self.plot = self.canvas.getPlotItem()
        plot.setTitle("Finalists on validation")       # short: the plot may be narrow beside the curves
        plot.setLabel("bottom", "seconds since the start")
        plot.setLabel("left", "accuracy (%), 95 % interval")
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setMenuEnabled(False)
        self.bars = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), pen=pg.mkPen(120, 120, 120, 160), beam=0)
        self.spots = pg.ScatterPlotItem(hoverable=True, tip=self._tip)
        self.star = pg.ScatterPlotItem()
        plot.addItem(self.bars)
        plot.addItem(self.spots)
        plot.addItem(self.star)

    @staticmethod
    def _tip(x: float, y: float, data) -> str:
        return f"{data}\n{y:.1f} % at {x:.0f} s" if data else f"{y:.1f} % at {x:.0f} s"

    def show_candidates(self, rows: list[dict], best: dict | None) -> None:
        """`rows`: leaderboard entries with `at_s`; finalists with a score are drawn."""
        spots, xs, ys, lows, highs = [], [], [], [], []
        for row in rows:
            if row.get("score") is None or row.get("stage", "final") != "final":
                continue
            colour = KIND_COLOURS.get(row.get("kind"), TRAIN)
            hollow = row.get("status") == "pruned"
            x, y = row["at_s"], 100 * row["score"]
            spots.append({"pos": (x, y), "data": row["name"], "size": TRAINED_SIZE, "symbol": "o",
                          "brush": pg.mkBrush(255, 255, 255, 0) if hollow else pg.mkBrush(*colour, 200),
                          "pen": pg.mkPen(colour, width=1.5)})
            low, high = row.get("interval") or (row["score"], row["score"])
            xs.append(x)
            ys.append(y)
            lows.append(y - 100 * low)
            highs.append(100 * high - y)
        self.spots.setData(spots)
        self.bars.setData(x=np.array(xs, dtype=float), y=np.array(ys, dtype=float),
                          bottom=np.array(lows, dtype=float), top=np.array(highs, dtype=float))
        if best is not None and best.get("score") is not None:
            self.star.setData([best["at_s"]], [100 * best["score"]], symbol="star", size=BEST_SIZE,
                              brush=pg.mkBrush(250, 200, 30), pen=pg.mkPen(120, 90, 0))
        else:
            self.star.setData([], [])

    def count(self) -> int:
        """How many candidates are drawn (tests)."""
        return len(self.spots.data)
