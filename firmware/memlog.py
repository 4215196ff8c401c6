# Per-agent memory logs on LittleFS: append-only, crash-safe, bounded, replicable.
#
# Layout under /logs/<agent_id>/:
#   00000001.seg, 00000042.seg, ...  segments named by their first sequence number
#   cursor                           the replication cursor (last sequence the gateway acked)
# Record: crc32 (u32) | seq (u32) | length (u16) | payload. The CRC covers seq, length and
# payload. Sequence numbers start at 1 and never repeat, even after compaction.
#
# Durability: append() opens the active segment, writes the record and closes (syncs) it
# before it returns; LittleFS makes that commit atomic, so after a power cut a segment holds
# exactly the records committed before it. No file stays open between appends: an open
# LittleFS file holds a cache buffer, which a board with many agents cannot spare.
# The CRC still guards every record: a torn or corrupted tail (a bug, a bad block) is cut off
# at open by rewriting the segment with its valid prefix (write a copy, rename over: atomic),
# and a corrupted record in the middle is skipped, never returned.
#
# Bounded: the segments of one agent never hold more than the manifest's [memory_log] max_kb.
# When an append would pass it, the oldest segments the gateway has acknowledged are deleted;
# if that frees too little, append raises LogError (code abi.E_FULL) and nothing stored is touched.

import struct
from binascii import crc32

from . import abi, cbor
from .errors import MicrofangError

_HEADER = struct.calcsize(">IIH")  # crc, seq, length
_SEGMENT_MAX = 4096  # one flash erase block
_NAME_DIGITS = 8
_BATCH_BYTES = 512  # records read from a segment at a time


class LogError(MicrofangError):
    """A memory-log operation failed; `code` is the abi error code agents see."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _encode(seq, payload):
    body = struct.pack(">IH", seq, len(payload)) + payload
    return struct.pack(">I", crc32(body) & 0xFFFFFFFF) + body


def _scan(data, expect_seq):
    """Walk records in a segment's bytes. Returns (records, valid_end, corrupted) where records
    is a list of (seq, offset, length) that passed their CRC, valid_end is where the last good
    record ends, and corrupted counts records skipped in the middle."""
    records = []
    pos = 0
    end = len(data)
    valid_end = 0
    corrupted = 0
    while pos + _HEADER <= end:
        crc, seq, length = struct.unpack_from(">IIH", data, pos)
        stop = pos + _HEADER + length
        if length <= abi.MAX_HOST_PAYLOAD and stop <= end and crc32(data[pos + 4 : stop]) & 0xFFFFFFFF == crc:
            if expect_seq and seq != expect_seq:
                break  # out of order: not part of this log's history
            records.append((seq, pos + _HEADER, length))
            expect_seq = seq + 1
            pos = stop
            valid_end = stop
            continue
        # A bad record. If its length is plausible and a good record with the next sequence
        # follows, only this one was damaged: skip it. Otherwise the rest is a torn tail.
        if length <= abi.MAX_HOST_PAYLOAD and stop + _HEADER <= end:
            crc2, seq2, length2 = struct.unpack_from(">IIH", data, stop)
            stop2 = stop + _HEADER + length2
            if (expect_seq == 0 or seq2 == expect_seq + 1) and stop2 <= end and \
                    crc32(data[stop + 4 : stop2]) & 0xFFFFFFFF == crc2:
                corrupted += 1
                expect_seq = seq2
                pos = stop
                continue
        break
    return records, valid_end, corrupted


class MemoryLog:
    """One agent's log. `flash` is a port.Flash; `max_bytes` caps its segments. The board's
    link keeps its durable outbox in one too (root "/link")."""

    def __init__(self, flash, agent_id, max_bytes, root="/logs"):
        self.flash = flash
        self.agent_id = agent_id
        self.max_bytes = max_bytes
        self.dir = root + "/" + agent_id
        # Segments are at most one erase block and at least 4 per log, so compaction frees a
        # useful fraction at a time.
        self.segment_max = max(256, min(_SEGMENT_MAX, max_bytes // 4))
        self.corrupted = 0
        self._segments = []  # [first_seq, last_seq, size] per segment, oldest first
        flash.makedirs(self.dir)
        self.acked = self._read_cursor()
        self._recover()

    # ---- open and recover ----------------------------------------------------------------

    def _seg_path(self, first_seq):
        name = str(first_seq)
        return "%s/%s.seg" % (self.dir, "0" * (_NAME_DIGITS - len(name)) + name)

    def _read_cursor(self):
        try:
            with self.flash.open(self.dir + "/cursor", "rb") as f:
                raw = f.read()
            return struct.unpack(">I", raw)[0] if len(raw) == 4 else 0
        except OSError:
            return 0

    def _recover(self):
        expect = 0
        for name in self.flash.listdir(self.dir):
            if name.endswith(".tmp"):
                self.flash.remove(self.dir + "/" + name)  # an interrupted rewrite: the original stands
        names = [n for n in self.flash.listdir(self.dir) if n.endswith(".seg")]
        for i, name in enumerate(names):
            path = self.dir + "/" + name
            with self.flash.open(path, "rb") as f:
                data = f.read()
            records, valid_end, corrupted = _scan(data, expect)
            self.corrupted += corrupted
            if valid_end < len(data) and i == len(names) - 1:
                self._rewrite(path, data[:valid_end])  # cut the torn tail of the active segment
            if not records:
                if i == len(names) - 1:
                    self.flash.remove(path)
                continue
            first = int(name[:-4])
            self._segments.append([first, records[-1][0], valid_end])
            expect = records[-1][0] + 1

    def _rewrite(self, path, data):
        tmp = path[:-4] + ".tmp"
        with self.flash.open(tmp, "wb") as f:
            f.write(data)
        self.flash.rename(tmp, path)

    # ---- state ---------------------------------------------------------------------------

    @property
    def last_seq(self):
        return self._segments[-1][1] if self._segments else 0

    @property
    def first_seq(self):
        return self._segments[0][0] if self._segments else 0

    @property
    def size_bytes(self):
        total = 0
        for seg in self._segments:
            total += seg[2]
        return total

    # ---- append --------------------------------------------------------------------------

    def append(self, payload):
        """Store a record durably and return its sequence number."""
        if len(payload) > abi.MAX_HOST_PAYLOAD:
            raise LogError(abi.E_TOO_BIG, "record of %d bytes is over the %d byte limit" % (len(payload), abi.MAX_HOST_PAYLOAD))
        seq = self.last_seq + 1
        record = _encode(seq, bytes(payload))
        self._make_room(len(record))
        active = self._segments[-1] if self._segments else None
        if active is None or active[2] + len(record) > self.segment_max:
            active = [seq, seq - 1, 0]
            self._segments.append(active)
        try:
            with self.flash.open(self._seg_path(active[0]), "ab") as f:
                f.write(record)
            # Closed, hence synced: the record is on flash.
        except OSError as e:
            self._reload()
            if e.args and e.args[0] == 28:  # ENOSPC
                raise LogError(abi.E_FULL, "flash is full")
            raise
        active[1] = seq
        active[2] += len(record)
        return seq

    def _make_room(self, need):
        total = self.size_bytes
        while total + need > self.max_bytes:
            if len(self._segments) < 2 or self._segments[0][1] > self.acked:
                raise LogError(abi.E_FULL, "memory log of agent %s is full (%d of %d bytes, %d records not yet "
                               "replicated)" % (self.agent_id, total, self.max_bytes, self.last_seq - self.acked))
            first, _, size = self._segments.pop(0)
            self.flash.remove(self._seg_path(first))
            total -= size

    def _reload(self):
        # After a failed write, believe only the flash: it holds exactly what was committed.
        self._segments = []
        self.corrupted = 0
        self._recover()

    # ---- read ----------------------------------------------------------------------------

    def read(self, seq):
        """The payload of record `seq` (0: the latest), or None if it is not in the log."""
        if seq == 0:
            seq = self.last_seq
        for first, last, _ in self._segments:
            if first <= seq <= last:
                for s, payload in self._segment_records(first):
                    if s == seq:
                        return payload
                return None  # skipped as corrupted
        return None

    def _segment_records(self, first):
        # A few records at a time (the file closed between batches, as appends may come): a
        # 4 KB segment read whole is a 4 KB block that a 110 KB heap running agents may lack.
        # At the first record that fails its check, the rest is walked whole, as _scan does.
        path = self._seg_path(first)
        pos = 0
        while True:
            batch = []
            with self.flash.open(path, "rb") as f:
                f.seek(pos)
                size = 0
                while size < _BATCH_BYTES:
                    head = f.read(_HEADER)
                    if len(head) < _HEADER:
                        break
                    crc, seq, length = struct.unpack(">IIH", head)
                    body = f.read(length) if length <= abi.MAX_HOST_PAYLOAD else b""
                    if len(body) != length or crc32(body, crc32(head[4:])) & 0xFFFFFFFF != crc:
                        batch.append(None)
                        break
                    batch.append((seq, body))
                    size += _HEADER + length
            for record in batch:
                if record is None:
                    yield from self._walk_damaged(path, pos)
                    return
                yield record
                pos += _HEADER + len(record[1])
            if not batch:
                return

    def _walk_damaged(self, path, pos):
        with self.flash.open(path, "rb") as f:
            f.seek(pos)
            data = f.read()
        records, _, _ = _scan(data, 0)
        for seq, offset, length in records:
            yield seq, data[offset : offset + length]

    def records(self, from_seq=1):
        """Iterate (seq, payload) from `from_seq` on, oldest first."""
        for first, last, _ in list(self._segments):
            if last < from_seq:
                continue
            for seq, payload in self._segment_records(first):
                if seq >= from_seq:
                    yield seq, payload

    # ---- replication ---------------------------------------------------------------------

    def ack(self, seq):
        """Persist the replication cursor: records up to `seq` are safe at the gateway."""
        seq = min(seq, self.last_seq)
        if seq <= self.acked:
            return
        tmp = self.dir + "/cursor.tmp"
        with self.flash.open(tmp, "wb") as f:
            f.write(struct.pack(">I", seq))
        self.flash.rename(tmp, self.dir + "/cursor")
        self.acked = seq


    # ---- moving to another board ----------------------------------------------------------

    def adopt(self, records, acked):
        """Fill an empty log with another board's records [(seq, payload)], sequence numbers
        kept, and its replication cursor: a migrated agent's log continues where it was."""
        if self._segments:
            raise LogError(abi.E_FULL, "memory log of agent %s is not empty" % self.agent_id)
        chunk, first, size = [], 0, 0
        for seq, payload in records:
            record = _encode(seq, bytes(payload))
            if chunk and size + len(record) > self.segment_max:
                self._write_segment(first, chunk)
                chunk, size = [], 0
            if not chunk:
                first = seq
            chunk.append(record)
            size += len(record)
        if chunk:
            self._write_segment(first, chunk)
        self._reload()
        self.acked = 0
        self.ack(acked)

    def _write_segment(self, first, records):
        with self.flash.open(self._seg_path(first), "wb") as f:
            f.write(b"".join(records))

    def destroy(self):
        """Delete the log from flash (its agent moved away or was removed)."""
        for name in self.flash.listdir(self.dir):
            self.flash.remove(self.dir + "/" + name)
        self._segments = []
        self.acked = 0


# ---- snapshots: an agent's linear memory and state, for suspend-to-flash and migration ----


def save_snapshot(flash, agent_id, memory, state):
    """Write {memory, state} atomically to /snap/<agent_id>.cbor."""
    flash.makedirs("/snap")
    path = "/snap/" + agent_id + ".cbor"
    with flash.open(path + ".tmp", "wb") as f:
        f.write(cbor.dumps({"agent_id": agent_id, "memory": bytes(memory), "state": state}))
    flash.rename(path + ".tmp", path)


def load_snapshot(flash, agent_id):
    """The snapshot saved for `agent_id` as (memory, state), or None."""
    try:
        with flash.open("/snap/" + agent_id + ".cbor", "rb") as f:
            doc = cbor.loads(f.read(), max_bytes=8 << 20)
    except OSError:
        return None
    if not isinstance(doc, dict) or doc.get("agent_id") != agent_id:
        return None
    return doc["memory"], doc["state"]
