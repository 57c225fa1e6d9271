"""One local Ray per test session (starting Ray costs seconds): 2 CPUs, no dashboard, stopped at the end.
Tests that need it take the `ray_cluster` fixture; the rest of tests/distributed runs without Ray."""

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    if ray.is_initialized():  # someone else's Ray: use it, leave it running
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        try:
            from ray import serve

            serve.shutdown()
        except Exception:  # Serve never started in this session
            pass
        ray.shutdown()
