"""ToPT for QGIS: task-oriented urban region embeddings and indicator prediction.

QGIS calls classFactory; everything heavy (the engine) runs in a separate process.
"""


def classFactory(iface):  # noqa: N802 (QGIS API)
    from .plugin import ToptPlugin

    return ToptPlugin(iface)
