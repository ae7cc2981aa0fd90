"""`make run`: the launcher starts infrastructure and services, and leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from shared.infra import Infrastructure, free_port, pid_alive, wait_until_gone
from shared.infra.launcher import SERVICES, ServiceSpec, plan_services

# A stand-in service: answers 503 on /healthz for its first requests (so the launcher must wait),
# then 200, and keeps a child of its own (which must die with it).
FAKE_SERVICE = textwrap.dedent(
    """
    import http.server, os, subprocess, sys

    port = int(os.environ["FAKE_HTTP_PORT"])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(os.environ["FAKE_STATE_FILE"], "w") as state:
        addresses = [os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["MONGODB_URL"]]
        state.write(" ".join([str(child.pid), *addresses]))
    if os.environ.get("FAKE_FAIL"):
        sys.exit(3)
    calls = 0

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            global calls
            calls += 1
            ready = self.path == "/healthz" and calls > 2
            self.send_response(200 if ready else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)


@pytest.fixture
def fake_service(tmp_path: Path) -> Path:
    package = tmp_path / "pkgs" / "fakesvc"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_SERVICE)
    return tmp_path / "pkgs"


def _run_launcher(
    tmp_path: Path, packages: Path, port: int, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / "launcher.out"
    script = (
        "import sys\n"
        "from shared.infra.launcher import ServiceSpec, main\n"
        f"spec = ServiceSpec('fake', 'fakesvc', {port}, 'FAKE_HTTP_PORT')\n"
        "sys.exit(main(sys.argv[1:], services=[spec]))\n"
    )
    child_env = {
        **os.environ,
        **env,
        "PYTHONPATH": os.pathsep.join([str(packages), os.environ.get("PYTHONPATH", "")]),
        "FAKE_STATE_FILE": str(tmp_path / "fake.state"),
    }
    argv = [sys.executable, "-c", script, "--kafka-port", "0", "--mongodb-port", "0"]
    argv += ["--log-dir", str(tmp_path / "logs"), "--ready-within", "20"]
    with out.open("wb") as sink:
        proc = subprocess.Popen(argv, env=child_env, stdout=sink, stderr=subprocess.STDOUT)
    return proc, out


def _wait_for_line(out: Path, proc: subprocess.Popen[bytes], pattern: str, within: float) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = out.read_text()
        if re.search(pattern, text, re.MULTILINE):
            return text
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no line matching {pattern!r}; output so far:\n{out.read_text()}")


@pytest.mark.integration
def test_launcher_waits_for_healthz_and_sigterm_leaves_no_process(
    tmp_path: Path, fake_service: Path
) -> None:
    port = free_port()
    env = {"KAFKA_BOOTSTRAP_SERVERS": "", "MONGODB_URL": "", "USE_TESTCONTAINERS": ""}
    proc, out = _run_launcher(tmp_path, fake_service, port, env)
    try:
        text = _wait_for_line(out, proc, r"^ready", within=60)
        # Ready means the service answered 200 (after its deliberate 503s).
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert f"fake: http://127.0.0.1:{port} (pid " in text
        pids = [int(p) for p in re.findall(r"pid (\d+)", text)]
        assert len(pids) == 3  # kafka, mongodb, the service
        grandchild, kafka, mongodb = (tmp_path / "fake.state").read_text().split(" ")
        # The service got the embedded servers' addresses.
        assert re.search(rf"kafka: {re.escape(kafka)} \(embedded", text)
        assert f"mongodb: {mongodb} (embedded" in text
        everything = [proc.pid, *pids, int(grandchild)]
        assert all(pid_alive(pid) for pid in everything)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert wait_until_gone(everything, timeout=5) == []
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.integration
def test_a_service_that_dies_during_startup_fails_the_run_and_is_cleaned_up(
    tmp_path: Path, fake_service: Path, infrastructure: Infrastructure
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap_servers,
        "MONGODB_URL": infrastructure.mongodb_url,
        "FAKE_FAIL": "1",
    }
    proc, out = _run_launcher(tmp_path, fake_service, free_port(), env)
    try:
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.read_text()
    assert "startup failed: fake" in text
    assert "(configured)" in text
    grandchild = int((tmp_path / "fake.state").read_text().split(" ")[0])
    assert wait_until_gone([grandchild], timeout=5) == []
    # The configured infrastructure is somebody else's: still there.
    assert all(pid_alive(pid) for pid in infrastructure.pids)


def test_plan_skips_missing_services_and_wires_the_simulator() -> None:
    present = {"wallet", "ipn_gateway", "ipn_gateway.simulator"}
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "WALLET_HTTP_PORT": "9101"}
    plan = plan_services(SERVICES, env, exists=lambda spec: spec.module in present)
    assert [(p.spec.name, p.port) for p in plan] == [
        ("nowpayments-simulator", 8010),
        ("wallet", 9101),
        ("ipn-gateway", 8002),
    ]
    gateway = plan[2].env
    assert gateway["NOWPAYMENTS_API_URL"] == "http://127.0.0.1:8010"
    assert gateway["IPN_GATEWAY_HTTP_PORT"] == "8002"
    assert gateway["KAFKA_BOOTSTRAP_SERVERS"] == "k:9092"
    assert plan[1].env["WALLET_HTTP_PORT"] == "9101"


def test_plan_uses_a_real_nowpayments_url_instead_of_the_simulator() -> None:
    env = {"NOWPAYMENTS_API_URL": "https://api.example.test"}
    plan = plan_services(SERVICES, env, exists=lambda spec: True)
    assert "nowpayments-simulator" not in [p.spec.name for p in plan]
    assert all(p.env["NOWPAYMENTS_API_URL"] == "https://api.example.test" for p in plan)


def test_a_service_exists_only_with_a_main_module(fake_service: Path) -> None:
    sys.path.insert(0, str(fake_service))
    try:
        assert ServiceSpec("fake", "fakesvc", 1, "X").exists()
        assert not ServiceSpec("nope", "no_such_package_here", 1, "X").exists()
        assert not ServiceSpec("pkg", "shared", 1, "X").exists()  # a package without __main__
    finally:
        sys.path.remove(str(fake_service))


@pytest.mark.parametrize("staging", ["false", "False", "0", "no"])
def test_production_never_starts_the_simulator(staging: str) -> None:
    """Even with NOWPAYMENTS_API_URL unset: the gateway then refuses to start, which is the point
    (a production gateway must not quietly talk to the development simulator)."""
    env = {"IS_STAGING": staging}
    plan = plan_services(SERVICES, env, exists=lambda spec: True)
    names = [p.spec.name for p in plan]
    assert "nowpayments-simulator" not in names
    assert "ipn-gateway" in names
    assert all("NOWPAYMENTS_API_URL" not in p.env for p in plan)
    staging_plan = plan_services(SERVICES, {"IS_STAGING": "true"}, exists=lambda spec: True)
    assert "nowpayments-simulator" in [p.spec.name for p in staging_plan]
