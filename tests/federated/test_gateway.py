"""The Fleet gateway: sites reach the Fleet API and nothing else of the SuperLink.

A real SuperLink (TLS and node authentication on, as shipped) and the gateway as
:class:`~medimg_hub.federation.deployment.Federation` starts them, no SuperNodes, no training: the Control
API answers on the SuperLink's loopback port and is refused through the gateway, path tricks
are refused, and Fleet calls are forwarded (the SuperLink itself rejects an unsigned one).
Every process is stopped in ``finally``.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from medimg_hub.federation.deployment import CONNECTION, Federation
from medimg_hub.federation.gateway import REFUSED_BODY, refusal_reason
from medimg_hub.servers.process import free_port

PROTOBUF = {"content-type": "application/protobuf", "accept": "application/protobuf"}
#: Control calls ``flwr supernode ls`` / ``flwr ls`` make; an empty body is a valid empty request.
CONTROL_CALLS = ["/v1/control/list-nodes", "/v1/control/list-runs"]
#: Targets that must never reach the SuperLink, whatever it would make of them.
TRICKS = ["/v1/fleet/../control/list-nodes", "/v1/fleet/%2e%2e/control/list-nodes",
          "/v1/fleet/%2E%2E%2Fcontrol%2Flist-nodes", "/v1/fleet%2f..%2fcontrol/list-nodes",
          "/v1/fleet/./../control/list-nodes", "//v1/control/list-nodes", "/v1/fleet//../control/list-nodes",
          "/v1/fleet\\..\\control/list-nodes", "/v1/fleet/get-run?x=/v1/control/list-nodes",
          "/v1/runtime/acquire-task", "/health", "/"]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """A started SuperLink + Fleet gateway, with TLS and node authentication."""
    federation = Federation(tmp_path_factory.mktemp("gw") / "var", free_port(), [], gateway_port=free_port(),
                            tls=True, auth=True)
    try:
        federation.up()
        yield federation
    finally:
        federation.down()
    assert federation.gateway.pid() is None and federation.superlink.pid() is None


def _raw_post(federation: Federation, port: int, target: str) -> tuple[int, bytes]:
    """POST ``target`` byte for byte (no client-side normalisation), over TLS; (status, body)."""
    context = ssl.create_default_context(cafile=str(federation.ca_cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/protobuf\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_control_api_answers_on_loopback_but_is_refused_through_the_gateway(federation: Federation):
    ca = str(federation.ca_cert)
    for path in CONTROL_CALLS:
        direct = requests.post(f"https://{federation.address}{path}", data=b"", headers=PROTOBUF, verify=ca,
                               timeout=10)
        assert direct.status_code == 200, (path, direct.status_code, direct.text[:200])  # open, no user auth
        through = requests.post(f"https://{federation.fleet_address}{path}", data=b"", headers=PROTOBUF,
                                verify=ca, timeout=10)
        assert (through.status_code, through.text) == (403, REFUSED_BODY)
    refused = federation.gateway.log_file.read_text()
    assert "refused POST '/v1/control/list-nodes'" in refused


def test_flwr_cli_through_the_gateway_is_refused(federation: Federation, tmp_path: Path):
    """``flwr supernode ls`` works on the SuperLink's port and fails when pointed at the gateway."""
    assert federation.online_nodes() == []  # straight to the SuperLink: the Control API answers
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{federation.fleet_address}"\n'
        f'root-certificates = "{federation.ca_cert}"\n')
    proc = subprocess.run([federation._exe("flwr"), "supernode", "ls", CONNECTION, "--format", "json"],
                          env=federation.env() | {"FLWR_HOME": str(home)}, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    answer = json.loads(proc.stdout)  # `--format json` exits 0 and reports the failure
    assert answer["success"] is False and "403 Forbidden" in answer["error-message"], proc
    assert "refused POST '/v1/control/list-nodes'" in federation.gateway.log_file.read_text()


@pytest.mark.parametrize("target", TRICKS)
def test_path_tricks_are_refused(federation: Federation, target: str):
    assert _raw_post(federation, int(federation.gateway_port or 0), target) == (403, REFUSED_BODY.encode())


def test_fleet_calls_are_forwarded_and_node_auth_stays_with_the_superlink(federation: Federation):
    """An unsigned Fleet call passes the gateway and is rejected by the SuperLink's node authentication."""
    ca = str(federation.ca_cert)
    reply = requests.post(f"https://{federation.fleet_address}/v1/fleet/get-run", data=b"", headers=PROTOBUF,
                          verify=ca, timeout=10)
    assert reply.status_code == 401 and "Invalid SuperNode authentication" in reply.text
    assert requests.get(f"https://{federation.fleet_address}/v1/fleet/get-run", verify=ca,
                        timeout=10).status_code == 403  # Fleet calls are POSTs only


@pytest.mark.parametrize(("method", "target", "passes"), [
    ("POST", "/v1/fleet/pull-messages", True), ("POST", "/v1/fleet/send-node-heartbeat", True),
    ("POST", "/v1/control/start-run", False), ("POST", "/v1/fleet", False), ("POST", "/v1/fleet/", False),
    ("POST", "/v1/fleet/x/", False), ("POST", "/v1/fleet/x/../../control/start-run", False),
    ("POST", "http://127.0.0.1:9092/v1/fleet/pull-messages", False), ("POST", "/v1/fleet/x%00", False),
    ("PUT", "/v1/fleet/pull-messages", False), ("POST", "/v1/fleet/pull-messages#x", False),
    ("POST", "/V1/FLEET/pull-messages", False),
])
def test_refusal_rules(method: str, target: str, passes: bool):
    assert (refusal_reason(method, target) is None) == passes
