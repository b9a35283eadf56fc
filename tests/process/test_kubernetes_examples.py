"""examples/kubernetes/: the manifests parse, agree with each other, and their commands work.

No Kubernetes cluster here: instead the server and worker containers'
arguments are run as real processes (with addresses and paths moved to this
machine), and the KEDA trigger's PromQL is checked against what the real
server's ``/metrics`` serves: its metric exists with its labels and counts
the pending job.
"""

from __future__ import annotations

import os
import re
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobqueue import Client
from tests.helpers import JOBQUEUE_SCRIPT, free_port, running_process

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"
TOKEN = "k8s-example-token"

pytestmark = pytest.mark.slow


def documents(name: str) -> dict[str, dict[str, Any]]:
    """The file's documents by kind (each kind once per file here)."""
    docs = [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        assert doc["metadata"]["name"]
    return {doc["kind"]: doc for doc in docs}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def option(args: list[str], name: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"--{name}=")]
    return value


def replaced(args: list[str], **values: str) -> list[str]:
    out = []
    for arg in args:
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        out.append(f"--{name}={values[name]}" if name in values else arg)
    return out


def query_selector(query: str) -> tuple[str, dict[str, str]]:
    """The metric and label matchers of a query like ``sum(metric{a="b",c="d"})``."""
    match = re.search(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", query)
    assert match is not None, query
    labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
    return match.group(1), labels


def test_the_manifests_agree_with_each_other() -> None:
    server, worker = documents("server.yaml"), documents("worker.yaml")
    scaled = documents("scaledobject.yaml")["ScaledObject"]
    deployment, service = server["Deployment"], server["Service"]
    assert deployment["spec"]["replicas"] == 1  # one coordinator owns the queue
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # the journal's lock
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    args = container(deployment)["args"]
    assert option(args, "metrics").endswith(f":{ports['metrics']}")
    assert option(args, "port") == str(ports["queue"])
    claim = deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert claim["claimName"] == server["PersistentVolumeClaim"]["metadata"]["name"]
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name["metrics"]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    workers = worker["Deployment"]
    worker_args = container(workers)["args"]
    host, port = option(worker_args, "connect").rsplit(":", 1)
    assert (host, int(port)) == (service["metadata"]["name"], by_name["queue"]["port"])
    # Kubernetes waits this long after SIGTERM before SIGKILL: longer than the drain.
    grace = workers["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(option(worker_args, "drain-timeout"))
    assert scaled["spec"]["scaleTargetRef"]["name"] == workers["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    metric, labels = query_selector(trigger["metadata"]["query"])
    assert labels["queue"] == option(worker_args, "queues").split(",")[0]
    assert (metric, labels["state"]) == ("jobqueue_jobs", "pending")


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_the_containers_commands_run_and_the_query_matches_the_endpoint(
    tmp_path: Path,
) -> None:
    server_args = container(documents("server.yaml")["Deployment"])["args"]
    worker_args = container(documents("worker.yaml")["Deployment"])["args"]
    query = documents("scaledobject.yaml")["ScaledObject"]["spec"]["triggers"][0]["metadata"]
    metric, labels = query_selector(query["query"])
    port, metrics = free_port(), free_port()
    env = {**os.environ, "JOBQUEUE_TOKEN": TOKEN}
    serve = replaced(
        server_args,
        host="127.0.0.1",
        port=str(port),
        metrics=f"127.0.0.1:{metrics}",
        journal=str(tmp_path / "journal"),
    )
    work = replaced(worker_args, connect=f"127.0.0.1:{port}")
    root = EXAMPLES.parents[1]
    with trio.fail_after(20):
        async with running_process([JOBQUEUE_SCRIPT, *serve], env=env):
            await until_listening(port)
            async with (
                running_process([JOBQUEUE_SCRIPT, *work], env=env, cwd=root) as worker,
                Client.connect("127.0.0.1", port, token=TOKEN) as client,
            ):
                job = await client.submit("add", {"numbers": [2, 3]}, queue=labels["queue"])
                assert (await client.wait(job)).result == 5
                worker.send_signal(signal.SIGTERM)  # a scale-down: it drains and exits
                # Drained with nothing left to finish: exits 0, the job done.
                assert await worker.wait() == 0
                await client.submit("add", {"numbers": [1]}, queue=labels["queue"])
            found = await trio.to_thread.run_sync(scrape, metrics)
    matching = [
        value
        for (name, sample_labels), value in found.items()
        if name == metric and set(labels.items()) <= sample_labels
    ]
    assert matching == [1.0], matching


async def until_listening(port: int) -> None:
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.05)  # the server process is starting: nothing to wait on
            continue
        await stream.aclose()
        return
