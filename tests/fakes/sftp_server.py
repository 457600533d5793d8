"""A tiny hostile SSH + SFTP server on 127.0.0.1, built on paramiko's server classes.

It stands in for a compromised machine: its directory listings are synthesised from
`tree` (path -> entries), so it can list names no real disk holds (`../evil`, `a/b`,
a NUL byte) and hand out any mode (setuid, world-writable). Every file it is asked to
open reads as `content.get(path, b"EVIL")`, so a client that follows a hostile name
gets a file it can be caught writing. Any public key logs in.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import paramiko
import pytest

Entry = tuple[str, int, bytes]  # (name as listed, st_mode, content)


@dataclass
class HostileSftp:
    tree: dict[str, list[Entry]] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _attrs(self, name: str, mode: int, size: int) -> paramiko.SFTPAttributes:
        attr = paramiko.SFTPAttributes()
        attr.filename = name
        attr.st_mode = mode
        attr.st_size = size
        attr.st_uid = attr.st_gid = 0
        attr.st_mtime = attr.st_atime = int(time.time()) - 60
        return attr

    def lookup(self, path: str) -> tuple[int, bytes] | None:
        """(mode, content) of the entry a path names, or None."""
        if path in self.tree:
            return stat.S_IFDIR | 0o755, b""
        parent, _, name = path.rpartition("/")
        for entry_name, mode, content in self.tree.get(parent or "/", []):
            if entry_name == name:
                return mode, content
        return None

    # -- serving ---------------------------------------------------------------------

    def start(self) -> HostileSftp:
        self._host_key = paramiko.ECDSAKey.generate()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            transport = paramiko.Transport(conn)
            transport.add_server_key(self._host_key)
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _Sftp, self)
            try:
                transport.start_server(server=_Server())
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()


class _Server(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return (
            paramiko.OPEN_SUCCEEDED
            if kind == "session"
            else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        )

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        return False  # a file server only: no shell


class _Handle(paramiko.SFTPHandle):
    def __init__(self, content: bytes, attrs: paramiko.SFTPAttributes) -> None:
        super().__init__(os.O_RDONLY)
        self.content = content
        self.attrs = attrs

    def read(self, offset: int, length: int) -> bytes:
        return self.content[offset : offset + length]

    def stat(self) -> paramiko.SFTPAttributes:
        return self.attrs


class _Sftp(paramiko.SFTPServerInterface):
    def __init__(self, server: paramiko.ServerInterface, fake: HostileSftp) -> None:
        super().__init__(server)
        self.fake = fake

    def canonicalize(self, path: str) -> str:
        return "/" if path in (".", "") else path

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        if path not in self.fake.tree:
            return paramiko.SFTP_NO_SUCH_FILE
        return [
            self.fake._attrs(name, mode, len(content))
            for name, mode, content in self.fake.tree[path]
        ]

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        found = self.fake.lookup(path)
        if found is None:
            return paramiko.SFTP_NO_SUCH_FILE
        mode, content = found
        return self.fake._attrs(path.rpartition("/")[2], mode, len(content))

    lstat = stat

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> _Handle | int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            return paramiko.SFTP_PERMISSION_DENIED
        self.fake.opened.append(path)
        found = self.fake.lookup(path)
        content = found[1] if found else b"EVIL"
        return _Handle(content, self.fake._attrs(path, stat.S_IFREG | 0o644, len(content)))


@pytest.fixture
def hostile_sftp() -> Iterator[HostileSftp]:
    server = HostileSftp().start()
    yield server
    server.close()
