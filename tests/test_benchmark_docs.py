"""The benchmark tables in README.md and docs/*.md: every block is known to the renderer and closed."""

import re

from benchmark_scripts import load_benchmark


def test_every_block_has_a_renderer_and_a_closing_marker():
    render = load_benchmark("render_readme")
    seen = set()
    for doc in render.DOCUMENTS:
        text = doc.read_text()
        for name in re.findall(r"<!-- bench:([\w-]+) -->", text):
            assert name in render.TABLES, f"{doc.name}: no renderer for block {name!r}"
            assert f"<!-- /bench:{name} -->" in text, f"{doc.name}: block {name!r} is not closed"
            seen.add(name)
    assert {"headline", "auroc", "calibration", "harmbench"} <= seen


def test_render_fills_a_block_and_leaves_the_rest(tmp_path):
    render = load_benchmark("render_readme")
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n\n<!-- bench:headline -->\nold\n<!-- /bench:headline -->\n\nafter\n")
    assert render.render_one(doc) == ["headline"]
    text = doc.read_text()
    assert text.startswith("intro\n\n<!-- bench:headline -->\n| method |") and text.endswith("\n<!-- /bench:headline -->\n\nafter\n")
    assert "mis (switching, tuned)" in text and "old" not in text
