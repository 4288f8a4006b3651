"""The job file's parsers (topt_qgis/job.py) on their own, without a Processing run."""

from __future__ import annotations

import pytest


@pytest.fixture
def region_fields(qgis_app):
    """Fields of a region layer: an id, a name (text), two targets and two weights."""
    from qgis.core import QgsField, QgsFields
    from qgis.PyQt.QtCore import QVariant

    fields = QgsFields()
    for name, kind in (("region_id", QVariant.Int), ("name", QVariant.String),
                       ("crime_rate", QVariant.Double), ("infant_deaths", QVariant.Double),
                       ("population", QVariant.LongLong), ("births", QVariant.Double)):
        fields.append(QgsField(name, kind))
    return fields


TARGETS = ["crime_rate", "infant_deaths"]


def test_task_descriptions_accept_colon_and_equals_and_skip_blank_lines():
    from topt_qgis.job import parse_task_descriptions

    text = "crime_rate: crimes per 1000 people\n\n  infant_deaths = deaths under one: per birth\n"
    assert parse_task_descriptions(text, TARGETS) == {
        "crime_rate": "crimes per 1000 people", "infant_deaths": "deaths under one: per birth"}


def test_target_weights_accept_colon_and_equals_and_skip_blank_lines(region_fields):
    from topt_qgis.job import parse_target_weights

    text = "\ncrime_rate: population\n   \n infant_deaths = births \n"
    assert parse_target_weights(text, TARGETS, region_fields) == {
        "crime_rate": "population", "infant_deaths": "births"}


@pytest.mark.parametrize("text", ["", None, "\n  \n"])
def test_no_target_weights_is_an_empty_dict(region_fields, text):
    from topt_qgis.job import parse_target_weights

    assert parse_target_weights(text, TARGETS, region_fields) == {}


@pytest.mark.parametrize(("text", "said"), [
    ("crime_rate population", ["line 1", "'target: weight field'", "crime_rate population"]),
    ("crime_rate: population\ninfant_deaths:", ["line 2", "'target: weight field'"]),
    (": population", ["line 1", "'target: weight field'"]),
    ("\nincome: population", ["line 2", "'income'", "not one of the chosen target fields",
                              "crime_rate, infant_deaths"]),
    ("crime_rate: population\ncrime_rate: births", ["line 2", "'crime_rate'", "already",
                                                    "'population'"]),
    ("crime_rate: pop", ["line 1", "'pop'", "not a field of the region layer", "population",
                         "births"]),
    ("crime_rate: name", ["line 1", "'name'", "not numeric"]),
    ("crime_rate: crime_rate", ["line 1", "'crime_rate'", "its own weight"]),
], ids=["no-separator", "no-field", "no-target", "not-a-target", "twice", "missing-field",
        "text-field", "the-target-itself"])
def test_a_bad_target_weight_line_names_the_line_and_the_field(region_fields, text, said):
    from qgis.core import QgsProcessingException

    from topt_qgis.job import parse_target_weights

    with pytest.raises(QgsProcessingException) as raised:
        parse_target_weights(text, TARGETS, region_fields)
    message = str(raised.value)
    assert message.startswith("target weights, line ")
    for part in said:
        assert part in message, (part, message)


def test_a_target_weight_without_chosen_targets_says_none_are_chosen(region_fields):
    from qgis.core import QgsProcessingException

    from topt_qgis.job import parse_target_weights

    with pytest.raises(QgsProcessingException, match="'crime_rate' is not one of the chosen "
                                                     r"target fields \(none chosen\)"):
        parse_target_weights("crime_rate: population", [], region_fields)
