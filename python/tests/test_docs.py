# SPDX-License-Identifier: MIT
"""The README's Python example runs; every public name has a docstring and a stub."""
import ast
import inspect
import os
import re

import pytest

import tandem

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
STUBS = os.path.join(ROOT, "python", "tandem", "__init__.pyi")


@pytest.mark.skipif(not os.path.exists(README), reason="not run from the repository")
def test_readme_example_runs(tmp_path, monkeypatch):
    text = open(README).read()
    m = re.search(r"<!-- python-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "the README's Python example is missing"
    code = m.group(1)
    assert len(code.strip().splitlines()) <= 20
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TANDEM_KERNEL_CACHE", str(tmp_path / "k"))
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "z.tdz").exists()


def public_names():
    return [n for n in dir(tandem) if not n.startswith("_") and n not in ("annotations",)
            and not inspect.ismodule(getattr(tandem, n))]


def test_every_public_name_has_a_docstring():
    missing = []
    for n in public_names():
        obj = getattr(tandem, n)
        if callable(obj) and not (obj.__doc__ or "").strip():
            missing.append(n)
        if inspect.isclass(obj):
            for m, v in vars(obj).items():
                if not m.startswith("_") and callable(v) and not (getattr(v, "__doc__", "") or "").strip():
                    missing.append(f"{n}.{m}")
    assert not missing, missing


@pytest.mark.skipif(not os.path.exists(STUBS), reason="not run from the repository")
def test_stubs_cover_the_public_api():
    tree = ast.parse(open(STUBS).read())
    stubbed = {node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    stubbed |= {t.id for node in tree.body if isinstance(node, ast.AnnAssign)
                for t in [node.target] if isinstance(t, ast.Name)}
    missing = [n for n in public_names() if n not in stubbed]
    assert not missing, missing
