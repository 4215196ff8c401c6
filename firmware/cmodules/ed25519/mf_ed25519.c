/* RFC 8032 verification: h = SHA-512(R || A || M) reduced mod L, then Monocypher checks
 * [S]B = R + [h]A (refusing S >= L and keys off the curve). */
#include "mf_ed25519.h"

#include "monocypher/monocypher.h"
#include "sha512/sha512.h"

int mf_ed25519_verify(const unsigned char *public_key, const unsigned char *message, size_t len,
                      const unsigned char *signature) {
    unsigned char hashed[32 + MF_ED25519_PUBLIC_KEY_BYTES + MF_ED25519_MAX_MESSAGE];
    unsigned char digest[64];
    unsigned char h_ram[32];
    if (len > MF_ED25519_MAX_MESSAGE) return MF_ED25519_TOO_LONG;
    for (size_t i = 0; i < 32; i++) hashed[i] = signature[i]; /* R */
    for (size_t i = 0; i < MF_ED25519_PUBLIC_KEY_BYTES; i++) hashed[32 + i] = public_key[i];
    for (size_t i = 0; i < len; i++) hashed[64 + i] = message[i];
    crypto_hash_sha512(digest, hashed, 64 + len);
    crypto_eddsa_reduce(h_ram, digest);
    return crypto_eddsa_check_equation(signature, public_key, h_ram) == 0 ? MF_ED25519_OK : MF_ED25519_BAD;
}
