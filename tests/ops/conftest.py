"""Fixtures of the operator tests: which walk the pairwise logistic family's CPU kernels take."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pairloss.ops import pair_loops


@pytest.fixture(params=["direct", "planned"])
def pair_walk(request: pytest.FixtureRequest) -> Iterator[str]:
    """Both walks of the pair loops: small calls' one-pass direct walk (``DIRECT_PAIRS``) and the planned,
    vectorised walk that larger calls take, forced here on inputs of any size so that small test inputs
    cover it too."""
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "planned":
            mp.setattr(pair_loops, "DIRECT_PAIRS", -1)
        yield request.param


@pytest.fixture
def planned_walk() -> Iterator[None]:
    """The planned walk whatever the input's size (tests of its chunks, rows, threads and span limit)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pair_loops, "DIRECT_PAIRS", -1)
        yield
