/* Ed25519 signature verification for microfang (RFC 8032: Edwards25519 with SHA-512): Monocypher's
 * hash-independent EdDSA check (monocypher/) with SUPERCOP's SHA-512 (sha512/). Boards only
 * verify; signing happens on the operator's host (the `cryptography` package). */
#ifndef MF_ED25519_H
#define MF_ED25519_H

#include <stddef.h>

#define MF_ED25519_PUBLIC_KEY_BYTES 32
#define MF_ED25519_SIGNATURE_BYTES 64
/* Messages are short (a bundle's digest and what binds it), hashed from a stack buffer. */
#define MF_ED25519_MAX_MESSAGE 256

enum { MF_ED25519_OK = 0, MF_ED25519_BAD = -1, MF_ED25519_TOO_LONG = -2 };

/* MF_ED25519_OK if `signature` (64 bytes) is `public_key`'s (32 bytes) signature of
 * message[0:len]; MF_ED25519_BAD for a wrong or malformed signature, a non-canonical S (S >= L)
 * or a public key that is not a point of the curve. */
int mf_ed25519_verify(const unsigned char *public_key, const unsigned char *message, size_t len,
                      const unsigned char *signature);

#endif
