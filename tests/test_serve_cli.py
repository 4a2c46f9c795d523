"""`tailscope serve` argument handling (the running server is tested in test_serve_organism.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tailscope.cli import app


@pytest.mark.parametrize("args,message", [
    (["--alpha", "2", "--amplify", "1", "--organism", "backdoor"], "one of --alpha or --amplify"),
    (["--reference", "somewhere"], "give --reference and --target"),
    (["--organism", "no-such-organism"], "no organism 'no-such-organism'"),
    (["--organism", "backdoor", "--target", "x"], "not both"),
])
def test_bad_arguments_exit_with_a_message(args, message):
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_a_busy_port_is_reported(tiny_dirs):
    from tailscope.serve._run import bind

    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "-A", str(tiny_dirs["ref"]), "-B", str(tiny_dirs["tgt"]),
                                          "--port", str(port)])
        assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in " ".join(result.output.split())
    finally:
        taken.close()
