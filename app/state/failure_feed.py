"""Each process's own copy of which failure-count keys are over their limit.

The limiter's pre-check runs before every token, introspection and revocation
request. Reading the shared counters for it each time cost about 200 µs of
CPU, a third of a whole token request. Instead every process keeps the keys
that are over a limit in the current window (`Blocks`), and the shared store
pushes each new one to every process as it happens (`Feed`): PostgreSQL
LISTEN/NOTIFY on the `auth_failures` database, or Redis pub/sub when the
counters live in Redis. The instance whose failure crosses a limit adds the
key to its own copy at once and notifies the others in the same transaction
(PostgreSQL) or pipeline (Redis), so they know within milliseconds.

A process trusts its copy only while its feed is subscribed and has loaded the
blocks that already existed (it subscribes first, then loads, so nothing falls
between the two). Before that, while the feed's connection is down and while
the copy is over capacity, the pre-check reads the shared counters per request
as it always did. The feed's connection is checked every few seconds, so a
silently dead one is noticed. SQLite has no feed: several processes may share
one SQLite file, and a local read is cheap there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: The PostgreSQL NOTIFY channel and the Redis pub/sub channel.
CHANNEL = "ccserver_auth_failures"
#: The feed's PostgreSQL connection names itself so operators can tell it apart.
APPLICATION_NAME = "ccserver-ratelimit-feed"
#: Redis hash of the keys over a limit in one window, for a feed that (re)subscribes.
REDIS_BLOCKED = "authblocked:{window_start}"
#: Seconds a feed waits for a message before it checks its connection.
POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
#: Seconds between reconnection attempts after the feed's connection failed.
RETRY_SECONDS = 2.0
#: Keys held per window; past this the pre-check reads the store again (a flood
#: of distinct blocked ids must not grow a process without bound).
CAPACITY = 50_000


def payload(window_start: int, count: int, key: str) -> str:
    """One notification: the key last, so it may contain spaces."""
    return f"{window_start} {count} {key}"


def parse_payload(text: str) -> tuple[int, int, str] | None:
    """(window_start, count, key) from a notification; None for anything malformed."""
    parts = text.split(" ", 2)
    if len(parts) != 3 or not parts[2]:
        return None
    try:
        return int(parts[0]), int(parts[1]), parts[2]
    except ValueError:
        return None


class Blocks:
    """Keys over a limit, with their failure counts, for the current window only."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._window = -1
        self._counts: dict[str, int] = {}
        self._overflow_window = -1
        self._ready = False
        self._closed = False

    def trusted(self, window_start: int) -> bool:
        """True when the copy is whole for this window: the feed is up, nothing was dropped."""
        return self._ready and self._overflow_window != window_start

    def empty(self, window_start: int) -> bool:
        """True when no key has a count in this window (every key is below every limit)."""
        return window_start != self._window or not self._counts

    def count(self, key: str, window_start: int) -> int:
        if window_start != self._window:
            return 0
        return self._counts.get(key, 0)

    def add(self, window_start: int, count: int, key: str) -> None:
        with self._lock:
            if window_start < self._window:
                return  # a late message about a window that is over
            if window_start > self._window:
                self._window = window_start
                self._counts = {}
            if key not in self._counts and len(self._counts) >= self.capacity:
                self._overflow_window = window_start
                return
            # Counts only grow within a window; messages may arrive out of order.
            if count > self._counts.get(key, 0):
                self._counts[key] = count

    def replace(self, entries: Iterable[tuple[int, int, str]]) -> None:
        """Start over from what the store holds (the feed has just subscribed)."""
        with self._lock:
            self._window = -1
            self._counts = {}
            self._overflow_window = -1
        for window_start, count, key in entries:
            self.add(window_start, count, key)
        # A feed stopped while it was loading must not leave a copy that is
        # trusted but never updated again.
        self._ready = not self._closed

    def suspend(self) -> None:
        """The feed lost its connection: stop trusting the copy until it reloads."""
        self._ready = False

    def close(self) -> None:
        """The feed has stopped for good: never trust this copy again."""
        self._closed = True
        self._ready = False


class Source(Protocol):
    """Where a feed hears of blocks: PostgreSQL LISTEN/NOTIFY or Redis pub/sub."""

    def connect(self) -> None:
        """Subscribe; only once this returns is no message missed."""

    def load(self, window_start: int) -> list[tuple[int, int, str]]:
        """(window_start, count, key) of the blocks the store already holds for a window."""

    def messages(self, timeout: float) -> Iterator[str]:
        """The payloads that arrive within `timeout` seconds."""

    def heartbeat(self) -> None:
        """Raise if the connection has died silently."""

    def close(self) -> None: ...


class PostgresSource:
    """LISTEN on a connection of its own; the blocks are rows of auth_failures."""

    def __init__(self, conninfo: str, min_limit: int) -> None:
        self.conninfo = conninfo
        self.min_limit = min_limit
        self.conn: Any = None

    def connect(self) -> None:
        import psycopg

        self.conn = psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=5, application_name=APPLICATION_NAME
        )
        self.conn.execute(f"LISTEN {CHANNEL}")

    def load(self, window_start: int) -> list[tuple[int, int, str]]:
        rows = self.conn.execute(
            "SELECT window_start, count, key FROM auth_failures "
            "WHERE window_start = %s AND count >= %s",
            (window_start, self.min_limit),
        ).fetchall()
        return [(int(w), int(c), k) for w, c, k in rows]

    def messages(self, timeout: float) -> Iterator[str]:
        for notify in self.conn.notifies(timeout=timeout):
            yield notify.payload

    def heartbeat(self) -> None:
        self.conn.execute("SELECT 1")

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                self.conn.close()
            self.conn = None


class RedisSource:
    """A pub/sub subscription; the blocks are the per-window REDIS_BLOCKED hashes."""

    def __init__(self, client_factory: Callable[[], object]) -> None:
        self.client_factory = client_factory
        self.client: Any = None
        self.pubsub: Any = None

    def connect(self) -> None:
        self.client = self.client_factory()
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(CHANNEL)
        # Wait for the server to confirm: only then is no message missed.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=1.0)
            if message and message.get("type") == "subscribe":
                return
        raise ConnectionError("no subscription confirmation from Redis")

    def load(self, window_start: int) -> list[tuple[int, int, str]]:
        found = self.client.hgetall(REDIS_BLOCKED.format(window_start=window_start))
        return [(window_start, int(count), _text(key)) for key, count in found.items()]

    def messages(self, timeout: float) -> Iterator[str]:
        message = self.pubsub.get_message(timeout=timeout)
        while message is not None:
            if message.get("type") == "message":
                yield _text(message["data"])
            message = self.pubsub.get_message(timeout=0)

    def heartbeat(self) -> None:
        self.pubsub.ping()

    def close(self) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                self.pubsub.close()
            self.pubsub = None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class Feed:
    """A daemon thread that keeps `blocks` current from a source."""

    def __init__(self, source: Source, window: Callable[[], int]) -> None:
        self.source = source
        self.window = window
        self.blocks = Blocks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ccserver-ratelimit-feed")
        self._thread.daemon = True

    def start(self) -> Feed:
        self._thread.start()
        return self

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        self.blocks.close()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.source.connect()
                self.blocks.replace(self.source.load(self.window()))
                if failing:
                    log.warning("rate-limit feed reconnected")
                failing = False
                self._listen()
            except Exception as error:  # noqa: BLE001 - any failure: fall back, retry
                self.blocks.suspend()
                if not failing and not self._stop.is_set():
                    log.warning(
                        "rate-limit feed down (%s); reading counters per request",
                        type(error).__name__,
                    )
                failing = True
            finally:
                self.blocks.suspend()
                self.source.close()
            self._stop.wait(RETRY_SECONDS)

    def _listen(self) -> None:
        next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        while not self._stop.is_set():
            for text in self.source.messages(POLL_SECONDS):
                parsed = parse_payload(text)
                if parsed is not None:
                    self.blocks.add(*parsed)
            if time.monotonic() >= next_heartbeat:
                self.source.heartbeat()
                next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
