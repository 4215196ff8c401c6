# Memory-log specifications that must hold on a board: run under MicroPython with an ESP32
# heap and under CPython (tests/test_device_runtimes.py). Plain asserts only.
#
# The power-loss test replays one realistic run (appends of varied sizes, a replication ack,
# compaction) and cuts the power at every single block write of it, with and without a torn
# last write; after each cut it remounts the flash as it was left and checks the log.
from microfang.firmware import abi
from microfang.firmware.blockdev import RAMBlockDevice
from microfang.firmware.memlog import LogError, MemoryLog, load_snapshot, save_snapshot
from microfang.firmware.port import Flash

_BLOCK = 512
_BLOCKS = 16
_CAP = 2048
_APPENDS = 48
_ACK_AT = 24  # after this append the gateway acknowledges all but the last 4 records

_formatted = []


def fresh_image():
    if not _formatted:
        dev = RAMBlockDevice(_BLOCK, _BLOCKS)
        Flash(dev, "/mf_t").unmount()
        _formatted.append(dev.image())
    return _formatted[0]


def payload(seq):
    # Varied sizes (9..49 bytes) and contents derived from the sequence number alone.
    n = 9 + (seq * 7) % 41
    return (b"%05d:" % seq + b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ")[:n]


def run(dev):
    """The realistic run; returns (sequences whose append returned, replication cursor) as of
    the power cut. An append during which the power went out never returned."""
    appended = []
    cursor = 0
    try:
        log = MemoryLog(Flash(dev, "/mf_t"), "a1", _CAP)
        for i in range(_APPENDS):
            seq = log.append(payload(log.last_seq + 1))
            if dev.dead:
                break
            appended.append(seq)
            if i == _ACK_AT:
                log.ack(seq - 4)
                if dev.dead:
                    break
                cursor = seq - 4
    except (OSError, LogError):
        pass  # LittleFS saw its lost writes as corruption: the board is down anyway
    return appended, cursor


def check_after_power_returns(dev, appended, cursor):
    dev.power_on()
    log = MemoryLog(Flash(dev, "/mf_t"), "a1", _CAP)
    # Every record whose append returned and that the gateway had not yet acknowledged is there.
    for seq in appended:
        if seq > cursor:
            assert log.read(seq) == payload(seq), ("lost or damaged", seq)
    # Nothing torn is ever returned: every record read back is exactly what was written.
    last = 0
    for seq, data in log.records():
        assert data == payload(seq), ("torn record returned", seq)
        assert seq > last
        last = seq
    # The log takes new records after recovery.
    seq = log.append(payload(log.last_seq + 1))
    assert log.read(seq) == payload(seq)
    return len(appended)


def test_power_loss_at_every_block_write_loses_no_acknowledged_record(bundle):
    full = RAMBlockDevice(_BLOCK, _BLOCKS, data=fresh_image())
    appended, _ = run(full)
    assert len(appended) == _APPENDS, "the uncut run must complete"
    writes = full.writes
    tried = 0
    dev = full
    for tear in (False, True):
        for k in range(1, writes + 1):
            dev.reset(fresh_image(), cut_after=k, tear=tear)
            appended, cursor = run(dev)
            check_after_power_returns(dev, appended, cursor)
            tried += 1
    print("  power-loss: %d cut points (%d block writes, clean and torn), 0 acknowledged records lost"
          % (tried, writes))


def test_full_log_refuses_appends_and_keeps_what_it_has(bundle):
    log = MemoryLog(Flash(RAMBlockDevice(_BLOCK, _BLOCKS, data=fresh_image()), "/mf_t"), "a1", 1024)
    stored = []
    try:
        while True:
            stored.append(log.append(payload(log.last_seq + 1)))
    except LogError as e:
        assert e.code == abi.E_FULL
        assert "not yet replicated" in str(e)
    assert len(stored) > 10
    for seq in stored:
        assert log.read(seq) == payload(seq)
    log.ack(stored[-1])  # replicated: now the oldest segments may go
    seq = log.append(payload(log.last_seq + 1))
    assert log.read(seq) == payload(seq)
    assert log.first_seq > 1


def test_full_flash_refuses_appends_and_keeps_what_it_has(bundle):
    # A log allowed more than the flash holds: the filesystem fills before the cap.
    flash = Flash(RAMBlockDevice(_BLOCK, 8, data=None), "/mf_t")
    log = MemoryLog(flash, "a1", 1 << 20)
    stored = []
    code = None
    for _ in range(2000):
        try:
            stored.append(log.append(payload(log.last_seq + 1) * 8))
        except LogError as e:
            code = e.code
            break
    assert code == abi.E_FULL, code
    for seq in stored:
        assert log.read(seq) == payload(seq) * 8


def test_corrupted_record_in_the_middle_is_skipped_not_returned(bundle):
    flash = Flash(RAMBlockDevice(_BLOCK, _BLOCKS, data=fresh_image()), "/mf_t")
    log = MemoryLog(flash, "a1", _CAP)
    for _ in range(6):
        log.append(payload(log.last_seq + 1))
    path = "/logs/a1/00000001.seg"
    with flash.open(path, "rb") as f:
        segment = bytearray(f.read())
    at = bytes(segment).find(payload(3))
    segment[at + 8] ^= 0x01  # one flipped bit inside record 3's payload
    with flash.open(path, "wb") as f:
        f.write(segment)
    log = MemoryLog(flash, "a1", _CAP)
    assert log.read(3) is None
    assert log.corrupted == 1
    assert [s for s, _ in log.records()] == [1, 2, 4, 5, 6]
    assert log.append(payload(7)) == 7


def test_logs_are_namespaced_by_agent(bundle):
    flash = Flash(RAMBlockDevice(_BLOCK, _BLOCKS, data=fresh_image()), "/mf_t")
    a = MemoryLog(flash, "a1", _CAP)
    b = MemoryLog(flash, "b2", _CAP)
    a.append(b"secret of a1")
    assert b.read(1) is None
    assert b.read(0) is None
    assert list(b.records()) == []


def test_absurd_lengths_are_refused(bundle):
    log = MemoryLog(Flash(RAMBlockDevice(_BLOCK, _BLOCKS, data=fresh_image()), "/mf_t"), "a1", _CAP)
    try:
        log.append(b"x" * (abi.MAX_HOST_PAYLOAD + 1))
        raise AssertionError("accepted an oversized record")
    except LogError as e:
        assert e.code == abi.E_TOO_BIG
    assert log.last_seq == 0


def test_snapshot_round_trips_memory_and_state(bundle):
    flash = Flash(RAMBlockDevice(_BLOCK, _BLOCKS, data=fresh_image()), "/mf_t")
    memory = bytes(range(256)) * 4
    save_snapshot(flash, "a1", memory, {"fuel": 1234, "log_seq": 7})
    assert load_snapshot(flash, "a1") == (memory, {"fuel": 1234, "log_seq": 7})
    assert load_snapshot(flash, "b2") is None


def test_an_already_mounted_filesystem_is_adopted_not_mounted_twice(bundle):
    from microfang.firmware import port

    if not port.MICROPYTHON:
        return  # only MicroPython has a VFS to adopt from (a board's _boot.py mounts vfs at /)
    dev = RAMBlockDevice(_BLOCK, _BLOCKS)
    own = Flash(dev, "/mf_adopt")
    adopted = Flash.mounted("/mf_adopt")
    with adopted.open("/note", "wb") as f:
        f.write(b"written through the adopted mount")
    with own.open("/note", "rb") as f:
        assert f.read() == b"written through the adopted mount"
    adopted.unmount()  # leaves the mount alone
    assert own.listdir("/") == ["note"]
    assert adopted.usage()[1] == _BLOCK * _BLOCKS
    own.unmount()
