"""Screenshot of the main algorithm's dialog in desktop QGIS (run by take_screenshots.sh).

Run inside QGIS: `qgis --code take_learn_and_predict.py` with TOPT_SCREENSHOT=<png path> and
TOPT_DEMO=<a copy of resources/demo/manhattan.gpkg>. Loads the demo layers, opens
"Learn region embeddings and predict" with them filled in, grabs the dialog, quits QGIS.
"""

import os

from qgis.core import QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

DEMO = os.environ["TOPT_DEMO"]
TARGET = os.environ["TOPT_SCREENSHOT"]
state = {}


def load_layers():
    layers = {}
    for name in ("regions", "pois", "landuse", "trips"):
        layer = QgsVectorLayer(f"{DEMO}|layername={name}", name, "ogr")
        layers[name] = layer
    QgsProject.instance().addMapLayers(list(layers.values()))
    iface.setActiveLayer(layers["regions"])
    iface.mapCanvas().setExtent(layers["regions"].extent())
    return layers


def open_dialog():
    import processing

    layers = load_layers()
    dialog = processing.createAlgorithmDialog("topt:learn_and_predict", {
        "REGIONS": layers["regions"].id(), "ID_FIELD": "region_id",
        "POINTS": layers["pois"].id(), "POINT_CATEGORY_FIELD": "category",
        "LANDUSE": layers["landuse"].id(), "LANDUSE_CLASS_FIELD": "class",
        "TRIPS": layers["trips"].id(), "TRIP_ORIGIN_FIELD": "origin",
        "TRIP_DESTINATION_FIELD": "destination", "TRIP_WEIGHT_FIELD": "trips",
        "TARGETS": ["crime", "check_in", "service_call"],
        "TASK_DESCRIPTIONS": "crime: crimes reported per region in a year\n"
                             "check_in: social-media check-ins per region",
    })
    dialog.resize(880, 1040)
    dialog.show()
    state["dialog"] = dialog
    QTimer.singleShot(2500, grab)


def grab():
    dialog = state["dialog"]
    dialog.raise_()
    dialog.activateWindow()
    dialog.grab().save(TARGET, "PNG")
    dialog.close()
    QgsProject.instance().clear()  # nothing to save: QGIS quits without asking
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(500, iface.actionExit().trigger)


QTimer.singleShot(4000, open_dialog)
