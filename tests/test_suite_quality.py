"""The test suite itself: a test whose only check is that a fraction lies in ``[0, 1]`` (``0 <= x <= 1``) passes
for every wrong accuracy, so none may stand alone. (A narrow range with a reason, ``1.9 < ratio < 2.1``, is a
real check and is not flagged.)"""
import ast
from pathlib import Path

TESTS = Path(__file__).parent


def is_range_check(test: ast.expr) -> bool:
    """``0 <= x <= 1`` (or with ``<``, or ``0.0``/``1.0``), possibly joined by ``and``."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return all(is_range_check(value) for value in test.values)
    return (isinstance(test, ast.Compare) and len(test.ops) == 2
            and all(isinstance(op, (ast.Lt, ast.LtE)) for op in test.ops)
            and [getattr(side, "value", None) for side in (test.left, test.comparators[1])] == [0, 1])


def range_only_tests(source: str) -> list[str]:
    """Names of the test functions in ``source`` whose every ``assert`` is a range check."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            asserts = [n for n in ast.walk(node) if isinstance(n, ast.Assert)]
            others = [n for n in ast.walk(node) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "raises"]
            if asserts and not others and all(is_range_check(a.test) for a in asserts):
                found.append(node.name)
    return found


def test_the_detector_finds_a_lone_range_check_and_spares_a_real_one():
    lone = "def test_a():\n    acc = 0.5\n    assert 0 <= acc <= 1\n"
    real = "def test_b():\n    acc = 0.5\n    assert 0 <= acc <= 1\n    assert acc == 0.5\n"
    narrow = "def test_c():\n    ratio = 2.0\n    assert 1.9 < ratio < 2.1\n"
    assert range_only_tests(lone) == ["test_a"]
    assert range_only_tests(real) == range_only_tests(narrow) == []


def test_no_test_checks_only_that_a_value_lies_in_a_range():
    offenders = [f"{path.name}::{name}" for path in sorted(TESTS.glob("test_*.py"))
                 for name in range_only_tests(path.read_text(encoding="utf-8"))]
    assert not offenders, f"these tests only check a range, which a wrong value passes: {offenders}"
