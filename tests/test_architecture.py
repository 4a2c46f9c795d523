"""The shape of the package: no import circles, torch-free core records, no deprecated calls."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import tailscope

PACKAGE = Path(tailscope.__file__).parent


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (relative imports, at any depth of the file)."""
    modules = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = f
    graph = {}
    for name, f in modules.items():
        package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                deps |= {t for t in (target, *(f"{target}.{a.name}" for a in node.names)) if t in modules}
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                found.append(sorted([v, *comp]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = _import_graph()
    assert "tailscope.rollout" in graph and graph["tailscope.sampling"]  # the walk saw the package
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_records_import_without_torch():
    code = ("import sys; import tailscope.rollout, tailscope.prompts, tailscope.judges, tailscope.store; "
            "from tailscope.rollout import Proposal, Rollout; "
            "r = Rollout.from_dict(Rollout('p', 'a=0', 1, (3, 4), 'hi', 'eos', -1.0, -1.0, -2.0, {0.5: -1.5}).to_dict()); "
            "assert r.logprob_grid == {0.5: -1.5} and r.token_ids == (3, 4); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sampling_and_scoring_raise_no_deprecation_warnings(tiny_pair, prompts):
    """The decoding loop and the scorer use only supported transformers APIs (e.g. `cache=`)."""
    from tailscope.sampling import PathSampler

    sampler = PathSampler(tiny_pair, max_new_tokens=6, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rollouts = sampler.sample(prompts, 2, "a=0.5;switch=2", logprob_grid=(0.0, 0.5))
        sampler.scorer().score_rollouts({p.id: p for p in prompts}, rollouts, (0.0, 1.0))
    bad = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert bad == []
