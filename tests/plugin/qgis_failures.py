"""A pytest plugin for tests on a real QGIS: a failing test reports its failure, not a crash.

Loaded by this folder's conftest (and by name, `-p qgis_failures`, in the test that checks it).
"""

from __future__ import annotations

import traceback

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's traceback (kept by pytest as sys.last_traceback) holds the test's frames,
    and with them its QGIS layers. Left to the interpreter's exit, they are freed after QGIS is
    gone and the layers' destructors crash the process (exit 139), which hides the failure's own
    exit code and summary. Once the report is written, the frames' locals are released."""
    yield
    if call.excinfo is not None:
        tb = call.excinfo.tb
        traceback.clear_frames(tb)
        while tb is not None:  # clear() leaves the locals dict pytest's formatting made
            tb.tb_frame.f_locals.clear()
            tb = tb.tb_next
