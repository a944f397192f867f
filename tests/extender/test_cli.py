"""``toposched serve --mode extender``: bad flags are one-line errors (exit 2) before anything connects."""

from __future__ import annotations

import pytest

from scheduler.cli import main


@pytest.mark.parametrize(("argv", "message"), [
    (["--listen", "8888"], "--listen '8888': expected HOST:PORT"),
    (["--tls-cert", "a.crt"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "missing.crt", "--tls-key", "missing.key"], "--tls-cert missing.crt: no such file"),
    (["--url-prefix", "/a?b"], "--url-prefix '/a?b': a URL path only"),
    (["--max-body-mib", "0"], "--max-body-mib 0.0: must be positive"),
], ids=["listen", "tls-pair", "tls-missing", "prefix", "body-cap"])
def test_bad_extender_flags(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--mode", "extender", "--kubeconfig", "nowhere", *argv]) == 2
    assert message in capsys.readouterr().err
