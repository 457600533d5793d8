"""One SSH connection to a machine, kept alive and re-established when the link drops.

Everything gpuctl does over SSH (commands, SFTP, tails) shares this one paramiko
transport: opening a connection costs a handshake and often a round trip across an
ocean, and a cloud firewall may rate-limit new connections. Failures are mapped once,
here, to one-line RemoteErrors with a hint, within bounded time (connect, banner, auth
and key-exchange timeouts are all set), because a hung `gpuctl` is worse than an error.
"""

from __future__ import annotations

import errno
import logging
import re
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import paramiko

from gpuctl.errors import HostKeyError, RemoteError
from gpuctl.host import ExecResult
from gpuctl.models import SshTarget

from .endpoint import Endpoint, resolve, target_from_spec
from .hostkeys import PinStore, changed_key_error, prepare_client

if TYPE_CHECKING:
    from gpuctl.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
# paramiko logs a dropped socket at ERROR from its own thread; without a handler Python's
# last-resort handler would print that onto the user's terminal (or over the TUI).
logging.getLogger("paramiko").addHandler(logging.NullHandler())

KEEPALIVE_SECONDS = 15
SFTP_WINDOW = 64 << 20  # bytes in flight per SFTP channel: keeps a long fat link busy
SFTP_PACKET = 256 << 10  # one SSH packet per SFTP reply instead of two
# Fastest first where paramiko has them: GCM needs no separate MAC pass per packet.
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
CHANNEL_TIMEOUT = 120.0  # a single SFTP response slower than this means the link is dead
AUTH_RETRY_WINDOW = 60.0  # a booting machine may accept TCP before its key is installed
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# What a failed connect means for a retry while a machine boots.
FATAL, NETWORK, AUTH = "fatal", "network", "auth"


class LinkDropped(paramiko.SSHException):
    """The connection died under an operation (distinct from the command failing)."""


def env_preamble(env: Mapping[str, str] | None) -> str:
    """`export` lines fed on stdin: secrets never touch the remote disk or a process list."""
    lines = []
    for name, value in (env or {}).items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"bad environment variable name {name!r}")
        lines.append(f"export {name}={shlex.quote(str(value))}\n")
    return "".join(lines)


def command_script(command: str, env: Mapping[str, str] | None) -> bytes:
    """The script `sh -s` reads: exports, then the command with stdin at /dev/null."""
    return (env_preamble(env) + "{ " + command + "\n} </dev/null\n").encode()


class Session:
    """A lazily opened, self-healing connection; thread-safe for exec and SFTP."""

    def __init__(
        self,
        target: SshTarget,
        settings: Settings,
        *,
        connect_timeout: float = 10.0,
        boot_wait: float = 0.0,
        reconnect_wait: float = 30.0,
        keepalive: int = KEEPALIVE_SECONDS,
        _jump_chain: str | None = None,
    ) -> None:
        self.target = target
        self.settings = settings
        self.endpoint: Endpoint = resolve(target)
        if _jump_chain is not None:
            self.endpoint = _with_jump(self.endpoint, _jump_chain or None)
        self.connect_timeout = connect_timeout
        self.boot_wait = boot_wait
        self.reconnect_wait = reconnect_wait
        self.keepalive = keepalive
        self.pins = PinStore(settings.known_hosts)
        self._client: paramiko.SSHClient | None = None
        self._jump: Session | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self.sftp_lock = threading.RLock()
        self.generation = 0  # bumps on every (re)connect
        self.reconnects = 0

    @property
    def label(self) -> str:
        return self.endpoint.label

    # -- connecting ------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection now (waiting up to boot_wait for a booting machine)."""
        self.client()

    def client(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None and self._active(self._client):
                return self._client
            first = self._client is None and self.generation == 0
            self._drop()
            wait = self.boot_wait if first else max(self.boot_wait, self.reconnect_wait)
            self._client = self._connect_with_retry(wait)
            self.generation += 1
            if not first:
                self.reconnects += 1
                log.info("reconnected to %s", self.label)
            return self._client

    @staticmethod
    def _active(client: paramiko.SSHClient) -> bool:
        t = client.get_transport()
        return t is not None and t.is_active()

    def alive(self) -> bool:
        """Whether the connection is up right now (never connects)."""
        client = self._client
        return client is not None and self._active(client)

    def transport(self) -> paramiko.Transport:
        t = self.client().get_transport()
        assert t is not None
        return t

    @property
    def local_port(self) -> int | None:
        """The client-side TCP port of the live connection (tests kill its sshd child)."""
        client = self._client
        t = client.get_transport() if client else None
        if t is None or self._jump is not None:
            return None
        try:
            return int(t.sock.getsockname()[1])
        except (OSError, AttributeError, TypeError):
            return None

    def _connect_with_retry(self, wait: float) -> paramiko.SSHClient:
        deadline = time.monotonic() + wait
        delay = 0.5
        auth_deadline: float | None = None
        while True:
            try:
                return self._connect_once()
            except _ConnectFailure as failure:
                now = time.monotonic()
                if failure.kind == AUTH and wait > 0:
                    auth_deadline = auth_deadline or now + min(wait, AUTH_RETRY_WINDOW)
                    if now + delay > auth_deadline:
                        raise failure.error from None
                if failure.kind == FATAL or now + delay > deadline:
                    raise failure.error from None
                log.debug("ssh %s not ready (%s); retrying in %.1fs", self.label, failure, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _sock(self) -> Any:
        ep = self.endpoint
        if ep.proxy_jump:
            hops = [h.strip() for h in ep.proxy_jump.split(",") if h.strip()]
            jump_target = target_from_spec(hops[-1], key_path=self.target.key_path)
            self._jump = Session(
                jump_target,
                self.settings,
                connect_timeout=self.connect_timeout,
                _jump_chain=",".join(hops[:-1]),
            )
            try:
                t = self._jump.transport()
                return t.open_channel(
                    "direct-tcpip",
                    (ep.host, ep.port),
                    ("127.0.0.1", 0),
                    timeout=self.connect_timeout,
                )
            except RemoteError as exc:
                raise _ConnectFailure(
                    FATAL,
                    RemoteError(f"via jump host {self._jump.label}: {exc.message}", hint=exc.hint),
                ) from None
            except (paramiko.SSHException, OSError) as exc:
                raise _ConnectFailure(
                    NETWORK,
                    RemoteError(
                        f"jump host {self._jump.label} cannot reach {ep.host}:{ep.port}: {exc}",
                        hint="check ProxyJump and HostName in ~/.ssh/config",
                    ),
                ) from None
        if ep.proxy_command:
            return paramiko.ProxyCommand(ep.proxy_command)
        return None

    def _connect_once(self) -> paramiko.SSHClient:
        ep = self.endpoint
        for key in ep.key_files:
            if not Path(key).is_file():
                raise _ConnectFailure(
                    FATAL,
                    RemoteError(
                        f"identity file {key} not found", hint="check --identity or IdentityFile"
                    ),
                )
        client = paramiko.SSHClient()
        prepare_client(client, self.pins, ep.pin_name, ep.host, ep.port)
        timeout = self.connect_timeout
        try:
            sock = self._sock()
            client.connect(
                hostname=ep.host,
                port=ep.port,
                username=ep.user,
                key_filename=list(ep.key_files) or None,
                allow_agent=not (ep.identities_only and ep.key_files),
                look_for_keys=not ep.key_files,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                sock=sock,
                transport_factory=_fast_transport,
            )
        except _ConnectFailure:
            client.close()
            raise
        except Exception as exc:
            client.close()
            raise _ConnectFailure(*self._map_error(exc)) from None
        t = client.get_transport()
        assert t is not None
        t.set_keepalive(self.keepalive)
        _tcp_keepalive(t.sock)
        return client

    def _map_error(self, exc: BaseException) -> tuple[str, RemoteError]:
        ep = self.endpoint
        where = f"{ep.host}:{ep.port}"
        firewall = (
            "check the address, and that the firewall / security group allows SSH from your IP"
        )
        if isinstance(exc, HostKeyError):
            return FATAL, exc
        if isinstance(exc, paramiko.BadHostKeyException):
            return FATAL, changed_key_error(ep.pin_name, exc.expected_key, exc.key, self.pins.path)
        if isinstance(exc, paramiko.PasswordRequiredException):
            return FATAL, RemoteError(
                f"the key for {self.label} is passphrase-protected",
                hint="load it into ssh-agent (ssh-add KEY) and retry",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            tried = ", ".join(ep.key_files) or "ssh-agent and ~/.ssh default keys"
            return AUTH, RemoteError(
                f"authentication failed for {self.label} (tried {tried})",
                hint="pass --identity KEY, add the key to ssh-agent, or check the user name "
                "(ubuntu, root, ec2-user)",
            )
        if isinstance(exc, socket.gaierror):
            return FATAL, RemoteError(
                f"cannot resolve host '{ep.host}'", hint="check the host name or ~/.ssh/config"
            )
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            codes = {e.errno for e in exc.errors.values()}
            if codes <= {errno.ECONNREFUSED}:
                return NETWORK, RemoteError(
                    f"connection refused by {where}: nothing listens on port {ep.port}",
                    hint="is sshd running and is this the right port? a booting machine "
                    "needs a minute",
                )
            return NETWORK, RemoteError(f"{where} is unreachable", hint=firewall)
        if isinstance(exc, TimeoutError | socket.timeout):
            return NETWORK, RemoteError(
                f"no answer from {where} within {self.connect_timeout:g}s", hint=firewall
            )
        if isinstance(exc, ConnectionRefusedError):
            return NETWORK, RemoteError(
                f"connection refused by {where}: nothing listens on port {ep.port}",
                hint="is sshd running and is this the right port?",
            )
        if isinstance(exc, OSError) and exc.errno in (
            errno.EHOSTUNREACH,
            errno.ENETUNREACH,
            errno.EHOSTDOWN,
        ):
            return NETWORK, RemoteError(f"{where} is unreachable ({exc.strerror})", hint=firewall)
        if isinstance(exc, paramiko.SSHException) and "banner" in str(exc).lower():
            return NETWORK, RemoteError(
                f"{where} accepted the connection but did not answer as an SSH server "
                f"within {self.connect_timeout:g}s",
                hint="the machine may still be booting, or the port is not SSH",
            )
        if isinstance(exc, EOFError | ConnectionError | paramiko.SSHException):
            text = str(exc) or type(exc).__name__
            return NETWORK, RemoteError(f"SSH to {where} failed: {text}", hint=firewall)
        if isinstance(exc, OSError):
            return NETWORK, RemoteError(
                f"SSH to {where} failed: {exc.strerror or exc}", hint=firewall
            )
        return FATAL, RemoteError(f"SSH to {where} failed: {exc!r}", hint=firewall)

    # -- link-drop handling ----------------------------------------------------------------

    def _link_broken(self, exc: BaseException) -> bool:
        client = self._client
        if client is None or not self._active(client):
            return True
        if isinstance(exc, paramiko.AuthenticationException):
            return False
        if isinstance(exc, EOFError | paramiko.SSHException | ConnectionError | TimeoutError):
            return True
        return isinstance(exc, OSError) and exc.errno is None and "closed" in str(exc).lower()

    def _invalidate(self, generation: int) -> None:
        """Forget a dead connection once, however many threads noticed it."""
        with self._lock:
            if self.generation == generation:
                self._drop()

    def call(self, op: Callable[[], T], *, what: str) -> T:
        """Run op; if the link dropped under it, reconnect (with backoff) and run it once more.

        Ops must be safe to repeat: reads by offset, stats, atomic writes, and commands
        written to be idempotent (the agent refuses a second start).
        """
        self.client()
        generation = self.generation
        try:
            return op()
        except RemoteError:
            raise
        except Exception as exc:
            if not self._link_broken(exc):
                raise
            log.info("link to %s dropped during %s (%s); reconnecting", self.label, what, exc)
            self._invalidate(generation)
        self.client()
        generation = self.generation
        try:
            return op()
        except RemoteError:
            raise
        except Exception as exc:
            if not self._link_broken(exc):
                raise
            self._invalidate(generation)
            raise RemoteError(
                f"connection to {self.label} dropped twice during {what}",
                hint="the network is unstable; gpuctl will retry on the next step",
            ) from None

    # -- commands --------------------------------------------------------------------------

    def exec(
        self,
        command: str,
        *,
        timeout: float | None = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        script = command_script(command, env)
        return self.call(lambda: self._exec_once(script, timeout), what="a command")

    def _exec_once(self, script: bytes, timeout: float | None) -> ExecResult:
        chan = self.transport().open_session(timeout=self.connect_timeout)
        try:
            chan.exec_command("exec sh -s")
            chan.sendall(script)
            chan.shutdown_write()
            return self._collect(chan, timeout)
        finally:
            chan.close()

    def _collect(self, chan: paramiko.Channel, timeout: float | None) -> ExecResult:
        out, err = bytearray(), bytearray()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while chan.recv_ready():
                out += chan.recv(1 << 16)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
            if chan.eof_received or chan.closed:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise RemoteError(
                    f"command timed out after {timeout:g}s on {self.label}",
                    hint="the machine may be overloaded or the link stalled",
                )
            select.select([chan], [], [], 1.0 if remaining is None else min(remaining, 1.0))
        remaining = 10.0 if deadline is None else max(0.1, deadline - time.monotonic())
        chan.status_event.wait(remaining)
        while chan.recv_ready():
            out += chan.recv(1 << 16)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(1 << 16)
        if not chan.exit_status_ready():
            raise LinkDropped("channel closed without an exit status")
        return ExecResult(
            chan.recv_exit_status(),
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )

    # -- SFTP ------------------------------------------------------------------------------

    def sftp(self) -> paramiko.SFTPClient:
        """The shared SFTP client (reopened after a reconnect); hold sftp_lock while using it."""
        with self._lock:
            client = self.client()
            if self._sftp is None or self._sftp.sock.closed:
                t = client.get_transport()
                assert t is not None
                try:
                    sftp = paramiko.SFTPClient.from_transport(
                        t, window_size=SFTP_WINDOW, max_packet_size=SFTP_PACKET
                    )
                except paramiko.SSHException as exc:
                    raise RemoteError(
                        f"SFTP is not available on {self.label}: {exc}",
                        hint="enable the sftp subsystem in sshd_config",
                    ) from None
                assert sftp is not None
                sftp.get_channel().settimeout(CHANNEL_TIMEOUT)
                self._sftp = sftp
            return self._sftp

    def sftp_open(self, sftp: paramiko.SFTPClient, path: str, mode: str) -> paramiko.SFTPFile:
        """Open a remote file with the largest request size the server takes (2-4x faster)."""
        fh = sftp.open(path, mode)
        fh.MAX_REQUEST_SIZE = self.sftp_request_size()
        return fh

    def sftp_request_size(self) -> int:
        """Bytes per SFTP read/write request: OpenSSH 9 serves 255 KiB, older 64 KiB."""
        client = self._client
        t = client.get_transport() if client else None
        m = re.search(r"OpenSSH_(\d+)", (t.remote_version if t else "") or "")
        if not m:
            return 32768  # paramiko's default, safe with any server
        return 261120 if int(m.group(1)) >= 9 else 65536

    # -- teardown --------------------------------------------------------------------------

    def _drop(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:
                pass
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    def close(self) -> None:
        """Drop the connection; a later call connects again (a closed host stays usable)."""
        with self._lock:
            self._drop()
            self.generation = 0


class _ConnectFailure(Exception):
    def __init__(self, kind: str, error: RemoteError) -> None:
        super().__init__(error.message)
        self.kind = kind
        self.error = error


def _with_jump(ep: Endpoint, chain: str | None) -> Endpoint:
    from dataclasses import replace

    return replace(ep, proxy_jump=chain, proxy_command=None if chain else ep.proxy_command)


def _fast_transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    t = paramiko.Transport(sock, **kwargs)
    opts = t.get_security_options()
    fast = tuple(c for c in _FAST_CIPHERS if c in opts.ciphers)
    opts.ciphers = fast + tuple(c for c in opts.ciphers if c not in fast)
    return t


def _tcp_keepalive(sock: Any) -> None:
    """Let the kernel notice a dead peer in about a minute (paramiko's keepalive only sends)."""
    if not isinstance(sock, socket.socket):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass
