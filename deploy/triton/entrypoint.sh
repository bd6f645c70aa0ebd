#!/bin/sh
# Start tritonserver with every API beyond inference, health and metadata behind the admin
# key, over HTTP and gRPC. The key comes from a file (a compose secret), so it is on neither
# compose's command line nor its environment (`docker inspect` shows both).
#
#   entrypoint.sh --model-repository=/models ...      # the other flags: docker-compose.yml
#
# TRITON_ADMIN_KEY_FILE: the key's file (default /run/secrets/triton_admin_key); TRITONSERVER:
# the binary (default tritonserver). The list below is serve/server.py's RESTRICTED_APIS (a
# test compares them).
set -eu

RESTRICTED_APIS="model-repository,model-config,shared-memory,statistics,trace,logging"
key_file="${TRITON_ADMIN_KEY_FILE:-/run/secrets/triton_admin_key}"

if [ ! -r "$key_file" ]; then
    echo "error: cannot read Triton's admin key at $key_file: make it with" \
         "\`make production-secrets\` (docs/production.md)" >&2
    exit 64
fi
key="$(tr -d ' \r\n' < "$key_file")"
case "$key" in
    "" | *[!A-Za-z0-9_-]*)
        echo "error: $key_file must hold one key of letters, digits, '_' or '-'" \
             "(Triton's flag syntax takes no ',', ':' or '=')" >&2
        exit 64 ;;
esac
if [ "${#key}" -lt 32 ]; then
    echo "error: the admin key in $key_file is shorter than 32 characters" >&2
    exit 64
fi

exec "${TRITONSERVER:-tritonserver}" "$@" \
    "--http-restricted-api=${RESTRICTED_APIS}:admin-key=${key}" \
    "--grpc-restricted-protocol=${RESTRICTED_APIS}:admin-key=${key}"
