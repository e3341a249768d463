"""Image references: the grammar of the distribution project (`reference/regexp.go`).

`name[:tag][@digest]`, where name is `[domain[:port]/]path-component(/path-component)*`.
Kanto passes an image reference on to its container manager unchecked, and a bad one fails
only when pulled; ours is checked at identification (IDENTIFICATION_FAILED naming the
component): a reference is also a path segment of Engine API calls, so nothing that is not
a reference may reach them.
"""

from __future__ import annotations

import re

__all__ = ["MAX_NAME_LENGTH", "reference_problem"]

MAX_NAME_LENGTH = 255  # distribution's NameTotalLengthMax
_MAX_REFERENCE_LENGTH = 1024  # name + tag (128) + digest; checked before any regex runs

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)


def reference_problem(reference: str) -> str | None:
    """Why `reference` is not an image reference, or None when it is one."""
    if reference == "":
        return "it is empty"
    if len(reference) > _MAX_REFERENCE_LENGTH:
        return f"it is longer than {_MAX_REFERENCE_LENGTH} characters"
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        if _REFERENCE.fullmatch(reference.lower()) is not None:
            return "the repository name must be lowercase"
        return "it does not follow the reference format [host[:port]/]path[:tag][@digest]"
    if len(match.group(1)) > MAX_NAME_LENGTH:
        return f"the repository name is longer than {MAX_NAME_LENGTH} characters"
    return None
