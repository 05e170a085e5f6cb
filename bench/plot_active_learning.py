"""docs/active_learning.png: test accuracy against labels used, the app's choice (`suggest`) against random
choice, from what bench/active_learning.py measured with 10 seeds (`--seeds 10 --strategies random,suggest`,
bench/out/active-learning-10-seeds.json; mean of the seeds, bars from the lowest to the highest seed). Drawn
with pyqtgraph, which the app has anyway.

    QT_QPA_PLATFORM=offscreen python bench/plot_active_learning.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402

OUT = ROOT / "bench" / "out"
TITLES = {"fm-sessions": "fm-sessions photos (other sessions)", "elpv4": "ELPV solar cells",
          "fortunes8": "fortunes texts"}
COLOURS = {"random": (150, 150, 150), "suggest": (31, 119, 180)}
NAMES = {"random": "random", "suggest": "the app's choice"}


def curves() -> dict[str, dict]:
    """set -> {strategy: (labels, per-seed accuracies)}."""
    data = json.loads((OUT / "active-learning-10-seeds.json").read_text())
    args = data["args"]
    found: dict[str, dict] = {}
    for set_name, result in data["sets"].items():
        labels = result["start_labels"] + args["batch"] * np.arange(args["rounds"] + 1)
        found[set_name] = {strategy: (labels, np.array(result[strategy]["per_seed"])) for strategy in ("random", "suggest")}
    return found


def main() -> int:
    import pyqtgraph as pg
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication([])
    pg.setConfigOptions(background="w", foreground="k", antialias=True)
    layout = pg.GraphicsLayoutWidget()
    layout.resize(1200, 400)
    for column, (set_name, strategies) in enumerate(sorted(curves().items(), key=lambda kv: list(TITLES).index(kv[0]))):
        plot = layout.addPlot(row=0, col=column, title=TITLES[set_name])
        plot.setLabel("bottom", "labels used")
        plot.setLabel("left", "test accuracy", units="%") if column == 0 else None
        plot.showGrid(x=True, y=True, alpha=0.3)
        legend = plot.addLegend(offset=(10, -10)) if column == 0 else None
        for strategy, (labels, per_seed) in strategies.items():
            mean, low, high = 100 * per_seed.mean(0), 100 * per_seed.min(0), 100 * per_seed.max(0)
            pen = pg.mkPen(COLOURS[strategy], width=3)
            plot.addItem(pg.ErrorBarItem(x=labels, y=mean, top=high - mean, bottom=mean - low, beam=2,
                                         pen=pg.mkPen(COLOURS[strategy], width=1)))
            item = plot.plot(labels, mean, pen=pen, symbol="o", symbolBrush=COLOURS[strategy], symbolSize=7)
            if legend is not None:
                legend.addItem(item, NAMES[strategy])
        layout.ci.layout.setColumnStretchFactor(column, 1)
    layout.show()
    for _ in range(5):
        app.processEvents()
    target = ROOT / "docs" / "active_learning.png"
    layout.grab().save(str(target))
    print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
