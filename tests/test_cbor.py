"""The device CBOR codec round-trips with cbor2 and refuses malformed or oversized input."""

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microfang.firmware import bundle, cbor

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64 - 1)
           | st.floats(allow_nan=False) | st.binary(max_size=64) | st.text(max_size=32))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=8) | st.integers(min_value=-(2**63), max_value=2**63), inner, max_size=5), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(values)
def test_encoding_decodes_the_same_with_cbor2(value):
    assert cbor2.loads(cbor.dumps(value)) == value


@settings(max_examples=300, deadline=None)
@given(values)
def test_cbor2_encoding_decodes_the_same_here(value):
    assert cbor.loads(cbor2.dumps(value)) == value


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "truncated"),
        (b"\x42\x01", "truncated"),
        (b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", "array longer than the payload"),
        (b"\x5f\x41\x00\xff", "indefinite"),
        (b"\xc1\x00", "tags are not supported"),
        (b"\x01\x02", "trailing bytes"),
        (b"\x62\xff\xfe", "invalid UTF-8"),
        (b"\x81" * 40 + b"\x00", "nesting too deep"),
    ],
)
def test_malformed_cbor_is_refused_with_the_problem_named(data, problem):
    with pytest.raises(cbor.CBORError, match=problem):
        cbor.loads(data)


def test_oversized_payload_is_refused_before_decoding():
    with pytest.raises(cbor.CBORError, match="over the 100 byte limit"):
        cbor.loads(cbor.dumps(b"x" * 200), max_bytes=100)


def test_bundle_with_a_wrong_digest_is_refused():
    doc = cbor.loads(bundle.encode({"version": 1, "agent_id": "a"}, b"\x00asm\x01\x00\x00\x00"))
    doc["wasm"] = b"\x00asm\x01\x00\x00\x00\x00"
    with pytest.raises(bundle.BundleError, match="does not match its sha256"):
        bundle.decode(cbor.dumps(doc))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(-(2**63), 2**63) | st.text(max_size=4), max_size=8))
def test_canonical_encoding_ignores_insertion_order(d):
    reversed_order = dict(reversed(list(d.items())))
    assert cbor.dumps(d, canonical=True) == cbor.dumps(reversed_order, canonical=True)
    assert cbor.loads(cbor.dumps(d, canonical=True)) == d
