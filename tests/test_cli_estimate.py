"""`tailscope estimate`, `report` and `sweep` end to end on small real checkpoints."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tailscope.cli import app
from tailscope.estimators.tuning import calibration_split
from tailscope.prompts import Prompt


@pytest.fixture()
def prompt_file(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "a", "prompt": "hello there"}\n{"id": "b", "prompt": "tell me a story"}\n')
    return f


def _common(tiny_dirs, prompt_file, tmp_path):
    return ["--reference", str(tiny_dirs["ref"]), "--target", str(tiny_dirs["tgt"]), "--prompts", str(prompt_file),
            "--judge", "regex:[aeiou]{2}", "--max-new-tokens", "6", "--runs-dir", str(tmp_path / "runs")]


@pytest.mark.parametrize("method", ["naive", "is", "mis", "lpe"])
def test_estimate_runs_and_resumes(tiny_dirs, prompt_file, tmp_path, method):
    args = ["estimate", "--method", method, "--budget", "60", *_common(tiny_dirs, prompt_file, tmp_path),
            "--run", "r1", "--json", str(tmp_path / "e.json")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    payload = json.loads((tmp_path / "e.json").read_text())
    assert [e["prompt_id"] for e in payload["estimates"]] == ["a", "b"]
    for e in payload["estimates"]:
        assert e["total_rollouts"] <= 60 and e["interval"][0] <= e["interval"][1]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0
    assert json.loads((tmp_path / "e.json").read_text())["estimates"] == payload["estimates"]

    report = CliRunner().invoke(app, ["report", "r1", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<table>" in page and ("data:image/png;base64" in page or method in {"naive", "is"})


def test_estimate_refuses_a_run_with_another_config(tiny_dirs, prompt_file, tmp_path):
    base = ["estimate", "--method", "naive", "--budget", "10", *_common(tiny_dirs, prompt_file, tmp_path), "--run", "r2"]
    assert CliRunner().invoke(app, base).exit_code == 0
    other = CliRunner().invoke(app, [*base, "--seed", "5"])
    assert other.exit_code == 2 and "another --run" in other.output


def test_estimate_rejects_bad_method(tiny_dirs, prompt_file, tmp_path):
    result = CliRunner().invoke(app, ["estimate", "--method", "magic", *_common(tiny_dirs, prompt_file, tmp_path)])
    assert result.exit_code == 2 and "magic" in result.output


def test_sweep_reports_rates_and_coherence(tiny_dirs, prompt_file, tmp_path):
    result = CliRunner().invoke(app, [
        "sweep", "--before", str(tiny_dirs["ref"]), "--after", str(tiny_dirs["tgt"]), "--prompts", str(prompt_file),
        "--judge", "regex:[aeiou]{2}", "--amplify", "0,1,4", "-n", "8", "--max-new-tokens", "6",
        "--runs-dir", str(tmp_path / "runs"), "--json", str(tmp_path / "s.json"),
    ])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "s.json").read_text())
    points = payload["points"]
    assert [p["alpha"] for p in points] == [1.0, 2.0, 5.0]
    report = CliRunner().invoke(app, ["report", payload["run"], "--runs-dir", str(tmp_path / "runs"),
                                      "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Logit diff amplification" in page and "data:image/png;base64" in page
    assert all(p["rollouts"] == 16 and p["interval"][0] <= p["rate"] <= p["interval"][1] for p in points)
    assert all(p["logprob_after_per_token"] < 0 for p in points)


def _tuned_estimate(tiny_dirs, tmp_path, tuning: list[str], lines: int, tokens: int) -> dict:
    """Run `tailscope estimate` with one calibration prompt for ``tuning``; the JSON payload."""
    f = tmp_path / "p.txt"
    f.write_text("\n".join(["hello there", "tell me a story", "what is the weather", "please explain plants"][:lines]))
    args = ["estimate", *tuning, "--calibration", "1", "--budget", "40",
            "--reference", str(tiny_dirs["ref"]), "--target", str(tiny_dirs["tgt"]), "--prompts", str(f),
            "--judge", "regex:^[a-m]", "--max-new-tokens", str(tokens), "--runs-dir", str(tmp_path / "runs"),
            "--json", str(tmp_path / "e.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "e.json").read_text())


def test_estimate_is_with_a_tuned_proposal_scores_only_held_out_prompts(tiny_dirs, tmp_path):
    payload = _tuned_estimate(tiny_dirs, tmp_path, ["--method", "is", "--proposal", "tune"], 4, 4)
    held = payload["settings"]["calibration_prompts"]
    ids = ["p0", "p1", "p2", "p3"]
    expected = [p.id for p in calibration_split([Prompt(i, text="") for i in ids], 1, seed=0)]
    assert held == expected and [e["prompt_id"] for e in payload["estimates"]] == [i for i in ids if i not in held]
    assert all(e["settings"]["proposal"] == payload["settings"]["proposal"] for e in payload["estimates"])


def test_estimate_mis_with_a_tuned_switch_point(tiny_dirs, tmp_path):
    payload = _tuned_estimate(tiny_dirs, tmp_path, ["--method", "mis", "--switch", "tune"], 3, 6)
    expected = [p.id for p in calibration_split([Prompt(i, text="") for i in ("p0", "p1", "p2")], 1, seed=0)]
    assert payload["settings"]["calibration_prompts"] == expected
    chosen = payload["settings"]["switch_after"]
    assert chosen is None or isinstance(chosen, int)
    assert all(e["settings"]["switch_after"] == chosen and e["total_rollouts"] <= 40 for e in payload["estimates"])
    bad = CliRunner().invoke(app, ["estimate", "--method", "is", "--switch", "4"])
    assert bad.exit_code != 0 and "--switch" in bad.output


def test_evaluate_reference_override_is_for_the_auroc_suite_only(tmp_path):
    out = CliRunner().invoke(app, ["evaluate", "detection", "--reference", str(tmp_path), "--out", str(tmp_path)])
    assert out.exit_code != 0
    assert "auroc suite only" in out.output


def test_a_flagged_estimate_shows_its_flag_in_json_table_and_report(tiny_dirs, prompt_file, tmp_path):
    """A judge that never fires: MIS sees no hits, so its bound rests on the monotone-path
    assumption and is flagged ``no_hits`` (and ``small_budget``: 30 rollouts) — in the JSON, the
    printed table and the HTML report."""
    args = ["estimate", "--method", "mis", "--budget", "30", *_common(tiny_dirs, prompt_file, tmp_path),
            "--judge", "regex:^QQQQ", "--run", "flagged", "--json", str(tmp_path / "e.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "e.json").read_text())
    assert all(e["flags"] == ["no_hits", "small_budget"] for e in payload["estimates"])
    table = result.output.split("per-prompt estimates")[1]
    assert table.count("no_hits") >= 2 and table.count("small_budget") >= 2
    assert "2 of 2 prompts flagged" in payload["summary"] and "no_hits" in payload["summary"]
    report = CliRunner().invoke(app, ["report", "flagged", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count(">no_hits</span>") == 2 and "2 of 2 estimates are flagged" in page


def test_the_default_estimate_is_switching_mis(tiny_dirs, tmp_path):
    """No method flags: switching path MIS; with too few prompts to set a calibration split aside,
    the fixed switch point, said in the output; with enough, the switch point tuned on the split."""
    from tailscope.estimators.defaults import FALLBACK_SWITCH

    def run(lines: int, name: str) -> tuple[dict, str]:
        f = tmp_path / f"{name}.txt"
        f.write_text("\n".join(f"prompt number {i} please" for i in range(lines)))
        out = CliRunner().invoke(app, [
            "estimate", "--budget", "20", "--reference", str(tiny_dirs["ref"]), "--target", str(tiny_dirs["tgt"]),
            "--prompts", str(f), "--judge", "regex:^[a-m]", "--max-new-tokens", "5", "--runs-dir",
            str(tmp_path / "runs"), "--json", str(tmp_path / f"{name}.json")])
        assert out.exit_code == 0, out.output
        return json.loads((tmp_path / f"{name}.json").read_text()), out.output

    few, text = run(3, "few")
    assert few["method"] == "mis" and few["settings"]["switch_after"] == FALLBACK_SWITCH
    assert f"fixed switch point {FALLBACK_SWITCH}" in text and "summary: switching path MIS" in text
    assert all(e["settings"]["switch_after"] == FALLBACK_SWITCH for e in few["estimates"]) and len(few["estimates"]) == 3
    many, text = run(8, "many")
    assert many["method"] == "mis" and "tuned on 4 calibration prompts" in text
    assert len(many["settings"]["calibration_prompts"]) == 4 and len(many["estimates"]) == 4
    chosen = many["settings"]["switch_after"]
    assert chosen is None or isinstance(chosen, int)
    assert all(e["settings"]["switch_after"] == chosen for e in many["estimates"])
