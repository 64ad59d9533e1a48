"""Docs guarded by tests: every hook and every CLI command has its entry."""

from __future__ import annotations

from pathlib import Path

from clusterkit import hookspecs

DOCS = Path(__file__).parent.parent / "docs"


def test_every_hook_is_documented():
    reference = (DOCS / "hooks.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("clusterkit_")]
    assert hooks
    missing = [h for h in hooks if f"## {h}" not in reference]
    assert not missing, f"docs/hooks.md has no heading for {missing}"


def test_every_hook_has_a_docstring():
    for name in dir(hookspecs):
        if name.startswith("clusterkit_"):
            assert (getattr(hookspecs, name).__doc__ or "").strip(), name
