// ed25519: Ed25519 verification for microfang's MicroPython firmware, the same C as the CPython
// binding microfang._ed25519. verify(public_key, message, signature) -> bool.
#include "py/runtime.h"

#include "../mf_ed25519.h"

static mp_obj_t ed25519_verify(mp_obj_t key_in, mp_obj_t message_in, mp_obj_t signature_in) {
    mp_buffer_info_t key, message, signature;
    mp_get_buffer_raise(key_in, &key, MP_BUFFER_READ);
    mp_get_buffer_raise(message_in, &message, MP_BUFFER_READ);
    mp_get_buffer_raise(signature_in, &signature, MP_BUFFER_READ);
    if (key.len != MF_ED25519_PUBLIC_KEY_BYTES) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("public key of %d bytes (Ed25519 keys have 32)"),
                          (int)key.len);
    }
    if (signature.len != MF_ED25519_SIGNATURE_BYTES) {
        mp_raise_msg_varg(&mp_type_ValueError,
                          MP_ERROR_TEXT("signature of %d bytes (Ed25519 signatures have 64)"), (int)signature.len);
    }
    if (message.len > MF_ED25519_MAX_MESSAGE) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("message of %d bytes (at most %d: sign a digest)"),
                          (int)message.len, MF_ED25519_MAX_MESSAGE);
    }
    return mp_obj_new_bool(mf_ed25519_verify(key.buf, message.buf, message.len, signature.buf) == MF_ED25519_OK);
}
static MP_DEFINE_CONST_FUN_OBJ_3(ed25519_verify_obj, ed25519_verify);

static const mp_rom_map_elem_t ed25519_globals_table[] = {
    {MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_ed25519)},
    {MP_ROM_QSTR(MP_QSTR_verify), MP_ROM_PTR(&ed25519_verify_obj)},
    {MP_ROM_QSTR(MP_QSTR_MAX_MESSAGE), MP_ROM_INT(MF_ED25519_MAX_MESSAGE)},
};
static MP_DEFINE_CONST_DICT(ed25519_globals, ed25519_globals_table);

const mp_obj_module_t ed25519_module = {
    .base = {&mp_type_module},
    .globals = (mp_obj_dict_t *)&ed25519_globals,
};

MP_REGISTER_MODULE(MP_QSTR_ed25519, ed25519_module);
