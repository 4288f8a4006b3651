"""The plugin object QGIS loads: the Processing provider and the layer context-menu action."""

from __future__ import annotations

from qgis.core import (
    QgsApplication,
    QgsMapLayer,
    QgsMapLayerType,
    QgsProject,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .provider import ICON, ToptProvider

MENU = "ToPT"
MAIN_ALGORITHM = "topt:learn_and_predict"


def is_polygon_layer(layer: QgsMapLayer) -> bool:
    return isinstance(layer, QgsVectorLayer) and \
        layer.geometryType() == QgsWkbTypes.PolygonGeometry


class ToptPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: ToptProvider | None = None
        self.action: QAction | None = None
        self.dialogs: list = []  # open dialogs are kept alive here

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API)
        if self.provider is None:
            provider = ToptProvider()
            # addProvider refuses a second "topt" (and then owns and deletes the object).
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider

    def initGui(self) -> None:  # noqa: N802 (QGIS API)
        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), "Learn embeddings and predict...",
                              self.iface.mainWindow())
        self.action.setObjectName("toptLearnAndPredict")
        self.action.triggered.connect(self.open_dialog_for_active_layer)
        self.iface.addCustomActionForLayerType(self.action, MENU, QgsMapLayerType.VectorLayer,
                                               False)
        for layer in QgsProject.instance().mapLayers().values():
            self._offer(layer)
        QgsProject.instance().layersAdded.connect(self._on_layers_added)

    def _on_layers_added(self, layers) -> None:
        for layer in layers:
            self._offer(layer)

    def _offer(self, layer: QgsMapLayer) -> None:
        if self.action is not None and is_polygon_layer(layer):
            self.iface.addCustomActionForLayer(self.action, layer)

    def open_dialog_for_active_layer(self):
        """Opens the main algorithm's dialog with the layer that was right-clicked filled in."""
        layer = self.iface.activeLayer()
        return self.open_dialog(layer if is_polygon_layer(layer) else None)

    def open_dialog(self, layer: QgsVectorLayer | None):
        import processing

        parameters = {"REGIONS": layer.id()} if layer is not None else {}
        dialog = processing.createAlgorithmDialog(MAIN_ALGORITHM, parameters)
        if dialog is None:
            return None
        self.dialogs = [d for d in self.dialogs if d.isVisible()] + [dialog]
        dialog.show()
        return dialog

    def unload(self) -> None:
        if self.action is not None:
            self.iface.removeCustomActionForLayerType(self.action)
            try:
                QgsProject.instance().layersAdded.disconnect(self._on_layers_added)
            except TypeError:
                pass
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        for dialog in self.dialogs:
            dialog.close()
        self.dialogs = []
