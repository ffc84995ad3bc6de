"""Export files: a store's sealed records, streamed to a file and back (``registryd storage
export`` / ``import``), format ``registryd-export`` version 1.

    file     = frame(H, header) frame(R, records)* frame(E, trailer), then end of file
    frame    = tag (1 byte: b"H", b"R" or b"E") || length (be32, ≤ 16 MiB) || body (msgpack)
    header   = map {format: "registryd-export", version: 1, schema_version: "1",
                    index_key_id: bin 32, created_at_ms: int, source: str (backend kind)}
    records  = array (≤ 1,000) of [kind: str, key: bin, value: bin, expires_at_ms: int | nil]
    trailer  = map {records: int, counts: {kind: int}, mac: bin 32}

Records are :class:`~registryd.storage.base.Record` as a backend yields them (P20): blind
indexes and sealed values, never plaintext. ``index_key_id`` names the index key without
revealing it (:meth:`Storage.index_key_id`): a file made under another key is refused, since
its records would not open. ``mac`` is BLAKE3 keyed with :meth:`Storage.export_mac_key` over
every byte before the trailer frame: it catches truncation and corruption, and, keyed, a file
altered or forged by someone without the index key (node URLs and directory records are public
data, not sealed). msgpack (``msgspec``, already a dependency) keeps bytes as bytes: no base64.

An import reads the file twice: first it checks everything (header, every record, counts, MAC)
and writes nothing; then it writes, one atomic durable batch per frame. If the second pass
fails (the file changed between the passes, a storage error), the store holds part of the file
and :class:`TransferError` says to wipe it and import again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import BinaryIO

import blake3
import msgspec

from ..aead import NONCE_LEN
from ..errors import StorageError, TransferError
from .base import SCHEMA_VERSION, Storage
from .records import (
    DNODE_RECORD,
    IDENTITY_RECORD,
    NODE_RECORD,
    NONCE_RECORD,
    OPS_RECORD,
    PRESENCE_RECORD,
    RECORD_KINDS,
    Record,
    unpack_dnode,
)

FORMAT = "registryd-export"
VERSION = 1
HEADER, RECORDS, END = b"H", b"R", b"E"
FRAME_HEAD = struct.Struct(">cI")  # tag, body length
MAX_FRAME = 16 * 1024 * 1024
FRAME_RECORDS = 1_000  # records per frame, and per write batch on import
SEALED_MIN = NONCE_LEN + 16  # nonce and Poly1305 tag around an empty plaintext
MAX_EXPIRY = 2**63 - 1
NAMES = {  # singular, plural: for people
    IDENTITY_RECORD: ("identity", "identities"),
    PRESENCE_RECORD: ("presence", "presences"),
    NODE_RECORD: ("node", "nodes"),
    DNODE_RECORD: ("directory node", "directory nodes"),
    NONCE_RECORD: ("spent nonce", "spent nonces"),
    OPS_RECORD: ("operation record", "operation records"),
}
Progress = Callable[[int], object]  # called with how many records were just handled


class Header(msgspec.Struct, kw_only=True):
    format: str = ""
    version: int = 0
    schema_version: str = ""
    index_key_id: bytes = b""
    created_at_ms: int = 0
    source: str = ""


class Trailer(msgspec.Struct, kw_only=True):
    records: int
    counts: dict[str, int]
    mac: bytes


@dataclass
class Summary:
    """What an export or import moved (or, dry, would move): records by kind, expired records
    skipped (import), and the file's size in bytes."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORD_KINDS, 0))
    expired: int = 0
    size: int = 0
    source: str = ""

    @property
    def records(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """One line: ``12 identities, 3 presences, ...``."""
        parts = [f"{n:,} {NAMES[kind][n != 1]}" for kind, n in self.counts.items()]
        return ", ".join(parts) + (f" ({self.expired:,} expired, skipped)" if self.expired else "")


_ENCODER = msgspec.msgpack.Encoder()
_RECORDS = msgspec.msgpack.Decoder(list[Record])


def _frame(tag: bytes, body: bytes) -> bytes:
    return FRAME_HEAD.pack(tag, len(body)) + body


async def export_store(
    storage: Storage, out: BinaryIO | None, now_ms: int, progress: Progress | None = None
) -> Summary:
    """Write every record of ``storage`` (presences and spent nonces expired at ``now_ms``
    left out) to ``out`` as an export file; with ``out=None`` only count them (dry run).
    Raises :class:`~registryd.errors.StorageError` and ``OSError``."""
    summary = Summary(source=storage.kind)
    mac = blake3.blake3(key=storage.export_mac_key().reveal())

    def emit(tag: bytes, body: bytes) -> None:
        data = _frame(tag, body)
        summary.size += len(data)
        if tag != END:
            mac.update(data)
        if out is not None:
            out.write(data)

    header = Header(
        format=FORMAT,
        version=VERSION,
        schema_version=SCHEMA_VERSION.decode(),
        index_key_id=storage.index_key_id(),
        created_at_ms=now_ms,
        source=storage.kind,
    )
    emit(HEADER, _ENCODER.encode(header))
    batch: list[Record] = []
    async with aclosing(storage.export_records(now_ms)) as records:
        async for record in records:
            batch.append(record)
            summary.counts[record.kind] += 1
            if len(batch) >= FRAME_RECORDS:
                emit(RECORDS, _ENCODER.encode(batch))
                if progress:
                    progress(len(batch))
                batch = []
    if batch:
        emit(RECORDS, _ENCODER.encode(batch))
        if progress:
            progress(len(batch))
    trailer = Trailer(records=summary.records, counts=summary.counts, mac=mac.digest())
    emit(END, _ENCODER.encode(trailer))
    return summary


class _Reader:
    """Reads and checks one export file, frame by frame; every failure is a TransferError."""

    def __init__(self, stream: BinaryIO, name: str, storage: Storage) -> None:
        self.stream, self.name, self.storage = stream, name, storage
        self.mac = blake3.blake3(key=storage.export_mac_key().reveal())
        self.offset = 0
        self.counts: dict[str, int] = dict.fromkeys(RECORD_KINDS, 0)

    def fail(self, what: str) -> TransferError:
        return TransferError(f"{self.name}: {what}")

    def _read(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) < n:
            raise self.fail(f"truncated at byte {self.offset + len(data):,} (no end trailer)")
        self.offset += n
        return data

    def frame(self) -> tuple[bytes, bytes]:
        at = self.offset
        head = self._read(FRAME_HEAD.size)
        tag, length = FRAME_HEAD.unpack(head)
        if tag not in (HEADER, RECORDS, END) or length > MAX_FRAME:
            raise self.fail(f"corrupted at byte {at:,} (not a frame)")
        body = self._read(length)
        if tag != END:
            self.mac.update(head + body)
        return tag, body

    def header(self) -> Header:
        try:
            tag, body = self.frame()
            header = msgspec.msgpack.decode(body, type=Header) if tag == HEADER else Header()
        except (TransferError, msgspec.DecodeError):
            header = Header()
        if header.format != FORMAT:
            raise self.fail(f"not a {FORMAT} file")
        if header.version != VERSION:
            raise self.fail(f"{FORMAT} version {header.version}; this build reads {VERSION}")
        if header.schema_version != SCHEMA_VERSION.decode():
            raise self.fail(
                f"holds schema_version {header.schema_version!r} records; this build stores "
                f"{SCHEMA_VERSION.decode()!r}"
            )
        if header.index_key_id != self.storage.index_key_id():
            raise self.fail(
                "exported with another index key, so its records would not open here: set "
                "[storage] index_key_hex to the source's (or, if it had none, the same "
                "envelope.pepper_hex it was derived from)"
            )
        return header

    def check(self, record: Record) -> None:
        kind, key, value, expiry = record
        timed = kind in (PRESENCE_RECORD, NONCE_RECORD)
        ok = kind in RECORD_KINDS and (kind == OPS_RECORD or (expiry is not None) == timed)
        ok = ok and (expiry is None or 0 <= expiry <= MAX_EXPIRY)
        if kind in (IDENTITY_RECORD, PRESENCE_RECORD, OPS_RECORD):
            ok = ok and len(key) == 32 and len(value) >= SEALED_MIN
        elif kind == NONCE_RECORD:
            ok = ok and len(key) == 16 and value == b""
        elif kind in (NODE_RECORD, DNODE_RECORD):
            ok = ok and key != b"" and _utf8(key)
            if kind == NODE_RECORD:
                ok = ok and value == b""
            else:
                ok = ok and _dnode(value)
        if not ok:
            raise self.fail(
                f"corrupted: a malformed {kind[:20]!r} record before byte {self.offset:,}"
            )

    def batches(self) -> Iterator[list[Record]]:
        """The checked record batches; after the last, checks the trailer (MAC, counts)."""
        while True:
            at = self.offset
            tag, body = self.frame()
            if tag == END:
                break
            if tag != RECORDS:
                raise self.fail(f"corrupted at byte {at:,} (a second header)")
            try:
                batch = _RECORDS.decode(body)
            except msgspec.DecodeError as exc:
                raise self.fail(f"corrupted at byte {at:,} ({exc})") from None
            for record in batch:
                self.check(record)
                self.counts[record.kind] += 1
            yield batch
        try:
            trailer = msgspec.msgpack.decode(body, type=Trailer)
        except msgspec.DecodeError:
            raise self.fail("corrupted end trailer") from None
        if trailer.mac != self.mac.digest():
            raise self.fail("corrupted or altered: its checksum does not match")
        if trailer.counts != self.counts or trailer.records != sum(self.counts.values()):
            raise self.fail("corrupted: the trailer's counts do not match the records read")
        if self.stream.read(1):
            raise self.fail("corrupted: bytes after the end trailer")


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _dnode(value: bytes) -> bool:
    try:
        pubkey, _, sealed = unpack_dnode(value)
    except ValueError:
        return False
    return len(pubkey) == 32 and len(sealed) >= SEALED_MIN


def verify_file(
    storage: Storage, stream: BinaryIO, name: str, progress: Progress | None = None
) -> Summary:
    """Check the export file ``stream`` (named ``name`` in errors) completely against
    ``storage``'s index key, writing nothing; the records it holds. Raises TransferError."""
    reader = _Reader(stream, name, storage)
    header = reader.header()
    for batch in reader.batches():
        if progress:
            progress(len(batch))
    return Summary(counts=reader.counts, size=reader.offset, source=header.source)


async def import_file(
    storage: Storage,
    stream: BinaryIO,
    name: str,
    now_ms: int,
    progress: Progress | None = None,
    checked: Callable[[Summary], object] | None = None,
) -> Summary:
    """Import the export file ``stream`` into the empty ``storage``: check it all (as
    :func:`verify_file`), then write it in batches, leaving out presences and spent nonces
    expired at ``now_ms``. ``progress`` hears of each record twice (checked, then written);
    ``checked`` is called between the passes with what the file holds.

    Raises TransferError (the target is not empty, the file is bad; after a failure while
    writing, the message says the store must be wiped) or StorageError.
    """
    if not await storage.is_empty():
        raise TransferError(
            f"the target {storage.kind} store is not empty: an import only fills an empty "
            "store (point [storage] at a new one, or wipe this one)"
        )
    start = stream.tell()
    verified = verify_file(storage, stream, name, progress)
    if checked:
        checked(verified)
    stream.seek(start)
    reader = _Reader(stream, name, storage)
    summary = Summary(source=reader.header().source)
    try:
        for batch in reader.batches():
            live = [r for r in batch if r.expires_at_ms is None or r.expires_at_ms > now_ms]
            await storage.import_records(live)
            for record in live:
                summary.counts[record.kind] += 1
            summary.expired += len(batch) - len(live)
            if progress:
                progress(len(batch))
    except StorageError as exc:
        raise TransferError(
            f"import stopped part way, so the {storage.kind} store now holds part of "
            f"{name}: wipe it and import again ({exc})"
        ) from exc
    summary.size = reader.offset
    return summary
