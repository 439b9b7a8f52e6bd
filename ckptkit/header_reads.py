"""Every file's header of a checkpoint read and parsed, by this process alone or, for many files,
together with a forked child (forked.py) on the second core: headers are CPU-bound to parse.

The two share the files out as each gets free (``forked.Claims``), not by halves fixed in
advance, so neither waits long for the other. If either side fails, all of the headers are read
here again, so the error is the one a single process meets first. The child's reads are not fed
to the source's checksums: only for callers that read headers alone (inspect).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import closing

from . import forked, index_codec
from .errors import CkptError
from .formats.safetensors import SafetensorsHeader
from .sources.base import Source

Progress = Callable[[int, int], None]  # (done, total)
Header = tuple[SafetensorsHeader, int | None]   # a parsed header and its file's size

# Fewer headers than this are read here: a child's start-up and hand-back would cost more.
SPLIT_MIN_FILES = 16


def read_headers(source: Source, files: list[str], fetch: Callable[[str], Header], progress: Progress | None,
                 split: bool) -> list[Header]:
    """``fetch(path)`` for every file of ``files`` (each parsed on the reading thread as it
    arrives), in order; with ``split``, shared with a forked child when there are many."""
    done = [0]

    def counted(path: str) -> Header:
        got = fetch(path)
        done[0] += 1
        if progress:
            progress(done[0], len(files))
        return got

    claims = forked.Claims.make(len(files)) if split and len(files) >= SPLIT_MIN_FILES else None
    child = forked.start_stream(lambda emit: _claimed(source, files, fetch, claims, emit)) if claims else None
    if claims and child is None:
        claims.close()
    if claims is None or child is None:
        return source.map(counted, files)
    theirs: dict[int, Header] = {}
    collector = threading.Thread(target=_collect, args=(child, files, theirs), name="ckptkit-headers", daemon=True)
    collector.start()   # takes the child's headers in as they come
    warming = warm_up()  # in this process's waits for its headers (a fork needs it ended: joined below)
    try:
        mine: dict[int, Header] | None = _claimed(source, files, counted, claims)
    except CkptError:
        mine = None
    finally:
        warming.join()
        collector.join()
        claims.close()
    if mine is None or not child.complete or len(mine) + len(theirs) != len(files) or mine.keys() & theirs.keys():
        return source.map(counted, files)
    got = {**mine, **theirs}
    if progress:
        progress(len(files), len(files))
    return [got[i] for i in range(len(files))]


def _claimed(source: Source, files: list[str], fetch: Callable[[str], Header], claims: forked.Claims,
             emit: Callable[[bytes], None] | None = None) -> dict[int, Header]:
    """``fetch`` of each file whose position this process claims first, by position; ``emit``
    also sends each one on as it is read (in a forked child: ``_collect`` takes them in)."""
    got: dict[int, Header] = {}

    def one(_: int) -> None:
        at = claims.next()
        if at is not None:
            got[at] = header = fetch(files[at])
            if emit:
                emit(index_codec.encode_headers({at: header}))

    source.map(one, range(len(files)))
    return got


def _collect(child: forked.Child, files: list[str], into: dict[int, Header]) -> None:
    """The headers ``child`` sends, by position, until it ends; on anything that is not what
    ``_claimed`` sent, stop (the child is stopped, ``child.complete`` stays False)."""
    try:
        with closing(child.frames()) as frames:
            for frame in frames:
                for at, header in index_codec.decode_headers(frame, files).items():
                    if at in into:
                        raise ValueError(f"position {at} sent twice")
                    into[at] = header
    except (ValueError, TypeError, KeyError, IndexError):  # not what encode_headers wrote: read here
        pass


def warm_up() -> threading.Thread:
    """A thread importing inference and loading the mapping tables it and the index's
    tensor-parallel check read, started while this one mostly waits for headers to arrive (~0.08 s
    of a cold inspect that those waits hide). Failures are left for this thread to meet and report."""
    def load() -> None:
        try:
            from . import infer, mapdata
            mapdata.convert_families()
            infer.load_tables()
        except BaseException:  # noqa: BLE001 - the same load on the main thread reports it
            pass
    t = threading.Thread(target=load, name="ckptkit-warm-up", daemon=True)
    t.start()
    return t
