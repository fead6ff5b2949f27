"""Code a newcomer can read in one sitting (issue 11): no function over 60 lines in src/ and
roles/ (the RESP parser's hot loop excepted, as one function on purpose: it is the server's
inner loop), and no toy-redis module over 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
MAX_TOY_REDIS_MODULE_LINES = 500
# (file, qualified name): functions allowed to be longer.
EXEMPT = {("src/toy_redis/toy_redis/protocol.py", "RequestParser.feed")}


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py")
                  if "build" not in path.relative_to(REPO).parts)


def functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from functions(node, name + ".")
        else:
            yield from functions(node, prefix)


def test_no_function_is_over_60_lines():
    long = []
    for path in python_files("src", "roles"):
        relative = str(path.relative_to(REPO))
        for name, node in functions(ast.parse(path.read_text(), relative)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES and (relative, name) not in EXEMPT:
                long.append(f"{relative}:{node.lineno} {name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_exempt_parser_still_exists():
    # An exemption for a function that moved or was renamed would silently exempt nothing.
    for relative, name in EXEMPT:
        assert name in dict(functions(ast.parse((REPO / relative).read_text()))), (relative, name)


def test_no_toy_redis_module_is_over_500_lines():
    long = [f"{path.relative_to(REPO)} ({len(path.read_text().splitlines())} lines)"
            for path in python_files("src/toy_redis/toy_redis")
            if len(path.read_text().splitlines()) > MAX_TOY_REDIS_MODULE_LINES]
    assert not long, f"modules over {MAX_TOY_REDIS_MODULE_LINES} lines: {long}"
