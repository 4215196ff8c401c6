/* microfang._ed25519: Ed25519 verification for CPython, the same C as the board's `ed25519`
 * module (firmware/cmodules/ed25519). verify(public_key, message, signature) -> bool. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../mf_ed25519.h"

static PyObject *verify(PyObject *self, PyObject *args) {
    Py_buffer key, message, signature;
    if (!PyArg_ParseTuple(args, "y*y*y*", &key, &message, &signature)) return NULL;
    PyObject *result = NULL;
    if (key.len != MF_ED25519_PUBLIC_KEY_BYTES) {
        PyErr_Format(PyExc_ValueError, "public key of %zd bytes (Ed25519 keys have 32)", key.len);
    } else if (signature.len != MF_ED25519_SIGNATURE_BYTES) {
        PyErr_Format(PyExc_ValueError, "signature of %zd bytes (Ed25519 signatures have 64)", signature.len);
    } else if (message.len > MF_ED25519_MAX_MESSAGE) {
        PyErr_Format(PyExc_ValueError, "message of %zd bytes (at most %d: sign a digest)", message.len,
                     MF_ED25519_MAX_MESSAGE);
    } else {
        int ok = mf_ed25519_verify(key.buf, message.buf, (size_t)message.len, signature.buf);
        result = PyBool_FromLong(ok == MF_ED25519_OK);
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&message);
    PyBuffer_Release(&signature);
    return result;
}

static PyMethodDef methods[] = {
    {"verify", verify, METH_VARARGS, "verify(public_key, message, signature) -> bool"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ed25519", "Ed25519 verification (RFC 8032)", -1,
                                    methods};

PyMODINIT_FUNC PyInit__ed25519(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL) PyModule_AddIntConstant(m, "MAX_MESSAGE", MF_ED25519_MAX_MESSAGE);
    return m;
}
