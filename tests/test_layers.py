"""The module map in README.md ("How it is built"), enforced: a module imports only from its own layer or lower
ones, and the packages of one layer import each other without cycles."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "selfplay"
LAYERS = [  # lowest first, as in README.md
    {"selfplay", "errors", "files", "config", "distributed", "logs"},
    {"rundir"},
    {"policy", "roles", "verify", "novelty", "rewards", "train"},
    {"curriculum", "eval"},
    {"loop"},
    {"runner", "tracking"},
    {"cli", "__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """'selfplay.verify.judge' -> 'verify'; 'selfplay.loop' -> 'loop'; 'selfplay' -> 'selfplay'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports() -> dict[str, set[str]]:
    """Units each unit imports (module-level and function-level imports alike)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("selfplay", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name.split(".")[0] == "selfplay" and unit_of(name) != unit_of(module):
                    found.setdefault(unit_of(module), set()).add(unit_of(name))
    return found


def test_every_unit_is_in_the_layer_table():
    units = {unit_of("selfplay." + p.relative_to(PACKAGE).with_suffix("").parts[0]) for p in PACKAGE.rglob("*.py")}
    assert units - {"__init__"} <= set(RANK), units - set(RANK)


def test_no_module_imports_a_layer_above_its_own():
    upward = [(a, b) for a, targets in imports().items() for b in targets if RANK[b] > RANK[a]]
    assert not upward, upward


def test_no_import_cycles_within_a_layer():
    graph = imports()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert not [unit for unit in graph if reaches(unit, unit, set())]
