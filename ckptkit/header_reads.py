"""Every file's header of a checkpoint read and parsed, by this process alone or, for many files,
together with a forked child (forked.py) on the second core: headers are CPU-bound to parse.

The two share the files out as each gets free (``forked.Claims``), not by halves fixed in
advance, so neither waits long for the other; the child sends each header back as soon as it is
parsed, and a thread here takes it in. Whatever the caller wants made of each file's tensors
(``PerFile``: the report's rows, inference's scan) is made there too, by the
process that read the file, so that work is shared by two cores instead of following the reads
on one. If either side fails, all of the headers are read here again, so the error is the one a
single process meets first. The child's reads are not fed to the source's checksums: only for
callers that read headers alone (inspect).
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import closing

from . import forked, index_codec
from .errors import CkptError
from .formats.safetensors import SafetensorsHeader
from .index import TensorInfo
from .sources.base import Source

Progress = Callable[[int, int], None]  # (done, total)
Header = tuple[SafetensorsHeader, int | None]   # a parsed header and its file's size
# things made of each file's tensors as its header is read (report.PER_FILE), by name, as bytes
PerFile = Mapping[str, Callable[[list[TensorInfo]], bytes]]

# Fewer headers than this are read here: a child's start-up and hand-back would cost more.
SPLIT_MIN_FILES = 16
# How long a thread of this process may keep the interpreter while the headers are read
# (Python's default is 5 ms): the parsing is bound by memory more than by instructions, and
# threads taking turns every 5 ms on different files evict each other's from the caches. A
# thread waiting for the network gives the interpreter up at once whatever this is.
SWITCH_INTERVAL = 0.02


def read_headers(source: Source, files: list[str], fetch: Callable[[str], Header], progress: Progress | None,
                 split: bool, per_file: PerFile | None = None) -> tuple[list[Header], dict[str, list[bytes]]]:
    """``fetch(path)`` for every file of ``files`` (each parsed on the reading thread as it
    arrives), in order; with ``split``, shared with a forked child when there are many. Then
    also, when a child shared the work, each of ``per_file`` (name -> function) of each file's
    tensors, made by the process that read it, by name, in the order of ``files`` (else empty)."""
    done = [0]
    makers = per_file or {}

    def one_done() -> None:     # a header read here, or taken in from the child
        done[0] += 1
        if progress:
            progress(done[0], len(files))

    def counted(path: str) -> Header:
        got = fetch(path)
        one_done()
        return got

    claims = forked.Claims.make(len(files)) if split and len(files) >= SPLIT_MIN_FILES else None
    child = forked.start_stream(lambda emit: _claimed(source, files, fetch, claims, makers, emit)) \
        if claims else None
    if claims and child is None:
        claims.close()
    if claims is None or child is None:
        return source.map(counted, files), {}
    theirs: dict[int, tuple[Header, list[bytes]]] = {}
    collector = threading.Thread(target=_collect, args=(child, files, len(makers), theirs, one_done),
                                 name="ckptkit-headers", daemon=True)
    collector.start()   # takes the child's headers in as they come
    warm_up()  # in this process's waits for its headers, unless done earlier (joined below)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        mine: dict[int, tuple[Header, list[bytes]]] | None = _claimed(source, files, counted, claims, makers)
    except CkptError:
        mine = None
    finally:
        sys.setswitchinterval(interval)
        forked.settle()     # the warm-up
        collector.join()
        claims.close()
    if mine is None or not child.complete or len(mine) + len(theirs) != len(files) or mine.keys() & theirs.keys():
        done[0] = 0     # all of them again
        return source.map(counted, files), {}
    got = {**mine, **theirs}
    if progress:
        progress(len(files), len(files))
    made = {name: [got[i][1][k] for i in range(len(files))] for k, name in enumerate(makers)}
    return [got[i][0] for i in range(len(files))], made


def _claimed(source: Source, files: list[str], fetch: Callable[[str], Header], claims: forked.Claims,
             makers: PerFile, emit: Callable[[bytes], None] | None = None) -> dict[int, tuple[Header, list[bytes]]]:
    """``fetch`` (and ``makers``) of each file whose position this process claims first, by
    position; ``emit`` also sends each one on as it is read (in a forked child: ``_collect``
    takes them in)."""
    got: dict[int, tuple[Header, list[bytes]]] = {}
    if emit:    # the forked child: set here, as this process sets it around its own share
        sys.setswitchinterval(SWITCH_INTERVAL)

    def worker(_: int) -> None:
        try:
            while (at := claims.next()) is not None:
                header = fetch(files[at])
                made = [make(header[0].tensors) for make in makers.values()]
                got[at] = header, made
                if emit:   # the header as JSON columns, then each thing made, each after its length
                    emit(b"".join(len(x).to_bytes(8, "little") + x
                                  for x in [index_codec.encode_headers({at: header}), *made]))
        except BaseException:
            claims.drain()  # all will be read again here: neither process need read more
            raise

    # each reading thread claims in turn; the two processes together keep the source's number
    # of reads in flight (more threads only contend for each process's interpreter lock)
    source.map(worker, range(min(max(1, source.concurrency // 2), len(files))))
    return got


def _collect(child: forked.Child, files: list[str], n_made: int, into: dict[int, tuple[Header, list[bytes]]],
             arrived: Callable[[], None]) -> None:
    """The headers (and things made of them) ``child`` sends, by position, until it ends; on
    anything that is not what ``_claimed`` sent, stop (the child is stopped, ``child.complete``
    stays False)."""
    try:
        with closing(child.frames()) as frames:
            for frame in frames:
                pieces = _split(frame)
                ((at, header),) = index_codec.decode_headers(pieces[0], files).items()
                if at in into or len(pieces) != 1 + n_made:
                    raise ValueError(f"position {at} sent twice, or not all of it")
                into[at] = header, pieces[1:]
                arrived()
    except (ValueError, TypeError, KeyError, IndexError):  # not what _claimed sent: read here
        pass


def _split(frame: bytes) -> list[bytes]:
    """The pieces of ``frame``, each after its 8-byte length; ValueError if one is cut short."""
    pieces, at = [], 0
    while at < len(frame):
        n = int.from_bytes(frame[at:at + 8], "little")
        if at + 8 + n > len(frame):
            raise ValueError("a piece cut short")
        pieces.append(frame[at + 8:at + 8 + n])
        at += 8 + n
    return pieces


_warmed = False


def warm_up() -> None:
    """Start a thread importing inference and loading the mapping tables it and the index's
    tensor-parallel check read, while this one mostly waits on the network (~0.05-0.08 s of a
    cold inspect that those waits hide); once per process. Failures are left for the main thread
    to meet and report. A fork waits for it to end (``forked.helper``)."""
    global _warmed
    if _warmed:
        return
    _warmed = True

    def load() -> None:
        try:
            from . import infer, mapdata
            mapdata.convert_families()
            infer.load_tables()
        except BaseException:  # noqa: BLE001 - the same load on the main thread reports it
            pass
    t = threading.Thread(target=load, name="ckptkit-warm-up", daemon=True)
    t.start()
    forked.helper(t)
