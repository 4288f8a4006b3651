"""Reproduces the open fault of docs/faults.md: the region layer removed from the project while
`learn_and_predict` runs. The algorithm reports it clearly, but the process then segfaults at
shutdown (exit code 139); with `keep` as argument the layer is not removed and it exits 0.

    QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python tests/plugin/repro_removed_layer.py [keep]

Not collected by pytest (no test_ prefix): it ends its own process.
"""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.update(TOPT_ENGINE_PYTHON="/usr/bin/python3", FAKE_ENGINE_MODE="ok",
                  TOPT_ENGINE_SOURCE=str(ROOT / "tests" / "plugin" / "fake_engine"),
                  FAKE_ENGINE_RECORD=str(Path(tempfile.mkdtemp()) / "record.json"))
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "plugin"), "/usr/share/qgis/python/plugins"]

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsVectorLayer,
)

app = QgsApplication([], False)
app.initQgis()
import processing  # noqa: E402
from conftest import make_regions  # noqa: E402
from processing.core.Processing import Processing  # noqa: E402

from topt_qgis.provider import ToptProvider  # noqa: E402

Processing.initialize()
provider = ToptProvider()
QgsApplication.processingRegistry().addProvider(provider)
folder = Path(tempfile.mkdtemp())
layer = QgsVectorLayer(make_regions(folder / "mine.gpkg"), "mine", "ogr")
QgsProject.instance().addMapLayer(layer)
layer_id = layer.id()
del layer


class RemovesTheLayer(QgsProcessingFeedback):
    def setProgress(self, progress):  # noqa: N802 (QGIS API)
        if "keep" not in sys.argv and QgsProject.instance().mapLayer(layer_id) is not None:
            QgsProject.instance().removeMapLayer(layer_id)
        super().setProgress(progress)


context = QgsProcessingContext()
context.setProject(QgsProject.instance())
try:
    processing.run("topt:learn_and_predict", {
        "REGIONS": layer_id, "ID_FIELD": "region_id", "TARGETS": ["crime"], "EMBEDDING_SIZE": 3,
        "WRITE_BACK": True, "OUTPUT": str(folder / "new.gpkg")},
        context=context, feedback=RemovesTheLayer())
    print("the run finished")
except Exception as error:  # noqa: BLE001 (the message is what this shows)
    print("the run stopped:", error)
app.exitQgis()
print("QGIS closed; a crash after this line is the open fault", flush=True)
