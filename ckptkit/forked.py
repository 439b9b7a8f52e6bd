"""CPU-bound work on the second core: a forked child computes bytes while this process goes on.

Python runs one thread at a time, so the parsing and text building of a large inspect (91,991
DeepSeek-V3 tensors: ~0.5 s of headers, ~0.15 s of report text) cannot share a machine's cores
through threads. A forked child can: it starts with this process's memory as it is (no copy, no
pickling), computes, and sends plain bytes back through a pipe, at its end (``start``) or frame
by frame as it goes (``start_stream``); ``Claims`` shares a list of work out between the threads
of both processes as each gets free. Anything that goes wrong in a child (an exception, a crash,
a kill) shows as a result of ``None`` or a stream not ``complete``, and the caller then does the
work itself, so a child changes how fast a result comes, never what it is, nor which error is
reported.

Only the console script allows it (``allow``): a program that imports ckptkit may hold state a
forked copy must not touch. Even then a child is made only where fork is safe: a POSIX system
other than macOS, and no other thread running. ``CKPTKIT_NO_FORK=1`` turns it off.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Generator

ENV_NO_FORK = "CKPTKIT_NO_FORK"
_allowed = False


def allow() -> None:
    """Let this process fork helpers (called by the console script, ckptkit/__main__.py)."""
    global _allowed
    _allowed = True


_helpers: list[threading.Thread] = []


def helper(thread: threading.Thread) -> None:
    """Count ``thread``, one that ends on its own soon (a warm-up), as one to wait for before
    forking rather than a reason not to fork."""
    _helpers.append(thread)


def settle() -> None:
    """Wait for the threads ``helper`` counted."""
    while _helpers:
        _helpers.pop().join()


def fork_safe() -> bool:
    """Whether this process can fork safely, once the ``helper`` threads have ended: a POSIX
    system other than macOS (whose system libraries may not survive a fork), and no other thread
    (one could hold a lock forever)."""
    settle()
    return hasattr(os, "fork") and sys.platform != "darwin" and threading.active_count() == 1


def possible() -> bool:
    return _allowed and fork_safe() and not os.environ.get(ENV_NO_FORK)


_END = b"\xff" * 8   # the frame length that marks a child's last frame: it finished its work
_READ = 1 << 20     # bytes read from a child's pipe at once (and the pipe's size, where it can be set)


class Child:
    """``work`` run in a forked child; its frames of bytes as they come (``frames``), or all of
    them at its end (``result``). ``complete`` says whether the child finished cleanly."""

    def __init__(self, pid: int, fd: int):
        self._pid = pid
        self._fd: int | None = fd   # None once read
        self.complete = False

    def frames(self) -> Generator[bytes, None, None]:
        """Each frame the child sends, as it comes. After the last, ``complete`` is True if the
        child sent its end mark and exited with status 0. Leaving early stops the child. Only
        once: a second call has nothing."""
        if self._fd is None:   # already read
            return
        fd, self._fd = self._fd, None
        ended = False
        buf = bytearray()
        at = 0          # where the next frame starts in buf
        try:
            while not ended:
                # as much as the pipe holds in one call: under load this thread may wait for
                # the interpreter lock after each read, so few large reads keep the child going
                chunk = os.read(fd, _READ)
                if not chunk:
                    break   # the child ended without its end mark: it died or failed
                buf += chunk
                while len(buf) - at >= 8:
                    head = bytes(buf[at:at + 8])
                    if head == _END:
                        ended = len(buf) == at + 8
                        break
                    n = int.from_bytes(head, "little")
                    if len(buf) - at - 8 < n:
                        break
                    yield bytes(buf[at + 8:at + 8 + n])
                    at += 8 + n
                if at:
                    del buf[:at]
                    at = 0
        finally:
            os.close(fd)
            _, status = os.waitpid(self._pid, 0)
            self.complete = ended and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

    def result(self) -> bytes | None:
        """Everything the child sent, or None if it did not finish cleanly."""
        data = b"".join(self.frames())
        return data if self.complete else None


def start(work: Callable[[], bytes]) -> Child | None:
    """``work`` in a forked child, its bytes sent as one frame (``Child.result``), or None where
    no child can be made (the caller works here)."""
    return start_stream(lambda emit: emit(work()))


def start_stream(work: Callable[[Callable[[bytes], None]], object]) -> Child | None:
    """``work(emit)`` in a forked child, or None where no child can be made (the caller works
    here); ``emit`` sends a frame of bytes to the parent and may be called from any thread;
    what ``work`` returns is dropped."""
    if not possible():
        return None
    r, w = os.pipe()
    _widen(w)
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return None
    if pid == 0:  # the child: compute, write, leave without running anything of the parent's
        code = 1
        try:
            os.close(r)
            code = _child(w, work)
        except BaseException:  # noqa: BLE001 - the parent does the work itself
            pass
        finally:
            os._exit(code)
    os.close(w)
    return Child(pid, r)


def _child(fd: int, work: Callable[[Callable[[bytes], None]], object]) -> int:
    """``work(emit)`` with one thread writing the frames ``emit`` queues, so that the threads of
    ``work`` go on as soon as they have one: writing waits for the pipe and, after each system
    call, for the interpreter lock, which ``work``'s threads hold while they compute. 0 if all
    was written, with the end mark (only when ``work`` returned); if the parent stops reading,
    the child ends at once."""
    frames: queue.SimpleQueue[bytes | bool] = queue.SimpleQueue()  # then True: work ended; False: it failed
    written: list[bool] = []

    def writer() -> None:
        try:
            while type(frame := frames.get()) is bytes:
                _write_all(fd, [len(frame).to_bytes(8, "little"), frame])
            if frame:
                _write_all(fd, [_END])
                written.append(True)
        except OSError:     # a broken pipe: the parent stopped reading and will do the work itself,
            os._exit(1)     # so the rest of this child's is wasted: it ends here

    t = threading.Thread(target=writer, name="ckptkit-child-writer", daemon=True)
    t.start()
    ok = False
    try:
        work(frames.put)
        ok = True
    finally:
        frames.put(ok)
        t.join()
    return 0 if written else 1


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Each of ``parts`` written to ``fd`` in one system call where the pipe takes it all."""
    views = [memoryview(p) for p in parts]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]


def _widen(fd: int) -> None:
    """A pipe that holds ``_READ`` bytes where Linux allows it (``/proc/sys/fs/pipe-max-size``,
    1 MB by default), so a child rarely waits for this process to read what it sent."""
    try:
        import fcntl
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _READ)
    except (ImportError, AttributeError, OSError):
        pass    # not Linux, or over the limit: the default size (64 kB) works, more slowly


class Claims:
    """The numbers 0..n-1, each handed to the first thread that asks, in this process or in a
    child forked after this was made: 4-byte records in a pipe filled before the fork. Linux
    reads a pipe under a lock, so a 4-byte read takes one whole record; so the two processes
    share out work as each gets free instead of by halves fixed in advance."""

    RECORD = 4

    def __init__(self, fd: int):
        self._fd = fd

    @classmethod
    def make(cls, n: int) -> Claims | None:
        """None where the records cannot all wait in a pipe (not Linux, or a pipe too small)."""
        if not sys.platform.startswith("linux"):
            return None
        import fcntl
        r, w = os.pipe()
        try:
            fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
            data = b"".join(i.to_bytes(cls.RECORD, "little") for i in range(n))
            written = os.write(w, data) if data else 0
        except OSError:  # a full pipe (EAGAIN): fewer than n records fit
            written = -1
        finally:
            os.close(w)
        if written != len(data):
            os.close(r)
            return None
        return cls(r)

    def next(self) -> int | None:
        """The next unclaimed number, or None when all are claimed."""
        got = os.read(self._fd, self.RECORD)
        return int.from_bytes(got, "little") if len(got) == self.RECORD else None

    def drain(self) -> None:
        """Claim every number left, so that no thread of either process starts more work (the
        records are whole: every other read takes exactly one)."""
        while os.read(self._fd, 1 << 16):
            pass

    def close(self) -> None:
        os.close(self._fd)
