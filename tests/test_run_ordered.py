"""The conversion's job stream (conversion/run.py): chunks in order, the first ones made before
the writer asks (while it encodes the file's header), never more than threads + 1 at once."""
from __future__ import annotations

import threading
import time

import pytest

from ckptkit.conversion.run import Job, _Ordered


def _jobs(n: int, started: list[int], running: list[int], peak: list[int], lock: threading.Lock) -> list[Job]:
    def make(i: int) -> bytes:
        with lock:
            started.append(i)
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return bytes([i])
    return [Job((), lambda i=i: make(i)) for i in range(n)]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_chunks_come_in_order_and_the_first_start_at_once(threads):
    started: list[int] = []
    running, peak, lock = [0], [0], threading.Lock()
    stream = _Ordered(_jobs(20, started, running, peak, lock), lambda *a: b"", threads)
    try:
        if threads > 1:
            deadline = time.monotonic() + 5
            while len(started) < threads and time.monotonic() < deadline:
                time.sleep(0.001)
            assert sorted(started)[:threads] == list(range(threads))   # before anything was asked for
        assert b"".join(stream) == bytes(range(20))
        assert peak[0] <= threads
    finally:
        stream.close()


def test_a_failing_job_stops_the_stream_and_close_waits():
    def boom() -> bytes:
        raise ValueError("bad chunk")
    jobs = [Job((), lambda: b"a"), Job((), boom), Job((), lambda: b"c")]
    stream = _Ordered(jobs, lambda *a: b"", 2)
    assert next(stream) == b"a"
    with pytest.raises(ValueError, match="bad chunk"):
        next(stream)
    stream.close()
