"""The TritonServer class and the serve CLI on a real tritonserver: failures are explained."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonkit.errors import ServerStartError
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import ServerSettings, TritonServer


def _settings(repository: Path) -> ServerSettings:
    return ServerSettings(model_repository=repository, http_port=free_port(),
                          grpc_port=free_port(), metrics_port=free_port())


def test_start_raises_with_failing_model_in_message_when_a_step_cannot_load(
    tmp_path: Path,
) -> None:
    model = tmp_path / "broken_step"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text("raise RuntimeError('deliberately broken step')\n")
    (model / "config.pbtxt").write_text(
        'name: "broken_step" backend: "python" max_batch_size: 1\n'
        'input { name: "x" data_type: TYPE_FP32 dims: 1 }\n'
        'output { name: "y" data_type: TYPE_FP32 dims: 1 }\n'
    )
    server = TritonServer(_settings(tmp_path))
    with pytest.raises(ServerStartError, match="deliberately broken step"):
        server.start(timeout_s=60)


@pytest.mark.parametrize("moment", ["starting", "Try it"])
def test_serve_cli_stops_server_and_exits_zero_when_sent_sigterm(
    repositories: dict[str, Path], moment: str
) -> None:
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    http_port = free_port()
    cli = subprocess.Popen(
        [sys.executable, "-m", "tritonkit.serve.cli", "--model-repository",
         str(repositories["embedded"]), "--http-port", str(http_port),
         "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        banner = ""
        while moment not in banner:
            line = cli.stdout.readline()  # type: ignore[union-attr]
            assert line, f"serve CLI exited early:\n{banner}"
            banner += line
        url = f"http://127.0.0.1:{http_port}/v2/health/ready"
        if moment == "Try it":
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
        cli.send_signal(signal.SIGTERM)
        code = cli.wait(timeout=60)
        rest = cli.stdout.read()  # type: ignore[union-attr]
        assert code == 0, f"serve CLI exited with {code}:\n{banner}{rest}"
        time.sleep(0.5)
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=2)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        cli.stdout.close()  # type: ignore[union-attr]
