"""Fixtures of every scope, each a few tens of milliseconds: the summary shows where the
time of a run goes, summed over every process (xdist workers, forked children)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pytest_blackbox import timed


@pytest.fixture(scope="session")
@timed(name="connect to the warehouse")
def warehouse() -> Iterator[dict[str, int]]:
    time.sleep(0.05)
    yield {"apples": 12, "pears": 4}
    time.sleep(0.01)


@pytest.fixture(scope="package")
def catalog(warehouse: dict[str, int]) -> dict[str, float]:
    time.sleep(0.03)
    return {name: 0.5 for name in warehouse}


@pytest.fixture(scope="module")
def shop(catalog: dict[str, float]) -> dict[str, float]:
    time.sleep(0.02)
    return dict(catalog)


@pytest.fixture(scope="class")
def till() -> list[float]:
    time.sleep(0.02)
    return []


@pytest.fixture
def cart(shop: dict[str, float]) -> list[str]:
    time.sleep(0.01)
    return []
