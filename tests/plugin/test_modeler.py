"""A graphical-modeler model built in code: train_model feeding predict_with_model."""

from __future__ import annotations

import pytest
from conftest import make_regions


def build_model():
    from qgis.core import (
        QgsProcessing,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterFeatureSource,
    )

    static = QgsProcessingModelChildParameterSource.fromStaticValue
    model = QgsProcessingModelAlgorithm("train_and_predict", "ToPT tests")
    model.addModelParameter(QgsProcessingParameterFeatureSource(
        "regions", "Regions", [QgsProcessing.TypeVectorPolygon]),
        QgsProcessingModelParameter("regions"))
    model.addModelParameter(QgsProcessingParameterFeatureSource(
        "new_regions", "Regions to predict", [QgsProcessing.TypeVectorPolygon]),
        QgsProcessingModelParameter("new_regions"))

    train = QgsProcessingModelChildAlgorithm("topt:train_model")
    train.setChildId("train")
    train.addParameterSources("REGIONS", [
        QgsProcessingModelChildParameterSource.fromModelParameter("regions")])
    train.addParameterSources("ID_FIELD", [static("region_id")])
    train.addParameterSources("TARGETS", [static(["crime"])])
    train.addParameterSources("EMBEDDING_SIZE", [static(2)])
    model.addChildAlgorithm(train)

    predict = QgsProcessingModelChildAlgorithm("topt:predict_with_model")
    predict.setChildId("predict")
    predict.addParameterSources("MODEL", [
        QgsProcessingModelChildParameterSource.fromChildOutput("train", "MODEL_OUTPUT")])
    predict.addParameterSources("REGIONS", [
        QgsProcessingModelChildParameterSource.fromModelParameter("new_regions")])
    predict.addParameterSources("ID_FIELD", [static("region_id")])
    output = QgsProcessingModelOutput("predicted", "Predicted regions")
    output.setChildId("predict")
    output.setChildOutputName("OUTPUT")
    predict.setModelOutputs({"predicted": output})
    model.addChildAlgorithm(predict)
    model.updateDestinationParameters()
    return model


def test_model_chains_train_and_predict(fake_engine, tmp_path):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsVectorLayer

    model = build_model()
    ok, message = model.checkChildParameters() if hasattr(model, "checkChildParameters") \
        else (True, "")
    assert ok, message
    assert [d.name() for d in model.destinationParameterDefinitions()] == ["predict:predicted"]
    regions = make_regions(tmp_path / "train.gpkg")
    new_regions = make_regions(tmp_path / "new.gpkg", count=4)
    result = processing.run(model, {"regions": regions, "new_regions": new_regions,
                                    "predict:predicted": str(tmp_path / "predicted.gpkg")},
                            context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    layer = QgsVectorLayer(result["predict:predicted"], "p", "ogr")
    values = {f["region_id"]: f["pred_crime"] for f in layer.getFeatures()}
    assert values == {100 + i: pytest.approx(2 * (100 + i) + 0.5) for i in range(4)}
