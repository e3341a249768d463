"""Wire model edge cases that `make mutation` found untested (docs/testing.md).

Equivalent mutant left alive in `cua.api.models`: `model_validate` with `strict=None` (false,
as False).
"""

from __future__ import annotations

import pytest

from cua.api.models import Action

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("progress", [-1, 256])
def test_an_action_made_with_a_progress_out_of_range_says_the_range(progress: int) -> None:
    with pytest.raises(ValueError, match=r"^progress: must be 0 to 255$"):
        Action(progress=progress)
