"""Validation errors of desired containers and desired states.

The texts are Kanto's (spec §2.2, §2.3; CM's `containers_validation.go`), because they travel
in the IDENTIFICATION_FAILED feedback and are compared byte for byte. Texts for checks that
Kanto does not have (strict mode, duplicate ids) are ours; `docs/models.md` lists them.
"""

from __future__ import annotations


class SpecError(ValueError):
    """One container's config is invalid. `str()` is Kanto's validation text.

    `component` is the component id (the container name); `key` and `value` name the config
    entry at fault when there is one. `value` is never an env value (secrets).
    """

    def __init__(
        self, message: str, *, component: str = "", key: str = "", value: str = ""
    ) -> None:
        super().__init__(message)
        self.component = component
        self.key = key
        self.value = value


class DesiredStateError(ValueError):
    """A desired state cannot be used. `str()` is the whole IDENTIFICATION_FAILED message."""
