"""Rollouts on the real stack: two tritonservers serving a repository with four versions of
`churn_packed` (1 stable; 2 the same model that says "2"; 3 failing the callers' requests;
4 drifting: +1.5 on the logit), the gateway in front of both, Locust's gateway users as steady
load and test callers with many customer ids checking the split and its stickiness. The
rollout command (`python -m tritonkit.rollout.cli`) drives each strategy as `make rollout`
would: a good canary goes 5 -> 25 -> 100 % with every answer a 200 from Triton; a failing or
drifting canary is rolled back at its first gate with an alert; blue-green switches and
switches back; a rolling update goes replica by replica. The tests run in file order: each
starts from the state the previous one left."""

from __future__ import annotations

import csv
import json
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tritonkit.gateway.auth import ensure_dev_keys
from tritonkit.gateway.process import GatewayProcess
from tritonkit.gateway.wire import MODEL_NAME
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import TritonServer
from tritonkit.serve.stack import AlertmanagerProcess
from tritonkit.spec import TabularClassifier
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.contract import contract
from tritonkit.tabular.export import append_head, probability_of

from ..support import serve

CHURN = contract("churn")
ALL_FEATURES = CHURN.features



ADMIN_KEY = secrets.token_urlsafe(32)
#: version -> what it does
VERSIONS = {"2": "good", "3": "errors", "4": "drifts"}
SOAK = ["--soak-s", "4", "--max-wait-s", "120"]
#: The test callers, each with its own customer ids. The canary's share of their answers in a
#: step has a binomial spread: ~3,500 answers in a 10 s step at 25 % put 2 points at 2.9 sd.
CALLERS = 3
CANARY_SOAK = ["--soak-s", "10", "--max-wait-s", "120"]
BROKEN_STEP = '''

# --- version 3 of the rollout test: fails the callers' requests once warm -------------------
import step_errors as _step_errors  # noqa: E402

_answer = TritonPythonModel.execute


def _failing(self, requests):
    self._calls = getattr(self, "_calls", 0) + 1
    responses = _answer(self, requests)
    if self._calls <= 2:  # Triton's model_warmup requests: answered, or it would not load
        return responses
    return [response if _step_errors.is_probe(request) else pb_utils.InferenceResponse(
        error=pb_utils.TritonError("version 3 fails on purpose")) for request, response in
        zip(requests, responses)]


TritonPythonModel.execute = _failing
'''


def _add_version(repository: Path, version: str, kind: str, core: onnx.ModelProto,
                 thresholds: Any) -> None:
    step = repository / MODEL_NAME
    folder = step / version
    shutil.copytree(step / "1", folder)
    if kind == "drifts":  # the same model with +1.5 on its logit: many more high risks
        core = onnx.ModelProto.FromString(core.SerializeToString())
        sigmoid = next(n for n in core.graph.node if n.output[0] == probability_of(core))
        logit = sigmoid.input[0]
        sigmoid.input[0] = "drifted_logit"
        core.graph.initializer.append(numpy_helper.from_array(
            np.array([[1.5]], dtype=np.float32), "drift_shift"))
        core.graph.node.insert(list(core.graph.node).index(sigmoid), helper.make_node(
            "Add", [logit, "drift_shift"], ["drifted_logit"]))
    onnx.save(append_head(core, thresholds, version), folder / "model.onnx")
    if kind == "errors":
        with open(folder / "model.py", "a") as handle:
            handle.write(BROKEN_STEP)


@pytest.fixture(scope="module")
def versioned(repositories: dict[str, Path], artifacts: TabularArtifacts,
              churn_spec: TabularClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("rollout") / "repository"
    shutil.copytree(repositories["embedded"], repository)
    core = onnx.load(artifacts.require_variant(churn_spec.variants.serve["embedded"]))
    for version, kind in VERSIONS.items():
        _add_version(repository, version, kind, core, churn_spec.risk_thresholds)
    config = repository / MODEL_NAME / "config.pbtxt"
    # started with version 1 alone (latest would load 4, the highest folder)
    text = config.read_text()
    policy = "version_policy {\n  latest {\n    num_versions: 1\n  }\n}"
    assert policy in text
    config.write_text(text.replace(policy, "version_policy {\n  specific {\n    versions: 1\n"
                                           "  }\n}"))
    return repository


@pytest.fixture(scope="module")
def tritons(versioned: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[list[TritonServer]]:
    servers = [serve(versioned, tmp_path_factory.mktemp(f"rollout-triton-{i}"),
                     admin_key=ADMIN_KEY) for i in range(2)]
    yield servers
    for server in servers:
        server.stop(check=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("rollout-keys") / "keys.json"
    return path, ensure_dev_keys(path)


@pytest.fixture(scope="module")
def gateway(tritons: list[TritonServer], keys: tuple[Path, dict[str, str]],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("rollout-gateway")
    (folder / "triton-admin-key").write_text(ADMIN_KEY + "\n")
    urls = ",".join(t.http_url.removeprefix("http://") for t in tritons)
    with GatewayProcess(
            triton_url=urls, protocol="http", port=free_port(), keys_file=keys[0],
            dev_mode=True, log_file=folder / "gateway.log",
            extra_args=["--triton-admin-key-file", str(folder / "triton-admin-key"),
                        "--rate-limit-per-key", "1000000/minute", "--rate-limit-global",
                        "1000000/minute", "--replica-health-interval-s", "0.5"]) as process:
        yield process


class Load:
    """Locust's gateway users (steady load, its failure count read from its CSV) and test
    callers giving many customer ids, whose answers are kept (time, id, version, degraded)."""

    def __init__(self, gateway: GatewayProcess, key: str, customers: list[dict[str, Any]],
                 folder: Path) -> None:
        self.gateway, self.key, self.customers, self.folder = gateway, key, customers, folder
        self.answers: list[tuple[float, str, int, str, bool]] = []
        self._stop = threading.Event()
        self._callers = [threading.Thread(target=self._call, args=(n,), daemon=True)
                         for n in range(CALLERS)]
        self._locust: subprocess.Popen[str] | None = None

    def _call(self, offset: int) -> None:
        n = offset
        while not self._stop.is_set():
            customer = self.customers[n % len(self.customers)]
            features = {name: customer[name] for name in ALL_FEATURES}
            features["seniorcitizen"] = int(features["seniorcitizen"])
            customer_id = f"C{n % 50_000:06d}"
            request = urllib.request.Request(
                f"{self.gateway.url}/predict", data=json.dumps(
                    {"customer_id": customer_id, "features": features}).encode(),
                headers={"X-API-Key": self.key, "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
                    self.answers.append((time.time(), customer_id, 200,
                                         answer["model_version"], answer["degraded"]))
            except urllib.error.HTTPError as exc:
                with exc:
                    self.answers.append((time.time(), customer_id, exc.code, "", False))
            n += CALLERS

    def __enter__(self) -> Load:
        self._locust = subprocess.Popen(
            [str(Path(sys.executable).with_name("locust")), "-f",
             "loadtests/locustfile_gateway.py", "--headless", "-u", "1", "-r", "1", "-t",
             "900s", "--host", self.gateway.url, "--api-key", self.key, "--csv",
             str(self.folder / "locust"), "--only-summary"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        for caller in self._callers:
            caller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for caller in self._callers:
            caller.join(timeout=60)
        assert self._locust is not None
        self._locust.send_signal(signal.SIGTERM)
        self._locust.wait(timeout=60)

    def locust_counts(self) -> tuple[int, int]:
        """(requests, failures) Locust counted over the whole run."""
        with open(self.folder / "locust_stats.csv") as handle:
            row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
        return int(row["Request Count"]), int(row["Failure Count"])

    def between(self, start: float, end: float) -> list[tuple[float, str, int, str, bool]]:
        return [a for a in list(self.answers) if start <= a[0] <= end]


def _rollout(gateway: GatewayProcess, admin_key_file: Path, tmp_path: Path, *args: str,
             alertmanager: AlertmanagerProcess | None = None
             ) -> tuple[int, dict[str, Any], str]:
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "tritonkit.rollout.cli", "--gateway-url", gateway.url,
               "--admin-key-file", str(admin_key_file), "--report", str(report), *args]
    if alertmanager is not None:
        command += ["--alertmanager-url", alertmanager.url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    output = done.stdout + done.stderr
    return done.returncode, json.loads(report.read_text()) if report.exists() else {}, output


def _admin(gateway: GatewayProcess, key: str, path: str) -> Any:
    request = urllib.request.Request(f"{gateway.url}{path}", headers={"X-API-Key": key})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def admin_key_file(keys: tuple[Path, dict[str, str]],
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rollout-admin") / "admin-key"
    path.write_text(keys[1]["admin"] + "\n")
    return path


def _healthy(load: Load) -> None:
    """Every answer a 200; Locust counted no failure."""
    statuses = {status for _, _, status, _, _ in load.answers}
    assert statuses == {200}, statuses
    requests, failures = load.locust_counts()
    assert requests > 100 and failures == 0, (requests, failures)


def test_canary_of_a_good_version_goes_5_25_100_sticky_with_no_failed_request(
        gateway: GatewayProcess, keys: tuple[Path, dict[str, str]], admin_key_file: Path,
        customers: list[dict[str, Any]], tmp_path: Path) -> None:
    with Load(gateway, keys[1]["caller"], customers, tmp_path) as load:
        time.sleep(2)
        code, report, output = _rollout(gateway, admin_key_file, tmp_path, "--version", "2",
                                         *CANARY_SOAK)
    assert code == 0, output
    assert report["outcome"] == "promoted" and [s["weight"] for s in report["steps"]] == \
        [5.0, 25.0, 100.0], output
    _healthy(load)
    assert not any(degraded for *_, degraded in load.answers)
    on_two: set[str] = set()
    for step in report["steps"]:
        answers = load.between(step["started_at"] + 0.5, step["ended_at"])
        versions: dict[str, set[str]] = defaultdict(set)
        for _, customer, _, version, _ in answers:
            versions[customer].add(version)
        assert all(len(v) == 1 for v in versions.values()), "a customer saw two versions"
        share = 100 * sum(v == "2" for *_, v, _ in answers) / len(answers)
        print(f"step {step['weight']:g} %: test callers {share:.2f} % on version 2 of "
              f"{len(answers)} answers; the gateway counted {step['observed_share']:.2f} % of "
              f"{step['canary_rows'] + step['stable_rows']} customers")
        assert abs(share - step["weight"]) <= 2, (step["weight"], share)
        now_on_two = {c for c, v in versions.items() if v == {"2"}}
        assert on_two & set(versions) <= now_on_two, "a customer left the canary"
        on_two = now_on_two
    state = _admin(gateway, keys[1]["admin"], "/admin/rollout")
    assert state["weights"] == {"2": 100.0} and state["stable"] == "2"
    assert all(v == ["2"] for v in state["loaded"].values()), state["loaded"]


@pytest.mark.parametrize(("version", "failing"), [("3", "errors"), ("4", "drift")])
def test_canary_of_a_broken_version_is_rolled_back_at_its_first_gate_with_an_alert(
        gateway: GatewayProcess, keys: tuple[Path, dict[str, str]], admin_key_file: Path,
        alertmanager: AlertmanagerProcess, customers: list[dict[str, Any]], tmp_path: Path,
        version: str, failing: str) -> None:
    with Load(gateway, keys[1]["caller"], customers, tmp_path) as load:
        time.sleep(2)
        started = time.time()
        code, report, output = _rollout(gateway, admin_key_file, tmp_path, "--version",
                                        version, *SOAK, alertmanager=alertmanager)
        ended = time.time()
        time.sleep(1)
        after = load.between(ended, time.time())
    assert code == 1, output
    assert report["outcome"] == "rolled_back" and len(report["steps"]) == 1, output
    step = report["steps"][0]
    assert step["weight"] == 5.0 and step["status"] == "fail"
    assert any(reason.startswith(f"{failing}:") for reason in step["reasons"]), step["reasons"]
    _healthy(load)  # the failing canary's customers got the fallback's answers, as 200s
    during = load.between(started, ended)
    degraded = sum(d for *_, d in during) / len(during)
    assert degraded <= 0.07, degraded  # no more than the 5 % step's customers
    assert after and {v for *_, v, _ in after} == {"2"}  # everyone back on the stable one
    state = _admin(gateway, keys[1]["admin"], "/admin/rollout")
    assert state["weights"] == {"2": 100.0}
    assert all(version not in v for v in state["loaded"].values())  # unloaded
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10) as response:
        assert f'gateway_rollout_rollbacks_total{{version="{version}"}} 1.0' in \
            response.read().decode()
    alerts = [a for a in alertmanager.alerts()
              if a["labels"].get("alertname") == "TritonGatewayRolloutRolledBack"
              and a["labels"].get("version") == version]
    assert alerts, "no TritonGatewayRolloutRolledBack alert reached Alertmanager"
    print(f"version {version} ({failing}) rolled back {1e3 * report['rollback_s']:.0f} ms "
          f"after its gate failed, {step['seconds']:.1f} s into the 5 % step; "
          f"{degraded:.1%} of the test callers' answers came from the fallback meanwhile")


def test_blue_green_switches_and_switches_back_with_no_failed_request(
        gateway: GatewayProcess, keys: tuple[Path, dict[str, str]], admin_key_file: Path,
        customers: list[dict[str, Any]], tmp_path: Path) -> None:
    with Load(gateway, keys[1]["caller"], customers, tmp_path) as load:
        time.sleep(2)
        code, report, output = _rollout(gateway, admin_key_file, tmp_path, "--version", "1",
                                        "--strategy", "blue-green", *SOAK)
        assert code == 0 and report["outcome"] == "switched", output
        switched = report["steps"][0]
        back_code, back, back_output = _rollout(gateway, admin_key_file, tmp_path,
                                                "--version", "2", "--strategy", "blue-green",
                                                *SOAK)
        assert back_code == 0 and back["outcome"] == "switched", back_output
        time.sleep(1)
    _healthy(load)
    assert not any(degraded for *_, degraded in load.answers)
    on_one = load.between(switched["started_at"] + 0.2, switched["ended_at"])
    assert on_one and {v for *_, v, _ in on_one} == {"1"}
    after = load.between(back["steps"][0]["started_at"] + 0.2, back["steps"][0]["ended_at"])
    assert after and {v for *_, v, _ in after} == {"2"}
    state = _admin(gateway, keys[1]["admin"], "/admin/rollout")
    assert state["weights"] == {"2": 100.0}
    assert all(v == ["1", "2"] for v in state["loaded"].values())  # both, for the next switch


def test_rolling_update_goes_replica_by_replica_with_no_failed_request(
        gateway: GatewayProcess, keys: tuple[Path, dict[str, str]], admin_key_file: Path,
        customers: list[dict[str, Any]], tmp_path: Path) -> None:
    key = keys[1]["admin"]
    urllib.request.urlopen(urllib.request.Request(  # one version loaded: 2
        f"{gateway.url}/admin/versions/1/unload", data=b"", headers={"X-API-Key": key}),
        timeout=120).close()
    with Load(gateway, keys[1]["caller"], customers, tmp_path) as load:
        time.sleep(2)
        code, report, output = _rollout(gateway, admin_key_file, tmp_path, "--version", "1",
                                        "--strategy", "rolling", *SOAK)
        time.sleep(1)
    assert code == 0 and report["outcome"] == "promoted", output
    assert [s["weight"] for s in report["steps"]] == [50.0, 100.0]
    _healthy(load)
    assert not any(degraded for *_, degraded in load.answers)
    versions = {v for *_, v, _ in load.answers}
    assert versions == {"1", "2"}  # both answered while the replicas changed one by one
    state = _admin(gateway, key, "/admin/rollout")
    assert all(v == ["1"] for v in state["loaded"].values()), state["loaded"]
    assert state["weights"] == {"1": 100.0}


def _predict(gateway: GatewayProcess, key: str, customer: dict[str, Any], customer_id: str,
             **headers: str) -> tuple[int, Any]:
    features = {name: customer[name] for name in ALL_FEATURES}
    features["seniorcitizen"] = int(features["seniorcitizen"])
    request = urllib.request.Request(
        f"{gateway.url}/predict", data=json.dumps({"customer_id": customer_id,
                                                   "features": features}).encode(),
        headers={"X-API-Key": key, "Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_only_an_admin_key_may_pin_the_version_that_answers(
        gateway: GatewayProcess, keys: tuple[Path, dict[str, str]],
        customers: list[dict[str, Any]]) -> None:
    caller, admin = keys[1]["caller"], keys[1]["admin"]
    status, body = _predict(gateway, caller, customers[0], "C1", **{"X-Model-Version": "1"})
    assert status == 403 and "admin key" in body["message"]
    status, body = _predict(gateway, admin, customers[0], "C1", **{"X-Model-Version": "one"})
    assert status == 400 and body["problems"][0]["field"] == "X-Model-Version"
    status, body = _predict(gateway, admin, customers[0], "C1", **{"X-Model-Version": "1"})
    assert status == 200 and body["model_version"] == "1" and not body["degraded"]


def test_weights_from_a_watched_file_route_every_gateway_alike(
        tritons: list[TritonServer], gateway: GatewayProcess,
        keys: tuple[Path, dict[str, str]], customers: list[dict[str, Any]],
        tmp_path: Path) -> None:
    """What a ConfigMap gives every gateway pod on a cluster (deploy/k8s/base/rollout.yaml)."""
    admin = keys[1]["admin"]
    urllib.request.urlopen(urllib.request.Request(  # version 2 beside 1, on both replicas
        f"{gateway.url}/admin/versions/2/load", data=b"", headers={"X-API-Key": admin}),
        timeout=300).close()
    weights = tmp_path / "rollout.json"
    weights.write_text(json.dumps({"weights": {"1": 50, "2": 50}, "stable": "1"}))
    (tmp_path / "triton-admin-key").write_text(ADMIN_KEY + "\n")
    urls = ",".join(t.http_url.removeprefix("http://") for t in tritons)
    with GatewayProcess(triton_url=urls, protocol="http", port=free_port(), keys_file=keys[0],
                        dev_mode=True, log_file=tmp_path / "gateway.log",
                        extra_args=["--rollout-file", str(weights)]) as watching:
        ids = [f"F{n:05d}" for n in range(400)]
        versions = {i: _predict(watching, keys[1]["caller"], customers[n % 50], i)[1][
            "model_version"] for n, i in enumerate(ids)}
        # the module's gateway, with the same weights by its admin API, agrees customer by
        # customer: the bucket is a hash of the id, the same in every gateway
        request = urllib.request.Request(
            f"{gateway.url}/admin/rollout", method="PUT", data=json.dumps(
                {"weights": {"1": 50, "2": 50}, "stable": "1"}).encode(),
            headers={"X-API-Key": admin, "Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).close()
        assert all(_predict(gateway, keys[1]["caller"], customers[n % 50], i)[1][
            "model_version"] == versions[i] for n, i in enumerate(ids[:100]))
        assert 150 < sum(v == "2" for v in versions.values()) < 250
        weights.write_text("{not json")
        time.sleep(2.5)
        state = _admin(watching, admin, "/admin/rollout")
        assert state["weights"] == {"1": 50.0, "2": 50.0}  # a broken file changes nothing
        weights.write_text(json.dumps({"weights": {"1": 100}, "stable": "1"}))
        deadline = time.monotonic() + 10
        while _admin(watching, admin, "/admin/rollout")["weights"] != {"1": 100.0}:
            assert time.monotonic() < deadline, "the gateway did not take the new file"
            time.sleep(0.2)
        assert {_predict(watching, keys[1]["caller"], customers[0], i)[1]["model_version"]
                for i in ids[:50]} == {"1"}
        with urllib.request.urlopen(f"{watching.url}/metrics", timeout=10) as response:
            assert "gateway_rollout_file_errors_total 1.0" in response.read().decode()
