"""The extender HTTP server: routing, methods, content types, size cap, truncation, TLS; JSON errors, no 5xx."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from models.errors import ToposchedError
from scheduler.extender import wire
from scheduler.extender.http import ExtenderServer, normalize_prefix, parse_listen, tls_context


class EchoVerbs:
    """Answers from the request alone: keeps every node, scores 5, binds, passes victims through."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def filter(self, args):
        self.calls.append("filter")
        return wire.ExtenderFilterResult(node_names=args.candidate_names())

    def prioritize(self, args):
        self.calls.append("prioritize")
        return [wire.HostPriority(host=n, score=5) for n in args.candidate_names()]

    def bind(self, args):
        self.calls.append("bind")
        if args.pod_name == "boom":
            raise RuntimeError("handler bug")
        return wire.ExtenderBindingResult()

    def preempt(self, args):
        self.calls.append("preempt")
        return wire.ExtenderPreemptionResult(node_name_to_meta_victims=args.meta_victims())

    def is_ready(self):
        return True


@pytest.fixture
def server():
    with ExtenderServer(EchoVerbs(), url_prefix="/toposched", max_body_bytes=4096, read_timeout_s=2.0) as s:
        yield s


def _post(server, path, body, headers=None, method="POST"):
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def test_url_names_scheme_host_port_and_prefix(server):
    host, port = server.address
    assert server.url == f"http://{host}:{port}/toposched"


@pytest.mark.parametrize("verb", ["filter", "prioritize", "bind", "preempt"])
def test_every_verb_answers_200_json(server, verb):
    body = {"filter": {"Pod": {}, "NodeNames": ["a"]}, "prioritize": {"Pod": {}, "NodeNames": ["a"]},
            "bind": {"PodName": "p", "PodNamespace": "ns", "PodUID": "u", "Node": "a"},
            "preempt": {"Pod": {}, "NodeNameToMetaVictims": {}}}[verb]
    status, headers, data = _post(server, f"/toposched/{verb}", json.dumps(body))
    assert status == 200
    assert dict(headers)["Content-Type"] == "application/json"
    json.loads(data)
    assert server.verbs.calls == [verb]


def test_keep_alive_serves_many_requests_on_one_connection(server):
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    for _ in range(20):
        conn.request("POST", "/toposched/filter", body=b'{"Pod": {}, "NodeNames": ["a"]}',
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
    conn.close()


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "text"), [
    ("POST", "/toposched/nope", b"{}", {}, 404, "unknown path /toposched/nope"),
    ("POST", "/filter", b"{}", {}, 404, "unknown path /filter"),
    ("GET", "/toposched/filter", None, {}, 405, "method GET not allowed"),
    ("PUT", "/toposched/bind", b"{}", {}, 405, "method PUT not allowed"),
    ("BREW", "/toposched/bind", b"{}", {}, 405, "method BREW not allowed"),
    ("POST", "/toposched/filter", b"{}", {"Content-Type": "text/plain"}, 415, "Content-Type 'text/plain'"),
    ("POST", "/toposched/filter", b'{"Pod": {}, "NodeNames": [', {}, 400, "malformed JSON (truncated)"),
    ("POST", "/toposched/filter", b"", {}, 400, "empty request body"),
    ("POST", "/toposched/filter", b'{"Pod": 1}', {}, 422, "Pod: expected an object, got number"),
    ("POST", "/toposched/bind", b'{"PodName": "p"}', {}, 422, "PodNamespace: required"),
    ("POST", "/toposched/filter", b"x" * 5000, {}, 413, "over the 4096-byte limit"),
], ids=["unknown-verb", "outside-prefix", "get", "put", "brew", "content-type", "truncated", "empty", "wrong-type",
        "missing-field", "too-big"])
def test_bad_requests_get_a_4xx_json_error(server, method, path, body, headers, status, text):
    got, hdrs, data = _post(server, path, body, headers, method=method)
    assert got == status
    doc = json.loads(data)
    assert doc["Code"] == status
    assert text in doc["Error"]
    if status == 405:
        assert dict(hdrs)["Allow"] == "POST"
    # the server still serves
    assert _post(server, "/toposched/filter", b'{"Pod": {}, "NodeNames": []}')[0] == 200


def test_handler_bug_is_a_500_json_and_the_server_keeps_serving(server):
    status, _, data = _post(server, "/toposched/bind", json.dumps(
        {"PodName": "boom", "PodNamespace": "ns", "Node": "n"}))
    assert status == 500
    assert "internal error: RuntimeError: handler bug" in json.loads(data)["Error"]
    assert _post(server, "/toposched/filter", b'{"Pod": {}, "NodeNames": []}')[0] == 200


def test_chunked_body_is_read(server):
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    conn.request("POST", "/toposched/filter", body=iter([b'{"Pod": {},', b' "NodeNames": ["x"]}']),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 200
    assert json.loads(resp.read())["NodeNames"] == ["x"]


def test_chunked_body_over_the_cap_is_413(server):
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    conn.request("POST", "/toposched/filter", body=iter([b"x" * 3000, b"y" * 3000]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413


def test_body_shorter_than_content_length_is_400(server):
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"POST /toposched/filter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}")
        s.shutdown(socket.SHUT_WR)
        data = _recv_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert "truncated: got 2 of 100 bytes" in json.loads(body)["Error"]


def test_garbage_request_line_gets_a_json_error(server):
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = _recv_all(s)
    assert b"Bad request" in data
    assert _post(server, "/toposched/filter", b'{"Pod": {}, "NodeNames": []}')[0] == 200


def _recv_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_health_and_readiness(server):
    assert _post(server, "/healthz", None, method="GET")[0] == 200
    assert _post(server, "/toposched/readyz", None, method="GET")[0] == 200


@pytest.mark.parametrize(("text", "want"), [("", ""), ("/", ""), ("toposched", "/toposched"),
                                            ("/toposched/", "/toposched"), ("/a/b", "/a/b")])
def test_prefix_normalisation(text, want):
    assert normalize_prefix(text) == want


@pytest.mark.parametrize(("text", "want"), [("127.0.0.1:8888", ("127.0.0.1", 8888)), (":9000", ("0.0.0.0", 9000)),
                                            ("[::1]:8443", ("::1", 8443))])
def test_parse_listen(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["8888", "host:", "host:99999", "host:x"])
def test_parse_listen_rejects_bad_addresses(text):
    with pytest.raises(ToposchedError, match="expected HOST:PORT"):
        parse_listen(text)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made with openssl (the cryptography package is not a dependency)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_serving_with_a_generated_certificate(tmp_path):
    cert, key = _self_signed(tmp_path)
    with ExtenderServer(EchoVerbs(), url_prefix="/toposched", ssl_context=tls_context(cert, key)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        client_ctx = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection(*server.address, context=client_ctx, timeout=5)
        conn.request("POST", "/toposched/prioritize", body=b'{"Pod": {}, "NodeNames": ["a"]}',
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read()) == [{"Host": "a", "Score": 5}]
        # a plain-HTTP client is refused without stopping the server
        with socket.create_connection(server.address, timeout=5) as s:
            s.sendall(b"POST /toposched/filter HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            try:
                s.recv(100)
            except OSError:
                pass
        conn = http.client.HTTPSConnection(*server.address, context=client_ctx, timeout=5)
        conn.request("POST", "/toposched/filter", body=b'{"Pod": {}, "NodeNames": []}',
                     headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 200


def test_tls_files_that_do_not_exist_are_named(tmp_path):
    with pytest.raises(ToposchedError, match="--tls-cert .*: no such file"):
        tls_context(tmp_path / "nope.crt", tmp_path / "nope.key")


def test_tls_files_that_are_not_pem_are_named(tmp_path):
    (tmp_path / "a.crt").write_text("not a cert")
    (tmp_path / "a.key").write_text("not a key")
    with pytest.raises(ToposchedError, match="cannot load"):
        tls_context(tmp_path / "a.crt", tmp_path / "a.key")


def test_a_stalled_body_times_out_with_400_but_idle_connections_stay_open():
    with ExtenderServer(EchoVerbs(), url_prefix="/toposched", read_timeout_s=0.3, idle_timeout_s=5) as server:
        with socket.create_connection(server.address, timeout=5) as s:
            # idle longer than the body timeout: the connection is still served
            time.sleep(0.6)
            s.sendall(b"POST /toposched/filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{")
            data = _recv_all(s)  # no more body: the server gives up on it and closes
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400")
        assert "timed out reading a 100-byte body" in json.loads(body)["Error"]
        assert _post(server, "/toposched/filter", b'{"Pod": {}, "NodeNames": []}')[0] == 200


class NodeEcho(EchoVerbs):
    """Filter answers with the full Node objects it was given (as a non-nodeCacheCapable extender)."""

    def filter(self, args):
        self.calls.append("filter")
        return wire.ExtenderFilterResult(nodes=args.nodes)


def test_a_lone_surrogate_escape_is_a_400_json_error_and_the_server_keeps_serving(server):
    body = '{"Pod": {"metadata": {"name": "p"}}, "NodeNames": ["n1\\ud800"]}'
    status, _, data = _post(server, "/toposched/filter", body)
    assert status == 400 and "lone UTF-16 surrogate" in json.loads(data)["Error"]
    paired = '{"Pod": {"metadata": {"name": "p"}}, "NodeNames": ["n1\\ud83d\\ude00"]}'  # a valid pair is text
    status, _, data = _post(server, "/toposched/filter", paired)
    assert status == 200 and json.loads(data)["NodeNames"] == ["n1\U0001F600"]


def test_a_reply_that_cannot_be_encoded_is_a_400_json_error_not_a_dropped_connection():
    deep: dict = {}
    for _ in range(300):
        deep = {"x": deep}
    node = {"metadata": {"name": "n1"}, "status": deep}
    body = json.dumps({"Pod": {"metadata": {"name": "p"}}, "Nodes": {"items": [node]}})
    with ExtenderServer(NodeEcho(), url_prefix="/toposched") as s:
        status, _, data = _post(s, "/toposched/filter", body)
        assert status == 400 and "cannot be encoded" in json.loads(data)["Error"]
        status, _, _ = _post(s, "/toposched/filter", json.dumps({"Pod": {}, "Nodes": {"items": [
            {"metadata": {"name": "n1"}}]}}))
        assert status == 200
