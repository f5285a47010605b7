"""The package layers, read from the sources' import statements (nothing is imported or run).

A part of mriclip (a subpackage such as ``training``, or a top-level module such as
``splits.py``) imports only from its own layer and the layers below it, no two parts import
each other directly or through others, and the library layers are plain Python: only the
Kedro layer imports Kedro. docs/architecture.md describes the same layers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mriclip

PACKAGE = Path(mriclip.__file__).parent

#: Bottom to top. A new package or top-level module gets a layer here (and in the docs).
LAYERS = (
    ("made_ahead", "parallel", "splits"),  # utilities that use no other part of mriclip
    ("imaging", "text", "phantom"),
    ("models",),
    ("training",),
    ("evaluation",),
    ("reporting", "tuning", "inference"),
    ("predictor", "packaging"),  # a trained model applied and exported, without Kedro
    # Kedro: datasets, hooks, settings, the pipelines' nodes, the command line
    (
        "datasets",
        "tracking",
        "hooks",
        "settings",
        "pipelines",
        "pipeline_registry",
        "__main__",
        "console",
    ),  # fmt: skip
)
KEDRO_LAYER = len(LAYERS) - 1
LAYER_OF = {part: index for index, parts in enumerate(LAYERS) for part in parts}


def part_of(path: Path) -> str:
    """``training`` for src/mriclip/training/engine.py, ``splits`` for src/mriclip/splits.py."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_modules(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, at any depth (functions too);
    relative imports are resolved against the file's place in ``package``."""
    names = list(path.relative_to(package.parent).with_suffix("").parts)
    here = names[:-1]  # the package a relative import starts from
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            # "from mriclip import training" names the part in the alias
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def sources() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" or path.parent != PACKAGE
    )


def mriclip_edges() -> dict[tuple[str, str], list[str]]:
    """{(importing part, imported part): ["file:line", ...]} between different parts."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sources():
        source = part_of(path)
        for line, module in imported_modules(path):
            names = module.split(".")
            if names[0] != "mriclip" or len(names) < 2 or names[1] == "__version__":
                continue
            if names[1] != source:
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                places = edges.setdefault((source, names[1]), [])
                if where not in places:
                    places.append(where)
    return edges


def test_every_part_has_a_layer():
    parts = {part_of(path) for path in sources()}
    unplaced = sorted(parts - set(LAYER_OF))
    assert not unplaced, f"give {unplaced} a layer in tests/test_layers.py (LAYERS)"


def test_no_part_imports_from_a_layer_above_its_own():
    upward = [
        f"{source} (layer {LAYER_OF[source]}) imports {target} (layer {LAYER_OF[target]}) "
        f"at {', '.join(places)}"
        for (source, target), places in mriclip_edges().items()
        if source in LAYER_OF and target in LAYER_OF and LAYER_OF[target] > LAYER_OF[source]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle_between_parts():
    graph: dict[str, set[str]] = {}
    for source, target in mriclip_edges():
        graph.setdefault(source, set()).add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(part for part in graph if reaches(part, part, {part}))
    assert not circles, f"these parts import themselves through others: {circles}"


def test_only_the_kedro_layer_imports_kedro():
    library = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in sources()
        if LAYER_OF.get(part_of(path), KEDRO_LAYER) < KEDRO_LAYER
        for line, module in imported_modules(path)
        if module.split(".")[0] in ("kedro", "kedro_datasets")
    ]
    assert not library, "\n".join(library)


def test_imports_are_found_at_any_depth_and_resolved(tmp_path):
    package = tmp_path / "mriclip"
    (package / "training").mkdir(parents=True)
    module = package / "training" / "example.py"
    module.write_text(
        "import mriclip.evaluation.summary\n"
        "def f():\n    from mriclip import reporting\n    from ..models import clip\n"
        "    from .rng import item_rng\n"
    )
    assert imported_modules(module, package) == [
        (1, "mriclip.evaluation.summary"),
        (3, "mriclip.reporting"),
        (4, "mriclip.models.clip"),
        (5, "mriclip.training.rng.item_rng"),
    ]


def test_the_architecture_docs_give_the_same_layers():
    """docs/architecture.md's layer table names, row by row, the parts of LAYERS."""
    docs = PACKAGE.parents[1] / "docs" / "architecture.md"
    table = docs.read_text(encoding="utf-8").split("| layer | parts |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|") for line in table.splitlines() if re.match(r"\| \d+ ", line)]
    documented = [
        {name.rstrip("/").removesuffix(".py") for name in re.findall(r"`([^`]+)`", row[2])}
        for row in rows
    ]
    assert [int(row[1].split()[0]) for row in rows] == list(range(len(LAYERS)))
    assert documented == [set(parts) for parts in LAYERS]
