"""The package's layout: imports point down, the memory model stands alone, every algorithm lives
in one ops/ folder, and every GPU script is a `python -m flashedu.bench.<kind>` that refuses
cleanly on a machine without a GPU."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "flashedu"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(mod: str, path: Path, mods: dict) -> set[str]:
    """flashedu modules ``mod`` imports, at module level or inside functions: ``from a.b import c``
    counts as a.b.c when that is a module, else a.b; the importing package's own __init__ is not
    an edge of its submodules (importing flashedu.x runs flashedu/__init__ first, by Python's
    rules, not by the code's choice)."""
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name and name != mod:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_inside_flashedu():
    assert _cycles(_graph()) == []


def test_the_memory_model_imports_nothing_from_ops():
    bad = {m: sorted(t for t in targets if t.startswith("flashedu.ops"))
           for m, targets in _graph().items() if m.startswith("flashedu.iomodel")}
    assert {m: t for m, t in bad.items() if t} == {}


def test_no_top_level_folder_duplicates_an_algorithm():
    algorithms = {p.name for p in (PKG / "ops").iterdir() if (p / "__init__.py").exists()}
    top = {p.stem for p in PKG.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert not (top & (algorithms | {"blocksparse", "block_sparse", "fp8", "ring", "fa3"}))


SCRIPTS = sorted(p.stem for p in (PKG / "bench").glob("*.py")
                 if 'if __name__ == "__main__"' in p.read_text() and p.stem != "__main__")


def test_the_gpu_scripts_are_found():
    assert {"block_sparse", "decode", "fa3", "fp8", "ncu", "peak_memory", "ring", "tune_v2"} <= set(SCRIPTS)


def _run(*args, cwd):
    # The repo root on the path: flashedu need not be installed (a GPU machine runs the tests
    # from a copy of the tree).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_gpu_script_says_what_it_measures(script, tmp_path):
    r = _run(f"flashedu.bench.{script}", "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: python -m flashedu.bench.{script}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the scripts would measure")
@pytest.mark.parametrize("script", [s for s in SCRIPTS if s != "tuning_table"])
def test_a_gpu_script_refuses_a_cpu_machine_in_one_line(script, tmp_path):
    out = tmp_path / "out"
    r = _run(f"flashedu.bench.{script}", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip().count("\n") == 0 and "needs a CUDA GPU" in r.stderr
    assert not out.exists()
