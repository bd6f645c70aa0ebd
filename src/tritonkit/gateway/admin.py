"""The gateway's `/admin` routes (admin keys only, `auth.ApiKeyMiddleware`): keys, the breaker,
reloading a model, the Triton replicas, and the model versions and weights a rollout moves.

Replicas: `GET /admin/replicas`; `POST /admin/replicas/<i>/drain` (out of rotation, returns once
its calls in flight are answered) and `/enable`. Versions: `POST /admin/versions/<v>/load`
(beside the versions loaded, or `?exclusive=true` alone; on every replica or `?replica=<i>`;
returns once Triton reports it ready and it answered warm-up inferences; each replica out of
rotation meanwhile when others can answer), `/unload`. Weights:
`GET /admin/rollout` (weights, stable version, per-version counts, replicas), `PUT
/admin/rollout` `{"weights": {"1": 95, "2": 5}, "stable": "1"}`, `POST /admin/rollout/rollback`
`{"version": "2", "reason": "..."}` (the stable version takes every customer, counted in
`gateway_rollout_rollbacks_total`, which the TritonGatewayRolloutRolledBack alert reads)::

    app.include_router(admin_router(gateway, store))
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Body, Query
from fastapi.responses import Response

from tritonkit.client.repository import ReloadError
from tritonkit.gateway.auth import KeyStore
from tritonkit.gateway.errors import (
    InvalidRequest,
    NotFound,
    NotReady,
    ReloadFailed,
    Reply,
    Unavailable,
    UpstreamError,
)
from tritonkit.gateway.replicas import ReplicaState
from tritonkit.gateway.versions import RolloutError, check_version
from tritonkit.gateway.wire import MODEL_NAME

if TYPE_CHECKING:
    from tritonkit.gateway.core import Gateway

_SECURITY: dict[str, Any] = {"security": [{"ApiKey": []}]}
#: Inferences each replica answers on a version just loaded before it counts as warm.
WARMUP_CALLS = 8


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json",
                    headers=headers)


def as_response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type="application/json",
                    headers=dict(reply.headers))


def _no_repository() -> Unavailable:
    return Unavailable("no Triton HTTP address for the repository API: start the gateway with "
                       "--triton-admin-url (or --protocol http)")


def admin_router(gateway: Gateway, store: Any) -> APIRouter:
    """The `/admin` routes of `gateway`; `store.keys` is the key store they may replace."""
    router = APIRouter(prefix="/admin")
    settings = gateway.settings

    @router.post("/keys/reload", summary="Re-read the key store (admin key)",
                 openapi_extra=_SECURITY)
    async def reload_keys() -> dict[str, int]:
        store.keys = KeyStore.load(settings.key_store)
        return {"keys": len(store.keys)}

    @router.post("/breaker/reset", summary="Close the breaker now (admin key)",
                 openapi_extra=_SECURITY)
    async def reset_breaker() -> dict[str, str]:
        gateway.breaker.reset()
        return {"breaker": gateway.breaker.state.name.lower()}

    @router.post("/models/{name}/load",
                 summary="Reload a model Triton serves with fresh instances, on every replica "
                         "(admin key)", openapi_extra=_SECURITY)
    async def load_model(name: str) -> Response:
        """The cure for a dead python stub: the model's served config plus one parameter,
        loaded with Triton's admin key (tritonkit.client.repository)."""
        if gateway.repositories is None:
            raise _no_repository()
        try:
            for repository in gateway.repositories:
                served = await asyncio.to_thread(repository.served)
                if name not in served:
                    raise NotFound(f"Triton at {repository.url} serves no model {name!r}",
                                   problems=[{"field": "name", "message": "expected one of "
                                              f"{', '.join(served)}"}])
                await asyncio.to_thread(repository.reload, name)
        except ReloadError as exc:
            raise ReloadFailed(str(exc)) from exc
        return json_response(200, {"loaded": name})

    # -- replicas -----------------------------------------------------------------------------
    def _replicas() -> list[dict[str, Any]]:
        assert gateway.upstream is not None
        return [r.as_dict() for r in gateway.upstream.replicas.replicas]

    @router.get("/replicas", summary="The Triton replicas and their state (admin key)",
                openapi_extra=_SECURITY)
    async def replicas() -> Response:
        return json_response(200, {"replicas": _replicas()})

    @router.post("/replicas/{index}/drain",
                 summary="Take a replica out of rotation; returns once its calls in flight "
                         "are answered (admin key)", openapi_extra=_SECURITY)
    async def drain(index: int, timeout_s: float = Query(30.0, gt=0, le=600)) -> Response:
        assert gateway.upstream is not None
        try:
            drained = await gateway.upstream.replicas.drain(index, timeout_s)
        except IndexError as exc:
            raise InvalidRequest.of_field("index", str(exc), 404) from None
        except ValueError as exc:
            raise InvalidRequest.of_field("index", str(exc), 409) from None
        return json_response(200, {"drained": drained, "replicas": _replicas()})

    @router.post("/replicas/{index}/enable", summary="Put a replica back in rotation "
                 "(admin key)", openapi_extra=_SECURITY)
    async def enable(index: int) -> Response:
        assert gateway.upstream is not None
        try:
            gateway.upstream.replicas.enable(index)
        except IndexError as exc:
            raise InvalidRequest.of_field("index", str(exc), 404) from None
        return json_response(200, {"replicas": _replicas()})

    # -- versions and weights -----------------------------------------------------------------
    def _targets(replica: int | None) -> list[int]:
        count = len(gateway.repositories or ())
        if replica is None:
            return list(range(count))
        if not 0 <= replica < count:
            raise IndexError(f"no replica {replica}: the gateway has {count}")
        return [replica]

    async def _change_versions(version: str, replica: int | None, *, add: bool,
                               exclusive: bool = False, timeout_s: float) -> Response:
        if gateway.repositories is None:
            raise _no_repository()
        try:
            version = check_version(version)
            targets = _targets(replica)
        except RolloutError as exc:
            raise InvalidRequest.of_field("version", str(exc)) from None
        except IndexError as exc:
            raise InvalidRequest.of_field("replica", str(exc), 404) from None
        loaded: dict[int, list[str]] = {}
        try:
            for index in targets:
                repository = gateway.repositories[index]
                ready = [v for v, state in (await asyncio.to_thread(
                    repository.versions, MODEL_NAME)).items() if state == "READY"]
                if add and not exclusive and version in ready:  # loaded already: warm it
                    await _warm(gateway, index, version, timeout_s)
                    loaded[index] = sorted(ready, key=int)
                    continue
                if (add and not exclusive and not gateway.router.weights and ready
                        and version not in ready):
                    # Triton answers a call naming no version with the highest one loaded:
                    # pin today's before another version exists
                    gateway.set_weights({max(ready, key=int): 100.0})
                wanted = {version} if exclusive and add else (
                    set(ready) | {version} if add else set(ready) - {version})
                if not wanted:
                    raise InvalidRequest.of_field(
                        "version", f"version {version} is the only one loaded on replica "
                                   f"{index}: load another before it goes", 409)
                async with _out_of_rotation(gateway, index):
                    await asyncio.to_thread(repository.load_versions, MODEL_NAME,
                                            sorted(wanted, key=int))
                    if add:
                        await _warm(gateway, index, version, timeout_s)
                loaded[index] = sorted(wanted, key=int)
        except ReloadError as exc:
            raise ReloadFailed(str(exc)) from exc
        return json_response(200, {"version": version, "loaded": {
            str(i): versions for i, versions in loaded.items()},
            "weights": gateway.router.as_dict()})

    @router.post("/versions/{version}/load",
                 summary="Load a model version beside the others (or alone), ready and warm "
                         "(admin key)", openapi_extra=_SECURITY)
    async def load_version(version: str, replica: int | None = None, exclusive: bool = False,
                           timeout_s: float = Query(120.0, gt=0, le=1800)) -> Response:
        return await _change_versions(version, replica, add=True, exclusive=exclusive,
                                      timeout_s=timeout_s)

    @router.post("/versions/{version}/unload", summary="Stop serving a model version "
                 "(admin key)", openapi_extra=_SECURITY)
    async def unload_version(version: str, replica: int | None = None) -> Response:
        if version in gateway.router.weights and gateway.router.weights[version] > 0:
            weight = gateway.router.weights[version]
            raise InvalidRequest.of_field("version", f"version {version} still has {weight:g} % "
                                          "of the customers: set its weight to 0 first", 409)
        return await _change_versions(version, replica, add=False, timeout_s=60.0)

    @router.get("/rollout", summary="Weights, stable version, per-version counts and replicas "
                "(admin key)", openapi_extra=_SECURITY)
    async def rollout() -> Response:
        loaded: dict[str, list[str]] = {}
        for index, repository in enumerate(gateway.repositories or ()):
            try:
                found = await asyncio.to_thread(repository.versions, MODEL_NAME)
            except ReloadError:
                continue  # a replica down: its versions are unknown now
            loaded[str(index)] = sorted((v for v, s in found.items() if s == "READY"), key=int)
        return json_response(200, {**gateway.router.as_dict(),
                                   "versions": gateway.version_stats.snapshot(),
                                   "replicas": _replicas(), "loaded": loaded, "at": time.time()})

    @router.put("/rollout", summary="Set the weights of the versions (admin key)",
                openapi_extra=_SECURITY)
    async def set_rollout(body: Annotated[dict[str, Any], Body()]) -> Response:
        try:
            gateway.set_weights(dict(body.get("weights") or {}), body.get("stable"))
        except (RolloutError, TypeError, ValueError) as exc:
            raise InvalidRequest.of_field("weights", str(exc)) from None
        return json_response(200, gateway.router.as_dict())

    @router.post("/rollout/rollback", summary="Every customer back to the stable version, "
                 "counted as a rollback (admin key)", openapi_extra=_SECURITY)
    async def rollback(body: Annotated[dict[str, Any], Body()]) -> Response:
        stable = gateway.router.stable
        version = str(body.get("version", ""))
        if stable is None or version == stable:
            raise InvalidRequest.of_field(
                "version", f"nothing to roll back to: the stable version is {stable}, the "
                           f"version rolled back {version or 'not given'}", 409)
        gateway.set_weights({stable: 100.0}, stable)
        gateway.metrics.rollbacks.labels(version).inc()
        gateway.log_rollback(version, str(body.get("reason", "")))
        return json_response(200, gateway.router.as_dict())

    return router


@contextlib.asynccontextmanager
async def _out_of_rotation(gateway: Gateway, index: int) -> AsyncIterator[None]:
    """Replica `index` drained while Triton loads versions on it, when others can take its
    calls: a load re-creates every loaded version's instances, and on a busy machine the
    replica answered some calls past their deadline meanwhile (tests/integration/
    test_rollout.py saw 1 s timeouts). A replica drained by someone else is left so."""
    assert gateway.upstream is not None
    replicas = gateway.upstream.replicas
    replica = replicas.replica(index)
    take_out = replica.state is ReplicaState.UP and any(
        r.state is ReplicaState.UP for r in replicas.replicas if r is not replica)
    if take_out:
        await replicas.drain(index, timeout_s=60)
    try:
        yield
    finally:
        if take_out:
            replicas.enable(index)


async def _warm(gateway: Gateway, index: int, version: str, timeout_s: float) -> None:
    """Wait until replica `index` reports `version` ready, then send it WARMUP_CALLS probe
    inferences (python steps import and allocate on their first calls).

    Raises:
        NotReady: not ready within `timeout_s`, or a warm-up call failed.
    """
    assert gateway.upstream is not None
    replica = gateway.upstream.replicas.replicas[index]
    deadline = time.monotonic() + timeout_s
    while not await replica.transport.ready(gateway.settings.triton_timeout_s, version):
        if time.monotonic() > deadline:
            raise NotReady(f"version {version} is not ready on {replica.url} after "
                           f"{timeout_s:g} s")
        await asyncio.sleep(0.1)
    for _ in range(WARMUP_CALLS):
        try:
            await replica.transport.infer([gateway.probe_row],
                                          max(5.0, gateway.settings.triton_timeout_s), version,
                                          probe=True)
        except UpstreamError as exc:
            raise NotReady(exc.message) from exc
