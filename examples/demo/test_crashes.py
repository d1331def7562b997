"""Two tests that kill their process: what they recorded first survives them, and the
report of each names the test, the signal and the phase that died."""

from __future__ import annotations

import ctypes
import os

import pytest_blackbox


def test_reads_a_null_pointer(cart: list[str], record_property) -> None:
    record_property("reading", "a C string at address 0")
    pytest_blackbox.append("steps", "about to call ctypes.string_at(0)")
    ctypes.string_at(0)  # SIGSEGV


def test_gives_up(shop: dict[str, float], blackbox) -> None:
    blackbox.record("stock", sorted(shop))
    blackbox.record("reason", "inventory does not add up")
    os.abort()  # SIGABRT
