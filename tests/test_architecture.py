"""The layering the README's architecture table states is the layering in the files: imports only go down the
table's rows, no two packages import each other, the library never starts a command by its module name, the
study's records are read and written in one package, project imports sit at the top of their files.

Each rule is a function that returns its violations, so a test can also plant one and see it caught."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "models", "training", "storage", "search", "dashboards", "commands", "benchmarks")
RECORDS = "search.records"
# python -m search.run: the one module below commands/ that hands over to the CLI (the design card names it)
ALIASES = {"search.run": "commands"}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Every module of the tree by dotted name (tests aside)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def architecture_table() -> list[list[str]]:
    """The README's architecture table, one list of cells per row."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Architecture"):]
    section = section[:section.index("\n## ", 3)] if "\n## " in section[3:] else section
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")][1:]


def layers() -> list[str]:
    """The table's packages, bottom first, as dotted names (``search.records`` is a row of its own)."""
    return [row[0].strip("`/").replace("/", ".") for row in architecture_table()
            if row[0].startswith("`") and row[0].endswith("/`")]


def package_of(module: str, order: list[str]) -> str:
    """The table's row a module belongs to: the longest package that holds it."""
    return max((package for package in order if module == package or module.startswith(package + ".")), key=len)


def project_imports(tree: ast.AST, module: str = ""):
    """(imported project module, line, inside a function) for every import of the project's own modules, relative
    ones (``from ..session import X`` in ``module``) made absolute, and ``importlib.import_module("X")``,
    ``__import__("X")`` and ``runpy.run_module("X")`` with a literal name."""
    nested = {id(node) for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(function) if node is not function}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or node.level):
            base = node.module or ""
            if node.level:  # relative to the importing module's package
                package = module.split(".")[:len(module.split(".")) - node.level]
                base = ".".join(package + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and _callee(node) in DYNAMIC_IMPORTS and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names = [node.args[0].value]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield name, node.lineno, id(node) in nested


DYNAMIC_IMPORTS = {"import_module", "__import__", "run_module", "run_path"}


def _callee(call: ast.Call) -> str | None:
    """The called name: ``f`` for ``f(...)``, ``attr`` for ``x.attr(...)``, ``Key`` for ``Key[int](...)``."""
    func = call.func.value if isinstance(call.func, ast.Subscript) else call.func
    return getattr(func, "id", getattr(func, "attr", None))


def import_edges(sources: dict[str, str], order: list[str], known: set[str]) -> list[tuple[str, str, str, int]]:
    """(importing module, its package, imported package, line) for every project import between modules;
    ``from search import records`` imports the module ``search.records``, not the package ``search``."""
    edges = []
    for name, source in sources.items():
        found = list(project_imports(ast.parse(source), name if not name.endswith("__init__") else name))
        submodules = {(imported.rsplit(".", 1)[0], line) for imported, line, _ in found if imported in known}
        for imported, line, _ in found:
            if imported in known and (imported, line) not in submodules:
                edges.append((name, package_of(name, order), package_of(imported, order), line))
    return edges


def upward_edges(sources: dict[str, str], order: list[str]) -> list[str]:
    """Imports of a package from a row below it (benchmarks sit above everything; the aliases are named)."""
    rank = {package: index for index, package in enumerate(order)}
    return [f"{name}:{line} imports {imported}, a row above {own}"
            for name, own, imported, line in import_edges(sources, order, set(sources))
            if rank[imported] > rank[own] and ALIASES.get(name) != imported]


def two_way_pairs(sources: dict[str, str], order: list[str]) -> list[tuple[str, str]]:
    """Pairs of packages that import each other (module by module, any module of each)."""
    edges = {(own, imported) for name, own, imported, _ in import_edges(sources, order, set(sources))
             if own != imported and ALIASES.get(name) != imported}
    return sorted((a, b) for a, b in edges if (b, a) in edges and a < b)


CLI = "shortcut-search"


def string_launches(sources: dict[str, str], library: set[str]) -> list[str]:
    """Library modules that start a project module or the CLI by name (``[python, "-m", "search.run"]``, ``-mX``,
    ``python -m X``, ``[python, "-m", name]``, ``["shortcut-search", "run"]``): a worker or a Slurm task runs the
    command line its caller hands over. (Help text that names a command is not a launch: only list items and
    strings holding ``-m``.)"""
    found = []
    packages = "|".join(PACKAGES)
    for name in sorted(library & set(sources) - set(ALIASES)):
        for node in ast.walk(ast.parse(sources[name])):
            if isinstance(node, (ast.List, ast.Tuple)):
                items = [item.value if isinstance(item, ast.Constant) else item for item in node.elts]
                for flag, target in zip(items, items[1:]):
                    if flag == "-m" and not (isinstance(target, str) and target.split(".")[0] not in PACKAGES):
                        found.append(f"{name}:{node.lineno} starts {target if isinstance(target, str) else 'a module'}")
                for item in items:
                    if isinstance(item, str) and (item == CLI or re.fullmatch(rf"-m({packages})\b[\w.]*", item)):
                        found.append(f"{name}:{node.lineno} starts {item.removeprefix('-m')}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if match := re.search(rf"-m ?({packages})\b[\w.]*", node.value):
                    found.append(f"{name}:{node.lineno} starts {match.group(0)[2:].strip()}")
    return sorted(set(found))


def tree_sources() -> dict[str, str]:
    return {name: path.read_text() for name, path in modules().items()}


def library_modules(order: list[str]) -> set[str]:
    """Modules below the commands: they may not launch a command, nor import one."""
    return {name for name in modules() if order.index(package_of(name, order)) < order.index("commands")}


def test_the_tables_rows_are_the_layers_bottom_up():
    assert layers() == ["common", "models", "training", "storage", "search.records", "search.evidence", "search",
                        "dashboards", "commands", "benchmarks"]


def test_imports_only_go_down_the_tables_rows():
    assert upward_edges(tree_sources(), layers()) == []


def test_no_two_packages_import_each_other():
    assert two_way_pairs(tree_sources(), layers()) == []


def test_the_library_never_starts_a_command_by_its_module_name():
    assert string_launches(tree_sources(), library_modules(layers())) == []


def test_a_planted_upward_import_two_way_pair_and_string_launch_are_caught():
    order = layers()
    sources = {"search.evidence.verdict": "from search import loop\n", "search.loop": "from search.evidence import verdict\n",
               "search.evidence": "", "search": "", "search.session": "", "commands.run": "", "commands": "",
               "search.evidence.stats": "from ..session import SearchSession\n",
               "search.evidence.noise": 'import importlib\nimportlib.import_module("commands.run")\n',
               "search.workers": 'import sys\nCMD = [sys.executable, "-m", "commands.run"]\n',
               "search.batch": 'LINE = "exec srun python -m search.run --trials 4"\n',
               "search.keep": 'import subprocess, sys\nsubprocess.run([sys.executable, "-mcommands", "run"])\n'
                              'subprocess.run(["shortcut-search", "run"])\nsubprocess.run([sys.executable, "-m", name])\n'}
    assert upward_edges(sources, order) == [
        "search.evidence.verdict:1 imports search, a row above search.evidence",
        "search.evidence.stats:1 imports search, a row above search.evidence",
        "search.evidence.noise:2 imports commands, a row above search.evidence"]
    assert two_way_pairs(sources, order) == [("search", "search.evidence")]
    assert string_launches(sources, {"search.workers", "search.batch", "search.keep"}) == [
        "search.batch:1 starts search.run", "search.keep:2 starts commands", "search.keep:3 starts shortcut-search",
        "search.keep:4 starts a module", "search.workers:2 starts commands.run"]
    assert records_outside(sources | {"search.keep": 'records.Key[int]("made_up")\nstorage.set_trial_user_attr(1, "k", 2)\n'}) \
        == ["search/keep.py:1 makes a record key outside search.records",
            "search/keep.py:2 calls set_trial_user_attr outside search.records"]


def test_search_holds_no_command():
    # a command is a module with a parser and main; under search/ only the alias hands over to one
    for name, path in modules().items():
        if name.startswith(("search", "training", "dashboards", "storage")) and name not in ALIASES:
            assert "ArgumentParser(" not in path.read_text(), f"{path.relative_to(ROOT)} is a command: move it to commands/"


def _import_block(lines: list[str], line: int) -> str:
    """The import at ``line`` (1-based) with the imports, blanks and comments right above it, and one line more."""
    start = line - 1
    while start > 0 and re.match(r"\s*(from |import |#|$)", lines[start - 1]):
        start -= 1
    return "\n".join(lines[max(start - 1, 0):line])


def test_project_imports_sit_at_the_top_unless_they_start_tensorflow():
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for imported, line, nested in project_imports(ast.parse(path.read_text())):
            if nested:
                assert re.search(r"TensorFlow|Keras", _import_block(lines, line)), \
                    f"{path.relative_to(ROOT)}:{line} imports {imported} inside a function without saying why"


def test_no_module_uses_another_modules_private_names():
    known = modules()
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in known and node.module != name:
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.relative_to(ROOT)} imports {private} from {node.module}"


USER_ATTRS = {"user_attrs", "set_user_attr", "set_trial_user_attr", "set_study_user_attr", "get_trial_user_attrs",
              "get_study_user_attrs"}
SYSTEM_ATTRS = {"system_attrs", "set_system_attr", "set_trial_system_attr", "set_study_system_attr",
                "get_trial_system_attrs", "get_study_system_attrs"}


def records_outside(sources: dict[str, str]) -> list[str]:
    """Reads and writes of a study's records outside ``search.records``: Optuna's user attributes (and, outside
    ``storage``, its system attributes) through a trial, a study or a storage, and record keys made up."""
    found = []
    for name, source in sorted(sources.items()):
        if name == RECORDS or name.startswith(RECORDS + "."):
            continue
        relative = name.replace(".", "/") + ".py"
        forbidden = USER_ATTRS | (set() if name.startswith("storage") else SYSTEM_ATTRS)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute) and node.attr in forbidden:
                found.append(f"{relative}:{node.lineno} calls {node.attr} outside search.records")
            if isinstance(node, ast.keyword) and node.arg == "user_attrs":
                found.append(f"{relative}:{node.value.lineno} passes user_attrs outside search.records")
            if isinstance(node, ast.Call) and _callee(node) == "Key":  # a record is named by its typed key only
                found.append(f"{relative}:{node.lineno} makes a record key outside search.records")
    return sorted(set(found))


def test_the_studys_records_are_read_and_written_only_through_search_records():
    assert records_outside(tree_sources()) == []


def test_every_package_names_its_public_surface():
    for package in PACKAGES[:-1]:
        for init in (ROOT / package).rglob("__init__.py"):
            assert "__all__" in init.read_text(), f"{init.relative_to(ROOT)} has no __all__"


def test_no_module_is_past_the_size_a_reader_takes_in():
    long = {str(path.relative_to(ROOT)): count for path in modules().values()
            if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: split them by job"


def test_the_readme_table_lists_every_module_of_the_tree():
    listed = set()
    for row in architecture_table():
        packages = re.findall(r"`([\w]+(?:/[\w]+)*)/`", row[0])
        for module in re.findall(r"`([\w/]+\.py)`", row[1]):
            listed.add(module if "/" in module else f"{packages[0]}/{module}")
    present = {str(path.relative_to(ROOT)) for path in modules().values()
               if path.name not in ("__init__.py", "__main__.py")}
    assert present - listed == set(), "modules the README's architecture table does not list"
    assert listed - present == set(), "modules the README's architecture table lists but the tree lacks"
