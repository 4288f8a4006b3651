"""A job's `srel` object sets SREL's fields (what `--job FILE.json` users write)."""

import pytest

from engine.errors import InputError
from engine.pipeline import srel_config

OPTS = {"embedding_size": 32, "epochs": 5}


def test_a_job_sets_srel_fields_and_the_command_line_its_size_and_epochs():
    config = srel_config({"srel": {"mobility_weighting": "trips", "heads": 2}}, OPTS)
    assert (config.mobility_weighting, config.heads) == ("trips", 2)
    assert (config.embedding_size, config.epochs) == (32, 5)
    assert srel_config({}, OPTS).mobility_weighting == "regions"  # the default


def test_unknown_or_bad_srel_fields_are_input_errors():
    with pytest.raises(InputError, match="unknown SREL option"):
        srel_config({"srel": {"mobility_weight": "trips"}}, OPTS)
    with pytest.raises(InputError, match="mobility weighting"):
        srel_config({"srel": {"mobility_weighting": "counts"}}, OPTS)
