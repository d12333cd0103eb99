"""The load generator's timeauth service in both engines: logins against real servers, refused logins, a lying server.

Every test runs the python and the native engine and expects the same
classification from both (the engine-agreement rule of test_loadgen_engines.py).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.loadgen import LoadSpec, engines, run_load
from servers.config import ServerOptions
from servers.launch import run_server

from conftest import one_quick, served_by
from thread_servers import ThreadServer

pytestmark = pytest.mark.usefixtures("no_leftover_workers")
#: Both engines; the native one needs the C compiler.
ENGINES = ["python", pytest.param("native", marks=pytest.mark.needs_cc)]

LOGIN = "alice:open sesame: with a colon"


def timeauth_spec(port: int, **kw: object) -> LoadSpec:
    base: dict[str, object] = dict(
        service="timeauth",
        host="127.0.0.1",
        port=port,
        clients=3,
        duration_s=0.6,
        login=LOGIN,
        connect_timeout_s=2.0,
        request_timeout_s=5.0,
        engine="python",
        loop="asyncio",
        workers=1,
    )
    base.update(kw)
    return LoadSpec(**base)  # type: ignore[arg-type]


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    path = tmp_path / "logins"
    path.write_text("# the generator's login\n" + LOGIN + "\nbob:other\n")
    return path


@pytest.mark.parametrize("model", one_quick(served_by("timeauth")))
@pytest.mark.parametrize("engine", ENGINES)
def test_valid_logins_complete_on_kept_connections(model: str, engine: str, credentials: Path) -> None:
    with run_server(model, "timeauth", ServerOptions(credentials=credentials)) as srv:
        result = run_load(timeauth_spec(srv.port, host=srv.host, engine=engine))
    row = result.row
    assert row["requests"] > 20 and row["errors"] == 0, (row, result.warnings)
    assert row["conn_ok"] == 3, row  # each client logs in again and again on its one connection
    assert row["http_2xx"] is None and row["gen_engine"] == engine


@pytest.mark.parametrize("engine", ENGINES)
def test_a_wrong_password_is_denied_not_corrupt(engine: str, credentials: Path) -> None:
    with run_server("selectors", "timeauth", ServerOptions(credentials=credentials)) as srv:
        row = run_load(timeauth_spec(srv.port, host=srv.host, login="alice:guess", engine=engine)).row
    assert row["requests"] == 0 and row["err_denied"] > 3 and row["errors"] == row["err_denied"], row
    # one guess per connection: the server closes after its ERR line, the client connects anew
    assert row["conn_ok"] >= row["err_denied"], row


@pytest.mark.parametrize("engine", ENGINES)
def test_reconnecting_clients_log_in_on_each_connection(engine: str, credentials: Path) -> None:
    with run_server("threading", "timeauth", ServerOptions(credentials=credentials)) as srv:
        row = run_load(timeauth_spec(srv.port, host=srv.host, requests_per_connection=2, engine=engine)).row
    assert row["requests"] > 10 and row["errors"] == 0, row
    assert row["conn_ok"] >= row["requests"] // 2, row


@pytest.mark.parametrize("engine", ENGINES)
def test_open_loop_logins_wait_for_their_schedule(engine: str, credentials: Path) -> None:
    with run_server("selectors", "timeauth", ServerOptions(credentials=credentials)) as srv:
        row = run_load(timeauth_spec(srv.port, host=srv.host, mode="open", rate=200.0, engine=engine)).row
    # the prompt after each time line arrives while the client is idle: not an error
    assert 100 <= row["requests"] <= 121 and row["errors"] == 0, row


def lying_handler(ack: bytes, time_line: bytes) -> Callable[[socket.socket, ThreadServer], None]:
    """A timeauth server that answers every login with ``ack`` and ``time_line`` (right or wrong)."""

    def handler(conn: socket.socket, srv: ThreadServer) -> None:
        conn.sendall(b"name?\n")
        with conn.makefile("rb") as reader:
            while reader.readline() and srv.take(0):
                conn.sendall(ack)
                if not reader.readline():
                    return
                conn.sendall(time_line + b"name?\n")

    return handler


@pytest.mark.parametrize(
    ("ack", "time_line", "column"),
    [
        (b"\x06", b"TIME 2026-01-01T00:00:00.000000+00:00\n", None),
        (b"\x15", b"TIME 2026-01-01T00:00:00.000000+00:00\n", "err_corrupt"),  # NAK instead of ACK
        (b"\x06", b"THE TIME IS NOW\n", "err_corrupt"),
        (b"\x06", b"ERR 401 wrong user name or password\n", "err_denied"),
        (b"\x06", b"TIME " + b"9" * 600 + b"\n", "err_corrupt"),  # a time line without end
    ],
)
@pytest.mark.parametrize("engine", ENGINES)
def test_each_reply_is_checked(
    server: Callable[..., ThreadServer], engine: str, ack: bytes, time_line: bytes, column: str | None
) -> None:
    srv = server(lying_handler(ack, time_line))
    row = run_load(timeauth_spec(srv.port, clients=2, duration_s=0.4, engine=engine)).row
    if column is None:
        assert row["requests"] > 20 and row["errors"] == 0, row
    else:
        assert row["requests"] == 0 and row[column] > 0 and row["errors"] == row[column], row


@pytest.mark.parametrize("engine", ENGINES)
def test_a_server_that_closes_before_the_ack_is_closed_early(server: Callable[..., ThreadServer], engine: str) -> None:
    def handler(conn: socket.socket, srv: ThreadServer) -> None:
        conn.sendall(b"name?\n")
        with conn.makefile("rb") as reader:
            reader.readline()  # the whole name: a close with unread bytes would be a reset

    srv = server(handler)
    row = run_load(timeauth_spec(srv.port, clients=1, duration_s=0.3, engine=engine)).row
    assert row["requests"] == 0 and row["err_closed_early"] > 0 and row["errors"] == row["err_closed_early"], row


@pytest.mark.needs_cc
def test_a_login_is_required_and_auto_picks_the_native_engine() -> None:
    with pytest.raises(ValueError, match="needs a login NAME:PASSWORD"):
        run_load(timeauth_spec(9, login="alice"))
    with pytest.raises(ValueError, match="must not contain a newline"):
        run_load(timeauth_spec(9, login="alice:a\nb"))
    assert engines.resolve("auto", "timeauth")[0] == "native"
    with pytest.raises(ValueError, match="its users speak echo, file, http"):
        engines.resolve("locust", "timeauth")


# ----------------------------------------------------------------- the scenario

REPO = Path(__file__).resolve().parent.parent


def test_the_rtt_scenario_runs_timeauth_with_a_login_of_the_runners_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    import pandas as pd

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    from bench.runner import run_scenario
    from bench.scenario import parse_scenario

    text = (REPO / "scenarios" / "timeauth-rtt.yaml").read_text()
    scenario = parse_scenario(
        text,
        "timeauth-rtt.yaml",
        overrides=[
            "models=[selectors]",
            "load.clients=2",
            "duration=500ms",
            "warmup=100ms",
            "placement=none",
            "network.hosts=loopback",
            "network.rtt=0s",
            "monitor.idle_wait=1s",
            "monitor.idle_threshold_pct=100",
        ],
    )
    assert scenario.services == ["echo", "timeauth"]
    runs = pd.read_csv(run_scenario(scenario, results_root=tmp_path / "results", plots=False) / "runs.csv")
    assert (runs["status"] == "ok").all(), runs["error"].tolist()
    timeauth, echo = runs[runs["service"] == "timeauth"], runs[runs["service"] == "echo"]
    assert len(timeauth) == len(echo) == 2  # kept connections and one per request
    assert (timeauth["requests"] > 0).all() and (timeauth["errors"] == 0).all(), timeauth.to_dict("records")
    assert (timeauth["err_denied"] == 0).all() and (echo["requests"] > 0).all()
    assert len(set(runs["gen_engine"])) == 1  # the same engine on both sides of the echo/timeauth ratio
    assert not list(temp.glob("sockbench-logins-*"))  # the credentials file is gone with the run
