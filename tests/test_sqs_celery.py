"""Celery workers consume tasks from WonderQ through kombu's SQS transport (the async
consumer on pycurl that real workers use), and the results come back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _server import ServerProcess, get, running_server

celery = pytest.importorskip("celery")
pytest.importorskip("kombu.transport.SQS")
pytest.importorskip("pycurl")

from celery import Celery  # noqa: E402
from celery.contrib.testing.worker import start_worker  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    with running_server() as server:
        yield server


def test_celery_worker_runs_tasks_from_wonderq(srv: ServerProcess, tmp_path: Path) -> None:
    app = Celery(
        "wonderq_test",
        broker=f"sqs://AKIDEXAMPLE:secret@127.0.0.1:{srv.port}",
        backend=f"file://{tmp_path}",
    )
    app.conf.update(
        broker_transport_options={
            "region": "us-east-1",
            "is_secure": False,
            "wait_time_seconds": 1,
            "polling_interval": 0.1,
            "visibility_timeout": 60,
        },
        task_default_queue="wonderq-celery",
        broker_connection_retry_on_startup=False,
        worker_hijack_root_logger=False,
    )

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        results = [add.delay(i, 10) for i in range(5)]
        assert [r.get(timeout=60) for r in results] == [10, 11, 12, 13, 14]
    # Celery made its queue through SQS's CreateQueue: WonderQ's own API sees it, drained.
    info = get(srv, "/v1/queues/wonderq-celery").json()
    assert info["totals"]["published"] == 5
    assert info["totals"]["deleted"] == 5
    assert info["counts"] == {"ready": 0, "leased": 0, "delayed": 0}
