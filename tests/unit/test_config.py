"""The configuration records, and the ways a server is given them.

Every option is checked when its record is built, with a message naming it;
``serve_queue``, ``QueueService`` and the testing helpers take either a
record or the options as keyword arguments, and refuse names that are no
option.
"""

from __future__ import annotations

import ssl
from functools import partial
from typing import Any

import attrs
import pytest
import trio

from jobqueue import Client, QueueRules, RequestError, ServerConfig, serve_queue
from jobqueue._config import OptionError, server_config
from jobqueue._server import QueueService
from jobqueue.testing import open_memory_queue, open_test_queue


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease_timeout": 0}, "lease_timeout must be a positive number, not 0"),
        ({"lease_timeout": float("nan")}, "lease_timeout must be a positive number"),
        ({"retry_delay": -1.0}, "retry_delay must be a positive number, not -1.0"),
        ({"max_retry_delay": 0.0}, "max_retry_delay must be a positive number"),
        ({"max_attempts": 0}, "max_attempts must be at least 1, not 0"),
        ({"max_attempts": 1001}, "max_attempts must be at most 1000, not 1001"),
        ({"finished_retention": -1}, "finished_retention must be at least 0, not -1"),
        ({"max_pending": 0}, "max_pending must be at least 1, not 0"),
    ],
)
def test_bad_rules_name_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError) as refused:
        QueueRules(**options)
    assert str(refused.value).startswith(message)
    assert refused.value.name == next(iter(options))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_connections": 0}, "max_connections must be at least 1, not 0"),
        ({"max_line_bytes": 0}, "max_line_bytes must be at least 1, not 0"),
        ({"handshake_timeout": 0.0}, "handshake_timeout must be a positive number"),
        ({"idle_timeout": -5}, "idle_timeout must be a positive number, not -5"),
        ({"token": ""}, "token must not be empty"),
    ],
)
def test_bad_server_options_name_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        ServerConfig(**options)


def test_none_means_none_where_a_field_allows_it() -> None:
    config = ServerConfig(idle_timeout=None, token=None, rules=QueueRules(max_pending=None))
    assert (config.idle_timeout, config.token, config.rules.max_pending) == (None, None, None)
    with pytest.raises(TypeError, match="ssl_context"):
        ServerConfig(ssl_context="server.pem")  # type: ignore[arg-type]


def test_the_token_stays_out_of_repr() -> None:
    assert "s3cret" not in repr(ServerConfig(token="s3cret"))


def test_options_replace_the_records_values() -> None:
    base = ServerConfig(max_connections=10, rules=QueueRules(lease_timeout=5, max_attempts=2))
    config = server_config(base, {"lease_timeout": 7, "idle_timeout": 60}, caller="f")
    assert config.rules == QueueRules(lease_timeout=7, max_attempts=2)
    assert (config.max_connections, config.idle_timeout) == (10, 60)
    # A whole rules record, with one rule replaced on top.
    config = server_config(
        base, {"rules": QueueRules(retry_delay=3), "max_attempts": 9}, caller="f"
    )
    assert config.rules == QueueRules(retry_delay=3, max_attempts=9)
    assert server_config(None, {}, caller="f") == ServerConfig()
    assert server_config(base, {}, caller="f") is base


def test_an_unknown_option_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match=r"^f\(\) got an unexpected keyword argument 'lease'"):
        server_config(None, {"lease": 5, "lease_timeout": 5}, caller="f")
    with pytest.raises(TypeError, match=r"QueueService.*'port'"):
        QueueService(port=1)


async def test_serve_queue_refuses_an_unknown_option_before_binding() -> None:
    # Were the name let through, the server would run until the deadline.
    with trio.fail_after(5), pytest.raises(TypeError, match=r"^serve_queue\(\) .*'lease_timout'"):
        await serve_queue(0, lease_timout=5)


async def test_serve_queue_takes_a_record_and_options_win() -> None:
    config = ServerConfig(token="s3cret", rules=QueueRules(max_pending=5))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            partial(serve_queue, 0, host="127.0.0.1", config=config, max_pending=1)
        )
        async with Client.connect(*address, token="s3cret") as client:
            await client.submit("echo", 1)
            with pytest.raises(RequestError) as refused:
                await client.submit("echo", 2)
            assert refused.value.code == "queue_full"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("opener", [open_memory_queue, open_test_queue])
async def test_testing_helpers_take_a_record_and_options(opener: Any) -> None:
    config = ServerConfig(token="s3cret", rules=QueueRules(max_pending=3))
    async with opener(config=config, max_pending=2) as queue:
        assert queue.token == "s3cret"  # its client, workers and connections use it
        assert queue.config == attrs.evolve(config, rules=QueueRules(max_pending=2))
        await queue.client.submit_many([{"name": "echo"}] * 2)
        with pytest.raises(RequestError) as refused:
            await queue.client.submit("echo")
        assert refused.value.code == "queue_full"
    async with opener(lease_timeout=4) as queue:
        assert queue.config.rules.lease_timeout == 4
        assert queue.token is None


@pytest.mark.parametrize("opener", [open_memory_queue, open_test_queue])
async def test_testing_helpers_check_their_options(opener: Any) -> None:
    with pytest.raises(TypeError, match="lease"):
        async with opener(lease=4):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="max_connections must be at least 1"):
        async with opener(max_connections=0):
            pass  # pragma: no cover


def test_ssl_context_is_kept_as_given() -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert ServerConfig(ssl_context=context).ssl_context is context
