"""``pytest --long`` also runs the tests marked ``long`` (minutes each); the default run
stays within the CI budget. ``pytest --suite-json PATH`` writes the run's counts and wall
time as JSON (``docs/test_suite.json`` is this file; ``nibble bench report`` renders it)."""

import json
import os
import time

import pytest

_START = pytest.StashKey[float]()


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", help="also run the long tests")
    parser.addoption("--suite-json", metavar="PATH", default=None,
                     help="write the run's test counts and wall time as JSON")


def pytest_configure(config):
    config.addinivalue_line("markers", "long: runs for minutes; enabled by --long")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long test: run with pytest --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


def pytest_sessionstart(session):
    session.config.stash[_START] = time.monotonic()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """With ``--suite-json``, on the controller only (xdist's workers have ``workerinput``)."""
    path = config.getoption("--suite-json")
    if not path or hasattr(config, "workerinput"):
        return
    from nibble.results import measurement_stamp

    # one report per test: its call phase, or the phase that failed or skipped it
    counts = {key: len([r for r in terminalreporter.stats.get(key, [])
                        if getattr(r, "when", "call") in ("call", "setup", "teardown")])
              for key in ("passed", "failed", "skipped", "error")}
    suite = {**counts, "exit_status": int(exitstatus), "long": config.getoption("--long"),
             "workers": getattr(config.option, "numprocesses", None) or 0,
             "wall_seconds": round(time.monotonic() - config.stash[_START], 1),
             "cpus": os.cpu_count()}
    with open(path, "w") as f:
        json.dump({"suite": suite, "measured": measurement_stamp()}, f, indent=2)
        f.write("\n")
    terminalreporter.write_line(f"wrote {path}")
