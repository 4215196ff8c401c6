# microfang._ed25519, the CPython binding of the board's Ed25519 verification
# (firmware/cmodules/ed25519/cpython/_ed25519.c).
MAX_MESSAGE: int

def verify(public_key: bytes, message: bytes, signature: bytes) -> bool: ...
