"""A whole QGIS session in which the region layer is removed from the project while
`learn_and_predict` runs (fake engine), then QGIS is used again and shut down. Run in its own
process by `test_algorithms.py::test_a_region_layer_removed_during_the_run`, because what is at
stake is also how the process ends: a layer left alive in the run's traceback used to crash it at
shutdown (exit 139).

    QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python tests/plugin/removed_layer_run.py FOLDER [keep]

Prints the run's message, then `QGIS closed`; with `keep` the layer stays in the project.
"""

import hashlib
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
folder = Path(sys.argv[1])
source = make_regions(folder / "mine.gpkg")
file = Path(source.split("|")[0])
print("file before:", hashlib.sha256(file.read_bytes()).hexdigest())
layer = QgsVectorLayer(source, "mine", "ogr")
QgsProject.instance().addMapLayer(layer)
layer_id = layer.id()
del layer


class RemovesTheLayer(QgsProcessingFeedback):
    """Removes the region layer from the project at the engine's first progress report; prints
    the errors the run reports."""

    def reportError(self, error, fatalError=False):  # noqa: N802,N803 (QGIS API)
        print("reported:", error)
        super().reportError(error, fatalError)

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
again = QgsVectorLayer(source, "again", "ogr")  # QGIS goes on: the file opens and reads
print("features after the run:", again.featureCount())
del again
print("file after:", hashlib.sha256(file.read_bytes()).hexdigest())
app.exitQgis()
print("QGIS closed", flush=True)
