"""The layer context menu: "ToPT > Learn embeddings and predict..." on polygon layers only."""

from __future__ import annotations

from conftest import make_points, make_regions


def test_action_offered_on_polygon_layers_and_opens_the_dialog(qgis_iface, qgis_app, provider,
                                                               tmp_path, monkeypatch):
    from qgis.core import QgsProject, QgsVectorLayer
    from qgis.gui import QgsBrowserGuiModel

    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)

    from topt_qgis.plugin import ToptPlugin

    qgis_iface.addCustomActionForLayerType.reset_mock()
    qgis_iface.addCustomActionForLayer.reset_mock()
    plugin = ToptPlugin(qgis_iface)
    plugin.initGui()
    try:
        action = plugin.action
        args = qgis_iface.addCustomActionForLayerType.call_args[0]
        assert args[0] is action and args[1] == "ToPT" and args[3] is False
        assert action.text() == "Learn embeddings and predict..."
        polygons = QgsVectorLayer(make_regions(tmp_path / "r.gpkg"), "regions", "ogr")
        points = QgsVectorLayer(make_points(tmp_path / "p.gpkg"), "points", "ogr")
        QgsProject.instance().addMapLayers([polygons, points])
        offered = [c[0][1] for c in qgis_iface.addCustomActionForLayer.call_args_list]
        assert polygons in offered and points not in offered

        qgis_iface.setActiveLayer(polygons)
        dialog = plugin.open_dialog_for_active_layer()
        assert dialog is not None
        assert dialog.algorithm().id() == "topt:learn_and_predict"
        wrapper = dialog.mainWidget().wrappers["REGIONS"]
        assert wrapper.parameterValue() == polygons.id()
        dialog.close()
    finally:
        plugin.unload()
        QgsProject.instance().removeAllMapLayers()
    qgis_iface.removeCustomActionForLayerType.assert_called_once_with(action)
