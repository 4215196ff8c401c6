"""`microfang flash --out`: the merged image is read back partition by partition (the table,
esptool's image info, a littlefs-python mount of the data partition) and every file checked."""

import cbor2
import pytest
from esp_images import firmware_bin
from esptool.cmds import image_info
from littlefs import LittleFS

from microfang.boards import BOARD_DEFS, TABLE_BYTES, TABLE_OFFSET, parse_partition_table
from microfang.brokerauth import device_password
from microfang.cli import main
from microfang.flash import sensor_config
from microfang.gateway.store import Store
from microfang.provision import BLOCK

from helpers import HELLO_WAT, build_bundle
from signing_keys import OPERATOR


def flash_out(tmp_path, board, firmware, *extra):
    fw = tmp_path / f"{board}-firmware.bin"
    fw.write_bytes(firmware)
    out = tmp_path / f"{board}-merged.bin"
    code = main(["flash", "--board", board, "--device", "kitchen", "--fleet", "home", "--broker",
                 "mqtts://gw.local:8883", "--firmware", str(fw), "--db", str(tmp_path / "gw.db"), "--out", str(out),
                 *extra])
    return code, out


def mount_data(image, board):
    """The data partition of a merged image, mounted with littlefs-python."""
    vfs = BOARD_DEFS[board].data_partition()
    fs = LittleFS(block_size=BLOCK, block_count=vfs.size // BLOCK, mount=False)
    fs.context.buffer = bytearray(image[vfs.offset:vfs.offset + vfs.size])
    fs.mount()
    return fs


@pytest.mark.parametrize("board", ["esp32", "esp32s3"])
def test_merged_image_holds_firmware_table_and_provisioned_files(board, tmp_path, capsys):
    agent = tmp_path / "a1.mfa"
    agent.write_bytes(build_bundle(HELLO_WAT))
    (tmp_path / "wifi.secret").write_text("s3cret\n", encoding="utf-8")
    (tmp_path / "wifi.secret").chmod(0o600)
    code, out = flash_out(tmp_path, board, firmware_bin(board), "--agents", str(agent), "--wifi", "attic",
                          "--wifi-password-file", str(tmp_path / "wifi.secret"))
    assert code == 0, capsys.readouterr().err
    image = out.read_bytes()
    spec = BOARD_DEFS[board]

    assert parse_partition_table(image[TABLE_OFFSET:TABLE_OFFSET + TABLE_BYTES]) == spec.partitions()
    app = next(p for p in spec.partitions() if p.kind == "app")
    image_info(image[app.offset:app.offset + app.size].rstrip(b"\xff"), chip=spec.CHIP)  # raises if not an app
    assert f"Chip ID: {spec.IMAGE_CHIP_ID}" in capsys.readouterr().out

    fs = mount_data(image, board)
    assert sorted(fs.listdir("/")) == ["agents", "config.cbor"]
    assert sorted(fs.listdir("/agents")) == ["a1.mfa", "a1.sig"]  # the bundle and the operator's proof
    with fs.open("/agents/a1.mfa", "rb") as f:
        assert f.read() == agent.read_bytes()
    with fs.open("/config.cbor", "rb") as f:
        config = cbor2.loads(f.read())
    store = Store(tmp_path / "gw.db")
    registered = store.devices()["kitchen"]
    assert config == {"device": "kitchen", "fleet": "home", "key": registered["key"],
                      "sign_keys": OPERATOR.public_keys(), "trust_serial": 0, "host": "gw.local", "port": 8883, "tls": True,
                      "user": "kitchen", "password": device_password(registered["key"]), "wifi": {"ssid": "attic", "password": "s3cret"},
                      "sensors": sensor_config(spec)}
    store.close()


def test_firmware_for_another_chip_is_refused(tmp_path, capsys):
    code, out = flash_out(tmp_path, "esp32", firmware_bin("esp32", chip="esp32s3"))
    assert code == 1 and not out.exists()
    assert "built for chip id 9, but --board esp32 is an esp32 (chip id 0)" in capsys.readouterr().err


def test_firmware_with_another_partition_table_is_refused(tmp_path, capsys):
    firmware = bytearray(firmware_bin("esp32"))
    table = TABLE_OFFSET - BOARD_DEFS["esp32"].FIRMWARE_OFFSET
    firmware[table:table + TABLE_BYTES] = b"\xff" * TABLE_BYTES
    code, _ = flash_out(tmp_path, "esp32", bytes(firmware))
    assert code == 1 and "no partition table at 0x8000" in capsys.readouterr().err


def test_firmware_overflowing_its_partition_is_refused(tmp_path, capsys):
    code, _ = flash_out(tmp_path, "esp32", firmware_bin("esp32", app_bytes=0x190000))
    assert code == 1 and "partition overflow" in capsys.readouterr().err


def test_missing_firmware_image_names_the_way_to_get_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MICROFANG_CACHE", str(tmp_path / "empty-cache"))
    code = main(["flash", "--board", "esp32", "--device", "d", "--broker", "mqtt://h", "--db", str(tmp_path / "gw.db"),
                 "--out", str(tmp_path / "x.bin")])
    assert code == 1
    assert "no firmware image for --board esp32: build one with `microfang port build --board esp32`" in \
        capsys.readouterr().err


def test_agent_that_is_not_a_bundle_is_refused_before_anything_is_written(tmp_path, capsys):
    bad = tmp_path / "bad.mfa"
    bad.write_bytes(b"\x00asm")
    code, out = flash_out(tmp_path, "esp32", firmware_bin("esp32"), "--agents", str(bad))
    assert code == 1 and not out.exists()
    assert "bad.mfa: not a bundle" in capsys.readouterr().err


def test_no_board_on_the_serial_port_is_a_one_line_error(tmp_path, capsys):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(firmware_bin("esp32"))
    code = main(["flash", "--board", "esp32", "--device", "d", "--broker", "mqtt://h", "--firmware", str(fw),
                 "--db", str(tmp_path / "gw.db"), "--port", str(tmp_path / "ttyUSB-absent")])
    err = capsys.readouterr().err
    assert code == 1 and "no ESP chip answered" in err and len(err.strip().splitlines()) == 1, err


def test_an_image_with_keys_is_readable_by_its_owner_only_and_says_so(tmp_path, capsys):
    (tmp_path / "esp32-merged.bin").write_bytes(b"old")
    (tmp_path / "esp32-merged.bin").chmod(0o644)  # an existing file loses its wider mode too
    code, out = flash_out(tmp_path, "esp32", firmware_bin("esp32"))
    assert code == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert "warning: " in capsys.readouterr().err


def test_a_simulated_boards_image_is_readable_by_its_owner_only(tmp_path):
    from microfang.provision import write_image

    write_image(tmp_path / "b.img", {"device": "b", "key": b"k" * 32}, [])
    assert (tmp_path / "b.img").stat().st_mode & 0o777 == 0o600


def read_file(image, board, path):
    fs = mount_data(image, board)  # kept while the file is open: littlefs-python crashes otherwise
    with fs.open(path, "rb") as f:
        return f.read()


def test_a_cafile_goes_onto_the_board_for_it_to_verify_the_broker(tmp_path, capsys):
    from brokers import make_tls_files

    (tmp_path / "certs").mkdir()
    ca, _, _ = make_tls_files(tmp_path / "certs")
    code, out = flash_out(tmp_path, "esp32", firmware_bin("esp32"), "--cafile", str(ca))
    assert code == 0, capsys.readouterr().err
    image = out.read_bytes()
    assert cbor2.loads(read_file(image, "esp32", "/config.cbor"))["cafile"] == "/ca.pem"
    assert read_file(image, "esp32", "/ca.pem") == ca.read_bytes()


def test_a_cafile_that_is_not_a_pem_certificate_is_refused(tmp_path, capsys):
    bad = tmp_path / "ca.pem"
    bad.write_bytes(b"not a certificate")
    code, out = flash_out(tmp_path, "esp32", firmware_bin("esp32"), "--cafile", str(bad))
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert err.strip() == f"microfang: {bad}: not a PEM CA certificate of at most 16,384 bytes", err
