"""``pytest --long`` also runs the tests marked ``long`` (minutes each); the default run
stays within the CI budget."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", help="also run the long tests")


def pytest_configure(config):
    config.addinivalue_line("markers", "long: runs for minutes; enabled by --long")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long test: run with pytest --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
