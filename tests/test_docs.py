"""The README stays short and true: its commands table names exactly the dispatcher's subcommands, and every
relative link in the README, docs/ and benchmarks/README.md points at a file that exists. No training."""
import re
from pathlib import Path

from commands import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 160
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


def readme_commands() -> list[str]:
    """The subcommand of every row of the README's "## Commands" table (rows start "| `shortcut-search NAME")."""
    text = README.read_text()
    assert "\n## Commands\n" in text, "README.md has no '## Commands' section: add it back, with its table"
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    return [match.group(1) for line in section.splitlines()
            if (match := re.match(r"\|\s*`shortcut-search (\w[\w-]*)", line))]


def test_the_readmes_commands_table_names_exactly_the_dispatchers_subcommands():
    listed, dispatched = readme_commands(), sorted(COMMANDS)
    assert len(listed) == len(set(listed)), \
        f"README.md's Commands table lists a subcommand twice ({listed}): keep one row per subcommand"
    assert sorted(listed) == dispatched, (
        f"README.md's Commands table lists {sorted(listed)}, but commands.COMMANDS dispatches {dispatched}: "
        f"add a row '| `shortcut-search NAME ...` | what it does |' for {sorted(set(dispatched) - set(listed))} "
        f"and remove the rows for {sorted(set(listed) - set(dispatched))}")


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for document in documents():
        for number, line in enumerate(document.read_text().splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                    continue  # http(s), mailto: not a file of the tree
                path = target.split("#", 1)[0]
                if path and not (document.parent / path).exists():
                    broken.append(f"{document.relative_to(ROOT)}:{number}: {target}")
    assert not broken, ("links to files that do not exist; fix the path or restore the file:\n  "
                        + "\n  ".join(broken))


def test_the_readme_reads_in_five_minutes():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines, more than {MAX_README_LINES}: move reference material into docs/ "
        f"and link it from the README's Documentation section")


def test_every_python_m_module_the_docs_name_exists():
    # a command copied from the docs runs: `python -m search.export` after a move would be a dead end
    missing = []
    for document in documents():
        for number, line in enumerate(document.read_text().splitlines(), 1):
            for module in re.findall(r"python -m ([A-Za-z_][\w.]*)", line):
                root = module.split(".")[0]
                if (ROOT / root).is_dir() or (ROOT / f"{root}.py").is_file():  # the project's own modules
                    path = ROOT / module.replace(".", "/")
                    if not (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()):
                        missing.append(f"{document.relative_to(ROOT)}:{number}: python -m {module}")
    assert not missing, "commands naming modules that do not exist (use shortcut-search ...):\n  " + "\n  ".join(missing)


def test_every_test_the_docs_cite_exists():
    # the reliability tables name the test that proves each row: a renamed test must not leave a dead citation
    defined = {name for path in (ROOT / "tests").glob("*.py") for name in re.findall(r"def (test_\w+)", path.read_text())}
    cited = [f"{document.relative_to(ROOT)}:{number}: {name}" for document in documents()
             for number, line in enumerate(document.read_text().splitlines(), 1)
             for name in re.findall(r"`(test_\w+)`", line) if name not in defined]
    assert not cited, "the docs cite tests that do not exist (rename the citation):\n  " + "\n  ".join(cited)
