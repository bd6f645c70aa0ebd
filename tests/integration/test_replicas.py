"""Several Tritons behind one gateway, as `make up REPLICAS=3` runs them: the serve CLI with
three real tritonservers and the gateway in front, under steady callers. A replica SIGKILLed
costs no caller an error (the gateway retries elsewhere and ejects it), the serve CLI starts it
again and the gateway takes it back; a rolling restart of all three (`make restart`) costs no
caller an error either."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonkit.gateway.auth import ensure_dev_keys
from tritonkit.gateway.settings import DEFAULT_KEYS_FILE
from tritonkit.serve.fleet import PORT_STRIDE
from tritonkit.serve.ports import free_port
from tritonkit.tabular.contract import contract

CHURN = contract("churn")
ALL_FEATURES = CHURN.features



REPLICAS = 3


def _free_base() -> int:
    """A port p with p, p+1, p+2 free for each replica (HTTP, gRPC, metrics at + 100 x i)."""
    for _ in range(200):
        base = free_port()
        ports = [base + offset + PORT_STRIDE * i for i in range(REPLICAS) for offset in range(3)]
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free port range for the replicas")


class Stack:
    """The serve CLI with REPLICAS tritonservers and the gateway; what its banner said."""

    def __init__(self, process: subprocess.Popen[str], banner: str, gateway: str, key: str,
                 admin_key: str, base: int, pid_file: Path) -> None:
        self.process, self.banner, self.gateway = process, banner, gateway
        self.key, self.admin_key, self.base, self.pid_file = key, admin_key, base, pid_file

    def replica_pids(self) -> dict[int, int]:
        """Replica index -> pid of its tritonserver (a child of the serve CLI)."""
        found = {}
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        for pid in map(int, children.read_text().split()):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for i in range(REPLICAS):
                if f"--http-port={self.base + PORT_STRIDE * i}".encode() in argv:
                    found[i] = pid
        return found

    def replicas(self) -> list[dict[str, Any]]:
        request = urllib.request.Request(f"{self.gateway}/admin/replicas",
                                         headers={"X-API-Key": self.admin_key})
        with urllib.request.urlopen(request, timeout=10) as response:
            replicas: list[dict[str, Any]] = json.loads(response.read())["replicas"]
        return replicas

    def served_by(self, index: int) -> float:
        """Requests replica `index` answered on churn_packed (its Triton's counter)."""
        port = self.base + 2 + PORT_STRIDE * index
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        found = re.findall(r'^nv_inference_request_success\{model="churn_packed",version="1"\} '
                           r'(\S+)$', text, re.M)
        return float(found[0]) if found else 0.0


@pytest.fixture(scope="module")
def stack(repositories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("replicas")
    base, gateway_port = _free_base(), free_port()
    pid_file = folder / "serve.pid"
    process = subprocess.Popen(
        [sys.executable, "-m", "tritonkit.serve.cli", "--model-repository",
         str(repositories["embedded"]), "--replicas", str(REPLICAS), "--http-port", str(base),
         "--grpc-port", str(base + 1), "--metrics-port", str(base + 2),
         "--log-file", str(folder / "tritonserver.log"),
         "--admin-key-file", str(folder / "admin-key"), "--no-monitor",
         "--gateway-port", str(gateway_port), "--pid-file", str(pid_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    banner = ""
    reader: threading.Thread | None = None
    try:
        while "Try it" not in banner:
            line = process.stdout.readline()  # type: ignore[union-attr]
            assert line, f"serve CLI exited early:\n{banner}"
            banner += line
        key = re.search(r"X-API-Key: (\S+)'", banner)
        assert key, banner
        # the development admin key, beside the caller's in make up's store (make api-key)
        admin_key = ensure_dev_keys(DEFAULT_KEYS_FILE)["admin"]
        # drain the CLI's output so that it never blocks on a full pipe
        reader = threading.Thread(target=process.stdout.read,  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        yield Stack(process, banner, f"http://127.0.0.1:{gateway_port}", key.group(1),
                    admin_key, base, pid_file)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=90) == 0
        finally:
            if process.poll() is None:
                process.kill()
            if reader is not None:
                reader.join(timeout=10)
            process.stdout.close()  # type: ignore[union-attr]


class Callers:
    """`threads` callers of /predict, one request after another (10 ms apart), every answer
    kept."""

    def __init__(self, stack: Stack, customers: list[dict[str, Any]], threads: int = 4) -> None:
        self.answers: list[tuple[float, int, Any]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(stack, customers[i::threads]),
                                          daemon=True) for i in range(threads)]

    def _run(self, stack: Stack, customers: list[dict[str, Any]]) -> None:
        i = 0
        while not self._stop.is_set():
            customer = customers[i % len(customers)]
            features = {name: customer[name] for name in ALL_FEATURES}
            features["seniorcitizen"] = int(features["seniorcitizen"])
            body = json.dumps({"customer_id": customer["customerid"],
                               "features": features}).encode()
            request = urllib.request.Request(
                f"{stack.gateway}/predict", data=body,
                headers={"X-API-Key": stack.key, "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = (response.status, json.loads(response.read()))
            except urllib.error.HTTPError as exc:
                with exc:
                    answer = (exc.code, exc.read().decode())
            except OSError as exc:
                answer = (0, repr(exc))
            self.answers.append((time.monotonic(), *answer))
            i += 1
            time.sleep(0.01)  # <= 100 requests/s a thread: under make up's 500/s per key

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def failed(self) -> list[tuple[float, int, Any]]:
        """Answers that were not a 200 from Triton (an error, or the fallback's)."""
        return [a for a in self.answers if a[1] != 200 or a[2].get("degraded")]


def _until(condition: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_sigkilled_replica_costs_no_request_and_comes_back_into_rotation(
        stack: Stack, customers: list[dict[str, Any]]) -> None:
    assert f"{REPLICAS} replicas behind the gateway" in stack.banner
    assert [r["state"] for r in stack.replicas()] == ["up"] * REPLICAS
    pids = stack.replica_pids()
    assert sorted(pids) == list(range(REPLICAS)), pids
    with Callers(stack, customers[:200]) as callers:
        _until(lambda: len(callers.answers) >= 100, "no answers before the kill", 60)
        killed_at = time.monotonic()
        os.kill(pids[1], signal.SIGKILL)
        _until(lambda: stack.replicas()[1]["state"] == "ejected", "replica 1 not ejected", 30)
        ejected_after = time.monotonic() - killed_at
        _until(lambda: stack.replica_pids().get(1) not in (None, pids[1]),
               "replica 1 was not started again", 90)
        _until(lambda: stack.replicas()[1]["state"] == "up", "replica 1 not back in rotation",
               90)
        back_after = time.monotonic() - killed_at
        served = stack.served_by(1)  # the restarted server's own counter, from 0
        _until(lambda: stack.served_by(1) > served + 20, "replica 1 takes no traffic", 60)
    assert len(callers.answers) > 300
    assert callers.failed() == [], callers.failed()[:5]
    print(f"SIGKILL: {len(callers.answers)} requests, 0 failed; replica ejected "
          f"{ejected_after:.1f} s and back in rotation {back_after:.1f} s after the kill")


def test_rolling_restart_of_every_replica_costs_no_request(
        stack: Stack, customers: list[dict[str, Any]]) -> None:
    before = stack.replica_pids()
    with Callers(stack, customers[200:400]) as callers:
        _until(lambda: len(callers.answers) >= 100, "no answers before the restart", 60)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "tritonkit.serve.cli", "--rolling-restart", "--pid-file",
             str(stack.pid_file)], capture_output=True, text=True, timeout=600, check=False)
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert "restarted replica(s) 0, 1, 2 one by one" in done.stdout
        time.sleep(1)
    after = stack.replica_pids()
    assert sorted(after) == list(range(REPLICAS))
    assert all(after[i] != before[i] for i in range(REPLICAS)), (before, after)
    assert [r["state"] for r in stack.replicas()] == ["up"] * REPLICAS
    assert len(callers.answers) > 300
    assert callers.failed() == [], callers.failed()[:5]
    print(f"rolling restart of {REPLICAS} replicas in {took:.0f} s: "
          f"{len(callers.answers)} requests, 0 failed")
