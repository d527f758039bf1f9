"""The public surface is explicit: pairloss.__all__ is exactly the README's API list."""

from __future__ import annotations

import re
from pathlib import Path

import pairloss

README = Path(__file__).resolve().parents[1] / "README.md"


def test_all_matches_the_readme_api_section() -> None:
    section = README.read_text().split("<!-- api -->")[1].split("<!-- /api -->")[0]
    documented = sorted(re.findall(r"`([a-z_]+)`", section))
    assert documented == sorted(n for n in pairloss.__all__ if n != "__version__")


def test_every_public_name_exists_and_is_documented() -> None:
    for name in pairloss.__all__:
        obj = getattr(pairloss, name)
        if callable(obj):
            assert obj.__doc__, f"pairloss.{name} has no docstring"
