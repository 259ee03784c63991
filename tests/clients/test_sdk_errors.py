"""SDK errors: picklable across processes; streamed scenarios fail over and retry like unary calls;
bad arguments (timeouts, addresses, API keys, a closed client) refused at once with a clear error."""

from __future__ import annotations

import concurrent.futures as cf
import pickle

import grpc
import pytest

from healthai_client import Client, HealthAIClientError, RetryPolicy
from healthai_client.scenario import scenario_request
from tests.conftest import free_port

from .model_repo import RISK_MODEL


def _score_unknown_model(address: str) -> None:
    with Client(address) as c:
        c.score("no_such_model", [[1.0, 2.0, 3.0, 4.0]])


def test_an_error_pickles_and_crosses_a_process_pool(server: str) -> None:
    e = HealthAIClientError(grpc.StatusCode.UNAVAILABLE, "down", address="h:1", attempts=3)
    back = pickle.loads(pickle.dumps(e))
    assert (back.code, back.message, back.address, back.attempts, str(back)) == (
        e.code, e.message, e.address, e.attempts, str(e))
    assert back.retryable
    with cf.ProcessPoolExecutor(1) as pool, pytest.raises(HealthAIClientError) as caught:
        pool.submit(_score_unknown_model, server).result()
    assert caught.value.code is grpc.StatusCode.NOT_FOUND and caught.value.address == server


def test_a_streamed_scenario_retries_unavailable_and_fails_over(server: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    request = {"horizon_days": 7, "runs": 2, "seed_infections": {"nowhere": 1}}
    with Client(dead, retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01), timeout=10) as c, \
            pytest.raises(HealthAIClientError) as e:
        c.scenario("no_such_graph", progress=lambda done, total: None, **request)
    assert e.value.code is grpc.StatusCode.UNAVAILABLE and e.value.attempts == 3
    for _ in range(3):  # fresh clients: the first call starts on the dead address
        with Client([dead, server], timeout=10) as c, pytest.raises(HealthAIClientError) as e:
            c.scenario("no_such_graph", progress=lambda done, total: None, **request)
        # the live server answered (its graph list has no such graph): not the dead one's UNAVAILABLE
        assert e.value.code is not grpc.StatusCode.UNAVAILABLE and e.value.address == server
    with Client(server) as c, pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        c.scenario("no_such_graph", progress=lambda done, total: None, timeout=0, **request)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), None, "5"])
def test_a_bad_timeout_is_refused(server: str, timeout: object) -> None:
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        Client(server, timeout=timeout)  # type: ignore[arg-type]
    if timeout is not None:  # a call's timeout=None is the client's
        with Client(server) as c, pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
            c.echo(b"x", timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("address", ["127.0.0.1:abc", "http://127.0.0.1:50051", "127.0.0.1:50051/",
                                     "127.0.0.1:0", "127.0.0.1:70000", ":50051", "127.0.0.1"])
def test_a_malformed_address_is_refused_at_construction(address: str) -> None:
    with pytest.raises(ValueError, match="address") as e:
        Client(address)
    assert address in str(e.value)


def test_gRPC_targets_and_bracketed_v6_addresses_are_accepted(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    for address in (f"dns:///localhost:{port}", f"ipv4:127.0.0.1:{port}", f"[::1]:{port}",
                    f"localhost:{port}"):
        Client(address).close()
    with Client(f"dns:///localhost:{port}") as c:
        assert c.health() == "SERVING"


def test_the_cli_exits_2_for_a_malformed_address(capsys) -> None:
    from healthai_client.cli import main

    assert main(["health", "--address", "127.0.0.1:abc"]) == 2
    assert "127.0.0.1:abc" in capsys.readouterr().err


def test_an_api_key_with_a_newline_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="api_key must be printable ASCII") as e:
        Client("127.0.0.1:1", api_key="s3cr3t\n")
    assert "s3cr3t" not in str(e.value)


def test_a_closed_client_says_so(server: str) -> None:
    c = Client([server, server])
    assert c.echo(b"x") == b"x"
    c.close()
    c.close()  # idempotent
    with pytest.raises(ValueError, match="this Client is closed"):
        c.score(RISK_MODEL, [[1.0, 2.0, 3.0, 4.0]])


def test_seed_infections_need_string_region_ids() -> None:
    with pytest.raises(ValueError, match="seed_infections: region ids must be strings"):
        scenario_request("us_counties", horizon_days=7, seed_infections={1073: 5})
