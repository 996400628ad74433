"""The `mediaserver` CLI drives the running server's API: the same organization defaults, webhooks and live
sessions as any API client. Also: the README's set-up commands work on a PEP 668 system, and CI runs them."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mediaserver.cli import main
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = small_config(tmp_path_factory.mktemp("cli") / "data")
    config.webhooks.allow_private_networks = True  # a subscription on loopback: deliveries are queued and logged
    handle = run_server(config)
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.toml: the defaults
    monkeypatch.delenv("MEDIASERVER_URL", raising=False)
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN_TOKEN)


def cli(capsys: pytest.CaptureFixture[str], server: ServerHandle, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--server", server.http])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], server: ServerHandle, *argv: str) -> Any:
    code, out, err = cli(capsys, server, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def created_deliveries(server: ServerHandle, webhook_id: str) -> int:
    deliveries = server.api("GET", f"/api/webhooks/{webhook_id}/deliveries")[1]["deliveries"]
    return sum(d["event_type"] == "stream.created" for d in deliveries)


def test_create_applies_org_defaults_and_sends_the_webhook(server: ServerHandle, capsys: pytest.CaptureFixture[str]) -> None:
    assert server.api("PATCH", "/api/orgs/default", {"timezone": "America/Chicago"})[0] == 200
    status, hook = server.api("POST", "/api/webhooks", {"url": "http://127.0.0.1:9/hook", "secret": "s" * 20,
                                                       "events": ["stream.created"]})
    assert status == 201, hook
    before = created_deliveries(server, hook["id"])
    view = cli_json(capsys, server, "streams", "create", "--title", "Sunday Service")
    assert view["stream_key"].startswith("sk_") and view["timezone"] == "America/Chicago"
    assert created_deliveries(server, hook["id"]) == before + 1
    code, out, _ = cli(capsys, server, "streams", "create", "--title", "Vespers")
    assert code == 0 and "Stream key:  sk_" in out and "rtmp://" in out


def test_show_end_rotate_key_and_list(server: ServerHandle, capsys: pytest.CaptureFixture[str]) -> None:
    created = cli_json(capsys, server, "streams", "create", "--title", "Midweek")
    shown = cli_json(capsys, server, "streams", "show", created["id"])
    assert shown["id"] == created["id"] and "stream_key" not in shown
    code, out, _ = cli(capsys, server, "streams", "show", created["id"])
    assert code == 0 and created["id"] in out and "SCHEDULED" in out and created["watch_url"] in out
    rotated = cli_json(capsys, server, "streams", "rotate-key", created["id"])
    assert rotated["stream_key"].startswith("sk_") and rotated["stream_key"] != created["stream_key"]
    # The old key no longer opens the stream, the new one does (the same code path as the API).
    db = server.server.db
    assert db.stream_by_key(created["stream_key"]) is None
    assert db.stream_by_key(rotated["stream_key"])["id"] == created["id"]  # type: ignore[index]
    # end: a SCHEDULED stream can't be ended (409 from the API, said clearly); a started one ends.
    code, _, err = cli(capsys, server, "streams", "end", created["id"])
    assert code == 1 and "cannot end a SCHEDULED stream" in err
    assert server.api("POST", f"/api/streams/{created['id']}/start")[0] == 200
    assert cli_json(capsys, server, "streams", "end", created["id"])["status"] == "ENDED"
    listed = cli_json(capsys, server, "streams", "list")
    assert created["id"] in [s["id"] for s in listed]
    assert created["id"] in [s["id"] for s in cli_json(capsys, server, "streams", "list", "--state", "past")]
    code, _, err = cli(capsys, server, "streams", "show", "nope")
    assert code == 1 and "stream not found" in err
    assert cli(capsys, server, "streams", "delete", created["id"])[0] == 0
    assert server.api("GET", f"/api/streams/{created['id']}")[0] == 404


def test_series_create(server: ServerHandle, capsys: pytest.CaptureFixture[str]) -> None:
    series = cli_json(capsys, server, "series", "create", "--title", "Sunday Worship", "--rrule", "FREQ=WEEKLY;BYDAY=SU",
                      "--start-time", "10:30", "--duration", "90", "--timezone", "America/Chicago")
    assert series["stream_key"].startswith("sk_") and series["timezone"] == "America/Chicago"
    upcoming = cli_json(capsys, server, "streams", "list", "--state", "upcoming")
    assert any(s["series_id"] == series["id"] for s in upcoming)
    code, _, err = cli(capsys, server, "series", "create", "--title", "X", "--rrule", "FREQ=WEEKLY;BYDAY=SU",
                       "--start-time", "25:00", "--duration", "90", "--timezone", "UTC")
    assert code == 1 and "start_time" in err


def test_the_server_is_found_from_the_config_and_the_token_file(server: ServerHandle, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.delenv("MEDIASERVER_ADMIN_TOKEN")
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin_token").write_text(ADMIN_TOKEN + "\n")
    code = main(["streams", "list", "--json", "--http-port", str(server.server.http_port), "--data-dir", str(data)])
    out, err = capsys.readouterr()
    assert code == 0, err and isinstance(json.loads(out), list)


def test_a_clear_error_when_the_server_is_not_running(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    result = subprocess.run(
        [sys.executable, "-m", "mediaserver.cli", "streams", "show", "abc", "--http-port", str(port)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "MEDIASERVER_ADMIN_TOKEN": "x", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert f"the server is not running at http://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


# -- set-up commands ---------------------------------------------------------------------------------------------
def readme_block(title: str) -> str:
    """The first sh block after the bold paragraph starting with `title` in README.md."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"**{title}")
    match = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert match, title
    return match.group(1).strip()


def test_the_readme_server_command_works_on_an_externally_managed_python() -> None:
    command = readme_block("Run the server")
    # PEP 668 (Debian 12, Ubuntu 24.04): pip refuses to install into the system Python, so the first command
    # makes a virtual environment and runs everything from it.
    assert "python3 -m venv .venv" in command
    installs = re.findall(r"(\S*pip) install", command)
    assert installs and all(pip.startswith(".venv/bin/") for pip in installs), command
    assert command.rstrip().endswith(".venv/bin/mediaserver serve")
    assert "python3-venv" in (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    assert readme_block("Run the tests") == ".ci/run"
    script = (ROOT / ".ci" / "run").read_text()
    text = (ROOT / "README.md").read_text()
    said = re.search(r"then runs `([^`]+)`\)", text)
    assert said, "the README says which test command .ci/run runs"
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands[-1] == said.group(1)
    # On a PEP 668 system CI installs into the throwaway machine's Python on purpose, and says so.
    assert "PIP_BREAK_SYSTEM_PACKAGES" in script or "--break-system-packages" in script
