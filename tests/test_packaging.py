"""Packaging: ``pip install ./python-bindings`` gives a complete package.

The slow test installs into a fresh virtualenv, as a user would, and checks what landed:
the version, ``py.typed`` and ``_native.pyi`` beside the package, the ``blackbox`` console
script and the ``pytest11`` entry point (pytest loads the plugin from it). It builds with
the checkout's cargo target directory, so compiled crates are reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_blackbox
from pytest_blackbox import _native

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_SRC = ROOT / "python-bindings" / "python" / "pytest_blackbox"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the dev venv is 3.11
    tomllib = None


def workspace_version() -> str:
    """``[workspace.package] version`` of the root Cargo.toml."""
    text = (ROOT / "Cargo.toml").read_text()
    if tomllib is not None:
        return tomllib.loads(text)["workspace"]["package"]["version"]
    section = text.split("[workspace.package]", 1)[1]
    line = next(x for x in section.splitlines() if x.strip().startswith("version"))
    return line.split("=", 1)[1].strip().strip('"')


def test_version_is_the_workspace_version() -> None:
    assert pytest_blackbox.__version__ == _native.__version__ == workspace_version()


def test_the_read_api_is_imported_on_first_use(pytester: pytest.Pytester) -> None:
    """A recording session that reads no run does not import pytest_blackbox.store (its
    dataclasses are compiled at import); the names are there all the same."""
    pytester.makepyfile(
        test_lazy="""
        import sys

        def test_recording_imports_no_read_api(record_property):
            record_property("a", 1)
            assert "pytest_blackbox.store" not in sys.modules

        def test_the_names_import_on_first_use():
            import pytest_blackbox
            from pytest_blackbox import Run, Store

            assert "Store" in dir(pytest_blackbox)
            assert pytest_blackbox.Summary.__module__ == "pytest_blackbox.store"
            assert Store.__name__ == "Store" and Run.__name__ == "Run"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        pytest_blackbox.Nope  # noqa: B018


def test_typing_files_are_in_the_package_source() -> None:
    assert (PACKAGE_SRC / "py.typed").is_file()
    assert (PACKAGE_SRC / "_native.pyi").is_file()


INSPECT = r"""
import importlib.metadata as md
import json
import os
import sys

import pytest_blackbox
from pytest_blackbox import _native

pkg = os.path.dirname(pytest_blackbox.__file__)
dist = md.distribution("pytest-blackbox")
print(json.dumps({
    "version": pytest_blackbox.__version__,
    "dist_version": dist.version,
    "package_dir": pkg,
    "native": _native.__file__,
    "files": sorted(os.listdir(pkg)),
    "has_cli_main": hasattr(_native, "cli_main"),
    "prefix": sys.prefix,
    "entry_points": sorted(
        (ep.group, ep.name, ep.value)
        for ep in dist.entry_points
    ),
}))
"""


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    env["CARGO_TARGET_DIR"] = str(ROOT / "target")
    env["PIP_CACHE_DIR"] = str(ROOT / ".cache" / "pip")
    env.setdefault("CARGO_BUILD_JOBS", "2")
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", str(ROOT / "python-bindings")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Import from outside the checkout, so nothing but the installed package is found.
    out = subprocess.run(
        [str(python), "-c", INSPECT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    info = json.loads(out)
    assert info["version"] == info["dist_version"] == workspace_version()
    site = Path(info["package_dir"])
    assert site.is_relative_to(venv), "an installed copy, not the checkout"
    assert Path(info["native"]).parent == site
    assert {"py.typed", "_native.pyi", "__init__.py", "plugin.py"} <= set(info["files"])
    assert [f for f in info["files"] if f.startswith("_native") and f.endswith(".so")], info
    assert ("console_scripts", "blackbox", "pytest_blackbox.cli:main") in [
        tuple(e) for e in info["entry_points"]
    ]
    assert ("pytest11", "blackbox", "pytest_blackbox.plugin") in [
        tuple(e) for e in info["entry_points"]
    ]

    script = venv / "bin" / "blackbox"
    assert script.is_file() and os.access(script, os.X_OK)
    if info["has_cli_main"]:
        proc = subprocess.run(
            [str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    # pytest finds the plugin through the entry point, and it records a run.
    (tmp_path / "test_smoke.py").write_text(
        "import pytest_blackbox\n\ndef test_smoke():\n    pytest_blackbox.record('k', {1})\n"
    )
    proc = subprocess.run(
        [str(python), "-m", "pytest", "-p", "no:cacheprovider", "test_smoke.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "blackbox: recording run" in proc.stdout
    assert "BlackboxWarning" in proc.stdout  # the set, stored as a list
    run = pytest_blackbox.Store(tmp_path / ".blackbox").latest()
    assert run.properties("test_smoke.py::test_smoke") == {"k": [1]}


def test_the_demo_runs_and_shows_its_crashes(tmp_path: Path) -> None:
    """``make demo``: examples/demo/run.sh, writing into a temporary directory here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "BLACKBOX_"))}
    env["DEMO_OUT"] = str(tmp_path)
    proc = subprocess.run(
        ["bash", str(ROOT / "examples" / "demo" / "run.sh"), sys.executable],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "INTERNALERROR" not in out + proc.stderr
    assert out.count("3 failed, 6 passed") == 2  # -n 2, then --forked

    store = pytest_blackbox.Store(tmp_path / "store")
    assert len(store.runs()) == 2
    crashed = {
        "test_crashes.py::test_reads_a_null_pointer": ("SIGSEGV", {"reading", "steps"}),
        "test_crashes.py::test_gives_up": ("SIGABRT", {"stock", "reason"}),
    }
    for run_id in store.runs():
        run = store.run(run_id)
        assert {c.nodeid: c.signal_name for c in run.crashes} == {
            n: sig for n, (sig, _) in crashed.items()
        }
        for nodeid, (_, keys) in crashed.items():
            assert set(run.properties(nodeid)) == keys
        assert {t.outcome for t in run.tests} == {"passed", "failed", "crashed"}
        assert {f.scope for f in run.fixtures} >= {
            "session",
            "package",
            "module",
            "class",
            "function",
        }
        assert "connect to the warehouse" in {t.name for t in run.timed}

    for xml in ("junit-xdist.xml", "junit-forked.xml"):
        assert str(tmp_path / xml) in out
        text = (tmp_path / xml).read_text()
        assert '<property name="reason" value="inventory does not add up"' in text
    assert "<property name='reading' value='a C string at address 0'/>" in out


def test_rust_imports_nothing_of_the_package() -> None:
    """The binding is handed what it needs (the error classes, the runtime's sessions, the
    TestInfo class): no module of python-bindings/src imports ``pytest_blackbox``, an
    import cycle that no import line of the package would show (issue 12)."""
    import re

    src = ROOT / "python-bindings" / "src"
    pattern = re.compile(r"\bimport\s*\([^)]*\"pytest_blackbox", re.S)
    found = [
        f"{path.name}: {m.group(0)!r}"
        for path in sorted(src.glob("*.rs"))
        for m in pattern.finditer(path.read_text())
    ]
    assert found == []
