"""Passing tests and one failing test, recording what they saw."""

from __future__ import annotations

import time

import pytest

import pytest_blackbox
from pytest_blackbox import timed


@timed
def checkout(cart: list[str], shop: dict[str, float]) -> float:
    time.sleep(0.02)
    return sum(shop[item] for item in cart)


def test_empty_cart_costs_nothing(cart: list[str], shop: dict[str, float]) -> None:
    assert checkout(cart, shop) == 0


def test_two_apples(cart: list[str], shop: dict[str, float], record_property) -> None:
    cart += ["apples", "apples"]
    total = checkout(cart, shop)
    record_property("total", total)  # the stock fixture, made crash-safe
    assert total == 1.0


@pytest.mark.parametrize("item", ["apples", "pears"])
def test_each_item_has_a_price(item: str, shop: dict[str, float]) -> None:
    pytest_blackbox.record("price", shop[item])
    assert shop[item] > 0


class TestTill:
    def test_till_starts_empty(self, till: list[float], blackbox) -> None:
        blackbox.record("till", list(till))
        assert till == []

    def test_till_adds_up(self, till: list[float], cart: list[str], shop) -> None:
        for item in ["apples", "pears", "pears"]:
            till.append(shop[item])
            pytest_blackbox.append("receipt", {"item": item, "price": shop[item]})
        assert sum(till) == 1.5


def test_discount_is_applied(cart: list[str], shop: dict[str, float]) -> None:
    cart += ["pears"] * 10
    total = checkout(cart, shop)
    pytest_blackbox.record("total", total)
    pytest_blackbox.record("expected", 4.5)
    assert total == 4.5, "the 10% bulk discount is not implemented yet"
