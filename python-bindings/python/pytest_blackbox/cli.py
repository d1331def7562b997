"""The ``blackbox`` console script: the Rust CLI of blackbox-core, through the extension."""

from __future__ import annotations

import sys

from . import _native


def main(argv: list[str] | None = None) -> int:
    """Run ``blackbox`` with ``argv`` (default: the command line); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    sys.stdout.flush()
    code = _native.cli_main(args, sys.stdout.isatty())
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
