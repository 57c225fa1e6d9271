"""`unet-fast serve` end to end through the CLI: flags -> build_app -> run_server, which deploys on
loopback, says where it listens, answers, and on stop removes its application (Ray itself belongs to the
test session here, so it is left running, as on a cluster joined with --ray-address)."""

import json
import socket
import urllib.error
import urllib.request

import pytest

from unet_fast.cli import main

pytest.importorskip("ray.serve")


def test_serve_command_deploys_answers_and_removes_its_app(ray_cluster, monkeypatch, capsys) -> None:
    from unet_fast.distributed import serve as serve_module

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    real_run_server, seen = serve_module.run_server, {}

    def run_server(app, *, on_ready, **kwargs):
        def ready(url: str) -> None:
            on_ready(url)
            with urllib.request.urlopen(f"{url}/health", timeout=60) as r:
                seen["health"] = json.loads(r.read())

        real_run_server(app, on_ready=ready, stop=lambda: "health" in seen, **kwargs)

    monkeypatch.setattr(serve_module, "run_server", run_server)
    assert main(["serve", "--port", str(port), "--max-batch", "4", "--batch-wait-ms", "2"]) == 0
    assert f"on http://127.0.0.1:{port}: POST http://127.0.0.1:{port}/segment" in capsys.readouterr().out
    assert seen["health"]["status"] == "ok" and seen["health"]["class_names"][0] == "background"
    with pytest.raises(urllib.error.HTTPError) as gone:  # the proxy is up, the application is not
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=60)
    assert gone.value.code in (404, 503)


@pytest.mark.parametrize(("argv", "words"), [(["--replicas", "0"], "replicas must be >= 1"),
                                             (["--port", "0"], "--port must be in 1..65535"),
                                             (["--weights", "missing.pt"], "missing.pt not found")])  # fmt: skip
def test_serve_command_rejects_bad_options_before_starting_anything(argv, words, capsys) -> None:
    assert main(["serve", *argv]) == 2
    assert words in capsys.readouterr().err
