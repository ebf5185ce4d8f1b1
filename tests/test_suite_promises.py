"""What the README promises about the test suite holds: ``pytest -m slow`` selects real tests, CI leaves them out."""

from __future__ import annotations

import ast

from conftest import REPO


def slow_marked(source: str) -> list[str]:
    """Names of the test functions in ``source`` decorated with ``pytest.mark.slow`` (read statically)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            marks = [ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list]
            names += [node.name] if "pytest.mark.slow" in marks else []
    return names


def test_slow_marks_are_read_in_both_spellings() -> None:
    source = ("import pytest\n@pytest.mark.slow\ndef test_a(): pass\n@pytest.mark.slow()\ndef test_b(): pass\n"
              "@pytest.mark.ddp\ndef test_c(): pass\ndef test_d(): pass\n")
    assert slow_marked(source) == ["test_a", "test_b"]


def test_pytest_m_slow_selects_tests_that_ci_skips() -> None:
    assert "pytest -m slow" in (REPO / "README.md").read_text(encoding="utf-8")
    slow = [f"{path.name}::{name}" for path in sorted((REPO / "tests").glob("test_*.py"))
            for name in slow_marked(path.read_text(encoding="utf-8"))]
    # The long resume of every family runs anywhere; the spconv comparison needs CUDA.
    assert "test_resume.py::test_family_resumes_exactly_across_epochs" in slow, slow
    assert "test_point_ops.py::test_spconv_backend_matches_torch_backend_on_cuda" in slow, slow
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert "addopts = \"-m 'not slow'" in pyproject and '"slow: ' in pyproject
