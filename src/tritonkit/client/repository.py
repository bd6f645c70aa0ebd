"""Triton's model-repository and model-config APIs, with the admin key, for the two parts that
reload a model: the monitoring sidecar (a dead python stub) and the gateway's admin endpoint.

Workaround (Triton 2.51, docs/platform.md): a plain `load` of a model whose files did not change
is a no-op that leaves a dead stub in place, and `unload` + `load` fails every request in
between. A load whose config differs (the served config plus a `tritonkit_reloaded_at`
parameter, which the steps ignore) makes Triton load fresh instances and switch to them once
they are ready (~1.5 s here), failing no request. Where Triton runs with an admin key
(serve/server.py RESTRICTED_APIS) both the config and the load need it::

    repository = TritonRepository("http://127.0.0.1:8000", admin_key=key)
    repository.served()               # ("churn", "churn_fused", ...): the READY models
    repository.reload("churn_fused")  # raises ReloadError, saying why
    repository.versions("churn_packed")                  # {"1": "READY", "2": "UNAVAILABLE"}
    repository.load_versions("churn_packed", ["1", "2"])  # serve exactly these versions
    repository.close()

Versions side by side: the load with the served config whose `version_policy` names them
(`specific`) loads the new ones and swaps the others for fresh instances once they are ready,
failing no request (tests/integration/test_rollout.py). A version folder that is not named
stays on disk unloaded; a server that restarts applies its config.pbtxt's policy again.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tritonkit.errors import TritonKitError

#: Deadline of a model's (re)load: Triton starts the python stubs, which takes seconds.
LOAD_TIMEOUT_S = 120.0


class ReloadError(TritonKitError):
    """A reload through Triton's repository API failed; the message says why and what to do."""


class TritonRepository:
    """The repository and config calls to one Triton over HTTP, each with a timeout."""

    def __init__(self, url: str, *, admin_key: str | None = None, timeout_s: float = 5.0,
                 load_timeout_s: float = LOAD_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._load_timeout_s = load_timeout_s
        headers = {"admin-key": admin_key} if admin_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers)

    def served(self) -> tuple[str, ...]:
        """The models Triton serves now (READY in its repository index)."""
        response = self._call("POST", "/v2/repository/index", "listing the models", json={})
        return tuple(sorted(item["name"] for item in response.json()
                            if item.get("state") == "READY"))

    def config(self, model: str) -> dict[str, Any]:
        """The config Triton serves `model` with (JSON)."""
        config: dict[str, Any] = self._call("GET", f"/v2/models/{model}/config",
                                            f"reading {model}'s config").json()
        return config

    def reload(self, model: str) -> None:
        """Reload `model` with fresh instances (the served config plus one parameter)."""
        config = self.config(model)
        config.setdefault("parameters", {})["tritonkit_reloaded_at"] = {
            "string_value": f"{time.time():.3f}"}
        self._call("POST", f"/v2/repository/models/{model}/load", f"reloading {model}",
                   json={"parameters": {"config": json.dumps(config)}},
                   timeout=self._load_timeout_s)

    def versions(self, model: str) -> dict[str, str]:
        """Each version of `model` in the repository index, with its state (READY, ...)."""
        response = self._call("POST", "/v2/repository/index", "listing the models", json={})
        return {str(item.get("version", "")): str(item.get("state", ""))
                for item in response.json() if item["name"] == model}

    def load_versions(self, model: str, versions: list[str]) -> None:
        """Serve exactly `versions` of `model` (its served config with a `specific` version
        policy), returning once Triton has loaded them."""
        if not versions:
            raise ReloadError(f"loading {model}: name at least one version to serve")
        config = self.config(model)
        config["version_policy"] = {"specific": {"versions": sorted(int(v) for v in versions)}}
        config.setdefault("parameters", {})["tritonkit_reloaded_at"] = {
            "string_value": f"{time.time():.3f}"}
        self._call("POST", f"/v2/repository/models/{model}/load",
                   f"loading versions {', '.join(versions)} of {model}",
                   json={"parameters": {"config": json.dumps(config)}},
                   timeout=self._load_timeout_s)

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, what: str, **options: Any) -> httpx.Response:
        try:
            response = self._client.request(method, f"{self.url}{path}", **options)
        except httpx.HTTPError as exc:
            raise ReloadError(f"{what}: no answer from Triton at {self.url}: {exc!r}") from exc
        if response.status_code == 403:
            raise ReloadError(f"{what}: Triton refused the admin key (403): give the key of "
                              "its restricted APIs (a Triton admin key file)")
        if response.status_code != 200:
            raise ReloadError(f"{what}: Triton answered {response.status_code}: "
                              f"{' '.join(response.text.split())[:200]}")
        return response
