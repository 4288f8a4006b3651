"""docs/screenshots/extrapolations_map.png: the output layer of `make demo` in the style the plugin
gives it (graduated on the first prediction; extrapolated regions outlined in dashed red), here
on check-ins. Run after `make demo`, with QGIS's Python:

    QT_QPA_PLATFORM=offscreen PYTHONPATH=. .venv-qgis/bin/python \\
        docs/screenshots/take_extrapolations_map.py [out/demo/manhattan_topt.gpkg]
"""

import shutil
import sys
import tempfile
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsMapRendererCustomPainterJob,
    QgsMapSettings,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage, QPainter

ROOT = Path(__file__).resolve().parents[2]
SIZE = QSize(700, 900)


def main() -> int:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "out/demo/manhattan_topt.gpkg")
    target = ROOT / "docs/screenshots/extrapolations_map.png"
    app = QgsApplication([], False)
    app.initQgis()
    from topt_qgis import writeback

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / source.name  # the demo's output stays as `make demo` left it
        shutil.copy2(source, copy)
        layer = QgsVectorLayer(str(copy), "demo", "ogr")
        if not writeback.apply_graduated_style(layer, "pred_check_in",
                                               flag_field="ext_check_in"):
            print(f"{source} has no pred_check_in field: run make demo first")
            return 1
        settings = QgsMapSettings()
        settings.setLayers([layer])
        settings.setExtent(layer.extent())
        settings.setOutputSize(SIZE)
        image = QImage(SIZE, QImage.Format_ARGB32)
        image.fill(QColor("white"))
        painter = QPainter(image)
        job = QgsMapRendererCustomPainterJob(settings, painter)
        job.start()
        job.waitForFinished()
        painter.end()
        del layer
    image.save(str(target))
    print(f"wrote {target}")
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
