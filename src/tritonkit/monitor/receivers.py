"""Alertmanager's receivers: one config (monitoring/alertmanager/alertmanager.yml), each
receiver a webhook whose URL is a secret, and a default that delivers out of the box.

- Production (docker-compose.yml, Alertmanager 0.27): each webhook reads its URL from
  `url_file: /run/secrets/alert_<receiver>_url`, a compose secret that `make production-secrets`
  writes from `TRITONKIT_ALERT_<RECEIVER>_URL`, or, unset, with the sidecar's inbox
  (`http://monitor:9108/alerts/inbox/<receiver>`): a fresh stack shows what it delivered at
  the sidecar's `/alerts/inbox`. Put your pager's URL in the file (or the variable) instead.
- `make up` (Debian's Alertmanager 0.25, which has no `url_file`): `with_urls` writes the same
  config with each `url_file` replaced by a `url`, from `TRITONKIT_ALERT_<RECEIVER>_URL` or the
  embedded sidecar's inbox::

    config = load_config()
    urls = receiver_urls(receivers(config), inbox="http://127.0.0.1:9108")
    yaml.safe_dump(with_urls(config, urls))
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tritonkit.errors import TritonKitError
from tritonkit.paths import PROJECT_ROOT

ALERTMANAGER_CONFIG = PROJECT_ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"
#: where compose mounts its secrets in a container
SECRETS_MOUNT = "/run/secrets/"
#: the sidecar's address on compose's admin network
PRODUCTION_INBOX = "http://monitor:9108"
#: the sidecar's path that takes Alertmanager's webhook payloads, + /<receiver>
INBOX_PATH = "/alerts/inbox"


def secret_name(receiver: str) -> str:
    """The compose secret (and file under /run/secrets/) that holds a receiver's URL."""
    return f"alert_{receiver}_url"


def env_name(receiver: str) -> str:
    """The variable that gives a receiver's URL (`make production-secrets`, `make up`)."""
    return f"TRITONKIT_ALERT_{receiver.upper()}_URL"


def inbox_url(base: str, receiver: str) -> str:
    return f"{base.rstrip('/')}{INBOX_PATH}/{receiver}"


def load_config(path: Path = ALERTMANAGER_CONFIG) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def receivers(config: Mapping[str, Any]) -> list[str]:
    """The receivers of `config`, each checked to read its one webhook URL from its secret."""
    names = []
    for receiver in config.get("receivers", []):
        name = receiver["name"]
        hooks = receiver.get("webhook_configs", [])
        wanted = SECRETS_MOUNT + secret_name(name)
        if len(hooks) != 1 or hooks[0].get("url_file") != wanted or "url" in hooks[0]:
            raise TritonKitError(f"Alertmanager receiver {name!r} must have one webhook with "
                                 f"url_file: {wanted} (its URL is a secret)")
        names.append(name)
    return names


def receiver_urls(names: list[str], inbox: str, environ: Mapping[str, str] | None = None
                  ) -> dict[str, str]:
    """Each receiver's URL: `TRITONKIT_ALERT_<RECEIVER>_URL`, else the inbox at `inbox`."""
    env = os.environ if environ is None else environ
    urls = {}
    for name in names:
        url = env.get(env_name(name), "").strip() or inbox_url(inbox, name)
        if not url.startswith(("http://", "https://")):
            raise TritonKitError(f"{env_name(name)}={url!r} is not an http(s) URL")
        urls[name] = url
    return urls


def with_urls(config: Mapping[str, Any], urls: Mapping[str, str]) -> dict[str, Any]:
    """`config` with each receiver's `url_file` replaced by `url: urls[receiver]` (for an
    Alertmanager older than 0.26, which reads no URL from a file)."""
    rendered = copy.deepcopy(dict(config))
    for receiver in rendered.get("receivers", []):
        for hook in receiver.get("webhook_configs", []):
            hook.pop("url_file", None)
            hook["url"] = urls[receiver["name"]]
    return rendered


def alertmanager_config(inbox: str, environ: Mapping[str, str] | None = None,
                        path: Path = ALERTMANAGER_CONFIG) -> dict[str, Any]:
    """The shipped config as an Alertmanager older than 0.26 takes it: each receiver's URL from
    `TRITONKIT_ALERT_<RECEIVER>_URL`, else the sidecar's inbox at `inbox`."""
    config = load_config(path)
    return with_urls(config, receiver_urls(receivers(config), inbox, environ))
