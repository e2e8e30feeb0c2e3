"""The layering the README's architecture table states is the layering in the files: imports only go down, the
study's records are read and written in one module, project imports sit at the top of their files."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "models", "training", "storage", "search", "dashboards", "commands", "benchmarks")
RECORDS = "search/records.py"


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


def layers() -> tuple[dict[str, int], set[str]]:
    """The table's order (bottom first): each package's layer, and the entry points (the commands and the
    notebook API, above every package: they wire the layers together)."""
    order, entry_points = {}, set()
    for row in architecture_table():
        names = re.findall(r"`([\w/]+(?:\.py)?)`", row[0] + " " + row[1])
        if row[0].startswith("entry points"):
            entry_points.update(name.removesuffix(".py").replace("/", ".") for name in names if name.endswith(".py"))
            entry_points.update(name.strip("/") for name in names if name.endswith("/"))
            order.setdefault("commands", len(order))
        elif row[0].startswith("`") and row[0].endswith("/`"):
            package = row[0].strip("`/").split("/")[0]
            order.setdefault(package, len(order))
    return order, entry_points


def project_imports(path: Path):
    """(imported project module, line, inside a function) for every import of the project's own modules."""
    tree = ast.parse(path.read_text())
    nested = {id(node) for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(function) if node is not function}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield name, node.lineno, id(node) in nested


def test_imports_only_go_down_the_tables_layers():
    order, entry_points = layers()
    assert list(order) == ["common", "models", "training", "storage", "search", "dashboards", "commands", "benchmarks"]
    known = modules()
    for name, path in known.items():
        if name.startswith("benchmarks"):
            continue  # above everything; public names only (below)
        own = len(order) if name in entry_points or name.startswith("commands") else order[name.split(".")[0]]
        for imported, line, _ in project_imports(path):
            if imported not in known:
                continue  # "from search import records" names the module in its second form
            layer = len(order) if imported in entry_points or imported.startswith("commands") \
                else order[imported.split(".")[0]]
            assert layer <= own, f"{path.relative_to(ROOT)}:{line} imports {imported}, a layer above it"
            if own < len(order):
                assert imported not in entry_points, f"{path.relative_to(ROOT)}:{line} imports a command"


def _import_block(lines: list[str], line: int) -> str:
    """The import at ``line`` (1-based) with the imports, blanks and comments right above it, and one line more."""
    start = line - 1
    while start > 0 and re.match(r"\s*(from |import |#|$)", lines[start - 1]):
        start -= 1
    return "\n".join(lines[max(start - 1, 0):line])


def test_project_imports_sit_at_the_top_unless_they_start_tensorflow():
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for imported, line, nested in project_imports(path):
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


def test_the_studys_records_are_read_and_written_only_through_search_records():
    calls = {"attr", "write", "study_value", "write_study_value"}
    for name, path in modules().items():
        relative = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if relative != RECORDS:
                if isinstance(node, ast.Attribute):
                    assert node.attr not in ("user_attrs", "set_user_attr"), f"{relative}:{node.lineno}"
                    if not relative.startswith("storage/"):  # Optuna's own system attributes (artifacts)
                        assert node.attr not in ("system_attrs", "set_system_attr"), f"{relative}:{node.lineno}"
                if isinstance(node, ast.keyword):
                    assert node.arg != "user_attrs", f"{relative}:{node.value.lineno}"
            # a record is named by its constant (TrialKey.SEED), never by a bare string
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in calls \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "records":
                keys = [arg for arg in node.args[1:2] if isinstance(arg, ast.Constant)]
                assert not keys, f"{relative}:{node.lineno} names a record by a bare string"


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
