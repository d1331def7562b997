"""A small suite that shows pytest-blackbox at work: run it with ``make demo``."""
