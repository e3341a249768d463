"""Typos in keys: the closest known key, for warnings that say what was probably meant.

Unknown keys are ignored, as Kanto ignores them (spec §2.2, §7); a warning names the key
and, when one is close enough (difflib's ratio >= 0.6), the known key it was likely meant
to be: `stop_timeot` → did you mean `stop_timeout`?
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["closest", "unknown_key_message", "unknown_keys"]


def closest(key: str, known: Collection[str]) -> str | None:
    """The known key most like `key`, if one is close enough."""
    import difflib  # here: an idle agent meets no unknown key

    matches = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if matches:
        return matches[0]
    lowered = {k.lower(): k for k in known}
    return lowered.get(key.lower())


def unknown_key_message(where: str, key: str, known: Collection[str]) -> str:
    """`update_agent: unknown key "stop_timeot" ignored (did you mean "stop_timeout"?)`."""
    hint = closest(key, known)
    suffix = f' (did you mean "{hint}"?)' if hint else ""
    return f'{where}: unknown key "{key}" ignored{suffix}'


def unknown_keys(data: Mapping[str, Any], known: Collection[str], where: str) -> list[str]:
    """A message for each key of `data` that is not in `known`, in the data's order."""
    return [unknown_key_message(where, key, known) for key in data if key not in known]
