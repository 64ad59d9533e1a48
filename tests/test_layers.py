"""The core's layers (docs/architecture.md, "Who may import whom"), read from every import.

Every ``import`` and ``from ... import`` in clusterkit/, at module level or
inside a function, is checked: a lazy import is a dependency all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import clusterkit

ROOT = Path(clusterkit.__file__).parent

# Each module belongs to the part named by the longest prefix of its name.
PARTS = {
    "clusterkit": "foundation",  # the package: hookimpl
    "clusterkit.hookspecs": "foundation",
    "clusterkit.contracts": "foundation",
    "clusterkit.registry": "foundation",
    "clusterkit.hookcalls": "foundation",
    "clusterkit.eventloop": "foundation",
    "clusterkit.logs": "foundation",
    "clusterkit.definition": "foundation",  # reading tables and values, atomic files: no model
    "clusterkit.config": "model",
    "clusterkit.definition.edits": "model",  # an edit is validated as a whole definition
    "clusterkit.control": "control",
    "clusterkit.membership": "membership",
    "clusterkit.proxy": "proxy",
    "clusterkit.sync": "sync",
    "clusterkit.standby": "standby",
    "clusterkit.standby.epoch": "foundation",  # a number in a file: every replica reads it
    "clusterkit.standby.fence": "foundation",  # stdlib only: receivers run it as a script
    "clusterkit.plugins": "plugin manager",
    "clusterkit.runtime": "runtime",
    "clusterkit.engines": "runtime",
    "clusterkit.cli": "cli",
}

# Besides its own part, what each part may import. The services (membership, proxy, sync)
# know nothing of each other, of the runtime that drives them or of the CLI.
MAY_IMPORT = {
    "foundation": set(),
    "model": {"foundation"},
    "control": {"foundation"},
    "membership": {"foundation", "model"},
    "proxy": {"foundation", "model"},
    "sync": {"foundation", "model"},
    "standby": {"foundation", "model", "sync"},  # promotion reads the received view's epoch
    "plugin manager": {"foundation"},
    "runtime": {"foundation", "model", "control"},
    "cli": set(PARTS.values()),
}

# Imports that break a rule today, each with why; one no longer made fails the test below,
# so the entry goes when the import goes.
KNOWN = {
    ("clusterkit.config", "clusterkit.sync.replicator"):
        "the replicator's tunables (host options) validated with the definition",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module of clusterkit/ and the absolute module names it imports."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                names.add(node.module if not node.level else
                          ".".join(filter(None, (base, node.module))))
        found[name] = names
    return found


def part_of(module: str) -> str | None:
    for prefix in sorted(PARTS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return PARTS[prefix]
    return None


def plugin_imports() -> dict[str, set[str]]:
    return {module: {n for n in names if n.split(".")[0].startswith("clusterkit_")}
            for module, names in imports().items()
            if any(n.split(".")[0].startswith("clusterkit_") for n in names)}


def test_every_module_of_the_core_belongs_to_a_part():
    unplaced = [m for m in imports() if part_of(m) is None]
    assert unplaced == [], "add them to PARTS here and to docs/architecture.md"


def test_no_part_imports_what_its_layer_may_not():
    broken = set()
    for module, names in imports().items():
        mine = part_of(module)
        for name in names:
            theirs = part_of(name)
            if theirs is None or theirs == mine or theirs in MAY_IMPORT[mine]:
                continue
            broken.add((module, name))
    assert broken - set(KNOWN) == set()
    assert set(KNOWN) - broken == set(), "no longer imported: remove it from KNOWN"


def test_no_new_module_of_the_core_imports_a_plugin():
    """Until the one known offender is gone (below), at least no other appears."""
    assert set(plugin_imports()) <= {"clusterkit.cli.sync"}


def test_the_core_imports_no_plugin():
    assert plugin_imports() == {}
