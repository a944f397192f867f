"""``toposched serve`` configuration and command line."""

from __future__ import annotations

import pytest

from models.errors import SpecError
from scheduler import cli
from scheduler.serve_config import ServeConfig, load_serve_config


def test_defaults_match_kube_scheduler():
    cfg = ServeConfig()
    le = cfg.leader_election
    assert (le.lease_duration_s, le.renew_deadline_s, le.retry_period_s) == (15.0, 10.0, 2.0)
    assert (cfg.backoff.initial_s, cfg.backoff.max_s) == (1.0, 10.0)
    assert cfg.scheduler_name == "toposched" and cfg.levels is None
    assert (cfg.api_qps, cfg.api_burst) == (0.0, 100)  # no client-side limit unless asked for


def test_example_config_in_deploy_is_valid(tmp_path):
    from pathlib import Path

    import yaml

    cm = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "scheduler" / "configmap.yaml").read_text())
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    cfg = load_serve_config(path)
    assert [lv.name for lv in cfg.levels] == ["block", "rack"]


@pytest.mark.parametrize("text,where", [
    ("leader_election: {lease_duration_s: 5, renew_deadline_s: 10}\n", "leader_election"),
    ("backoff: {initial_s: 5, max_s: 1}\n", "backoff"),
    ("levels: [{name: Rack}]\n", "levels[0].name"),
    ("bind_workers: 0\n", "bind_workers"),
    ("unknown_key: 1\n", "unknown_key"),
    ("assignment_write: sometimes\n", "assignment_write"),
    ("api_qps: -1\n", "api_qps"),
    ("api_burst: 0\n", "api_burst"),
    ("workload_mix: {publish_every: 0}\n", "workload_mix.publish_every"),
    ("workload_mix: {coverage: 1.5}\n", "workload_mix.coverage"),
    ("workload_mix: {half_lfe_pods: 10}\n", "workload_mix.half_lfe_pods"),
    ("leader_election: {lease_name: Topo_Sched}\n", "leader_election.lease_name: 'Topo_Sched' is not a Lease name"),
    ("leader_election: {lease_namespace: a.b}\n", "leader_election.lease_namespace: 'a.b' is not a namespace"),
    ("levels: [{name: block, label: example.com/sw}, {name: rack, label: example.com/sw}]\n",
     "levels[1].label: 'example.com/sw' of level 'rack' is already the label of level 'block' (levels[0])"),
    ("levels: [{name: rack}, {name: rack, label: example.com/rack}]\n", "levels: duplicate level names"),
    ("levels: [{name: region, label: topology.kubernetes.io/zone}, {name: zone}]\n",
     "levels[1]: level 'zone' gives no label, and the well-known 'topology.kubernetes.io/zone' it falls back to "
     "is already the label of level 'region' (levels[0])"),
], ids=["lease-timings", "backoff-order", "level-name", "workers", "extra-key", "literal", "qps", "burst",
        "mix-publish", "mix-coverage", "mix-typo", "lease-name", "lease-namespace", "level-label-twice",
        "level-name-twice", "level-fallback-label-taken"])
def test_bad_config_names_the_file_and_path(tmp_path, text, where):
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as exc:
        load_serve_config(path)
    assert str(path) in str(exc.value) and where in str(exc.value)


def test_missing_config_file_is_a_user_error(capsys, tmp_path):
    assert cli.main(["serve", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_no_cluster_and_no_kubeconfig_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.main(["serve", "--mode", "scheduler"]) == 2
    err = capsys.readouterr().err
    assert "in-cluster config" in err and "--kubeconfig" in err


@pytest.mark.parametrize("port", ["70000", "-5"])
def test_a_command_line_override_is_validated_like_the_file(capsys, port):
    assert cli.main(["serve", "--metrics-port", port, "--kubeconfig", "unused"]) == 2
    assert "command line: metrics_port" in capsys.readouterr().err


def test_the_status_server_listens_on_ipv6_and_names_a_port_in_use():
    import socket
    import urllib.request

    from scheduler.server import StatusServer

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    ok = lambda: (True, "ok")  # noqa: E731
    try:
        server = StatusServer("::1", 0, lambda: (b"", "text/plain"), ok, ok).start()
    except SpecError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    try:
        assert urllib.request.urlopen(f"http://[::1]:{server.port}/healthz", timeout=5).read() == b"ok\n"
        with pytest.raises(SpecError, match="cannot listen on ::1:"):
            StatusServer("::1", server.port, lambda: (b"", "text/plain"), ok, ok)
    finally:
        server.stop()
