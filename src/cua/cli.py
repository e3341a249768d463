"""Command line: `cua run | plan | apply | state | validate` (filled in by the agent issue)."""

from __future__ import annotations

import argparse

from cua import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cua", description="Container update agent")
    parser.add_argument("--version", action="version", version=f"cua {__version__}")
    parser.parse_args(argv)
    return 0
