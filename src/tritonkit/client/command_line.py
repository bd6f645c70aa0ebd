"""What the client scripts share (scripts/predict.py, scripts/embed.py): the server options
(`--protocol`, and `--url` with TRITONKIT_URL as its fallback), the exit codes their `--help`
documents, and a failure printed as one `error:` line on stderr::

    add_server_options(parser)
    args = parser.parse_args()
    url = server_url(parser, args)                     # "127.0.0.1:8000" unless told otherwise
    with exit_on_failure(CustomerError), contextlib.closing(client):
        predictions = client.predict(customers)        # or exit 1, 3 or 4 with its error line
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

from tritonkit.errors import ServerError, ServerUnavailableError

#: Exit codes; argparse exits with 2 for a bad command line.
EXIT_BAD_INPUT = 1
EXIT_UNREACHABLE = 3
EXIT_SERVER_FAILED = 4
#: Where Triton listens unless --url or TRITONKIT_URL says otherwise, by protocol.
DEFAULT_URLS = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001"}


def host_port(text: str) -> str:
    """A `host:port` URL (an `http://` prefix is dropped), or argparse's usage error."""
    url = text.strip().removeprefix("http://").rstrip("/")
    host, _, port = url.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port, e.g. 127.0.0.1:8000")
    return url


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """`--protocol` and `--url`: how and where to reach Triton."""
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http",
                        help="KServe v2 protocol to use")
    parser.add_argument("--url", type=host_port, default=None,
                        help="host:port (default 127.0.0.1:8000 for http, :8001 for grpc; "
                             "env TRITONKIT_URL)")


def server_url(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """`--url`, else TRITONKIT_URL (a bad one is a usage error), else the protocol's default."""
    url: str | None = args.url
    if url is None and os.environ.get("TRITONKIT_URL"):
        try:
            url = host_port(os.environ["TRITONKIT_URL"])
        except argparse.ArgumentTypeError as exc:
            parser.error(f"TRITONKIT_URL: {exc}")
    return url or DEFAULT_URLS[args.protocol]


@contextlib.contextmanager
def exit_on_failure(*bad_input: type[Exception]) -> Iterator[None]:
    """End the script (SystemExit) with one `error:` line when the block fails: exit code
    EXIT_BAD_INPUT for `bad_input` (what the client refused before sending) and for a request
    Triton blamed, EXIT_UNREACHABLE when Triton cannot be reached or did not answer in time,
    EXIT_SERVER_FAILED for any other error answer."""
    try:
        yield
    except bad_input as exc:
        raise SystemExit(fail(str(exc), EXIT_BAD_INPUT)) from None
    except ServerUnavailableError as exc:
        raise SystemExit(fail(str(exc), EXIT_UNREACHABLE)) from None
    except ServerError as exc:
        code = EXIT_BAD_INPUT if exc.bad_request else EXIT_SERVER_FAILED
        raise SystemExit(fail(str(exc), code)) from None


def fail(message: str, code: int) -> int:
    """Print `message` as one `error:` line on stderr and return the exit code."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code
