// microfang._wasm3: the CPython binding of wasm3 used by the simulator and the host tools.
//
// It has the API shape of pywasm3 (Environment, Runtime, Module, link_function, find_function,
// get_memory) and what pywasm3 lacks and a board needs:
//   - a memory limit in bytes (wasm3's runtime->memoryLimit), so caps below one 64 KiB page hold;
//   - fuel as an integer count of raw units (pywasm3 scales by 10000 through a double),
//     charged by a dedicated wasm3 op rather than a host call (patches/0001-fuel-op.patch);
//   - OutOfFuel and Trap exceptions, so the supervisor can tell exhaustion from a fault;
//   - finalizers: a reclaimed agent gives its runtime, memory and module back.
// The MicroPython module in ../ exposes the same names, so firmware/port.py can pick either.

#define PY_SSIZE_T_CLEAN
#include "Python.h"

#include "wasm3.h"
#include "m3_env.h"

#define MAX_ARGS 16

static PyObject *Wasm3Error;   // parse/load/link problems
static PyObject *TrapError;    // a wasm trap (subclass of Wasm3Error)
static PyObject *OutOfFuel;    // fuel exhausted (subclass of TrapError)

static const char *c_hostRaised = "host function raised";

typedef struct {
    PyObject_HEAD
    IM3Environment e;
} Environment;

typedef struct {
    PyObject_HEAD
    PyObject *env;        // keeps the environment alive as long as the runtime
    PyObject *module;     // the loaded Module object, owned by the runtime once loaded
    IM3Runtime r;
} Runtime;

typedef struct {
    PyObject_HEAD
    PyObject *env;
    PyObject *wasm;       // wasm3 keeps pointers into the bytes until compile(): they outlive that
    PyObject *links;      // Python callables linked as imports
    IM3Module m;
    int loaded;
    int64_t fuel;         // raw units left; metering.usegas(n) subtracts n
} Module;

typedef struct {
    PyObject_HEAD
    PyObject *runtime;
    IM3Function f;
} Function;

static PyTypeObject *EnvironmentType, *RuntimeType, *ModuleType, *FunctionType;

static PyObject *
raise_m3(IM3Runtime runtime, M3Result err)
{
    PyObject *kind = Wasm3Error;
    if (err == m3Err_trapOutOfFuel) kind = OutOfFuel;
    else if (strncmp(err, "[trap]", 6) == 0) kind = TrapError;
    if (runtime) {
        M3ErrorInfo info;
        memset(&info, 0, sizeof(info));
        m3_GetErrorInfo(runtime, &info);
        if (info.message && strlen(info.message)) {
            PyErr_Format(kind, "%s (%s)", err, info.message);
            return NULL;
        }
    }
    PyErr_SetString(kind, err);
    return NULL;
}

m3ApiRawFunction(metering_usegas)
{
    m3ApiGetArg(int32_t, gas)
    Module *mod = (Module *)(_ctx->userdata);
    if (M3_UNLIKELY(gas < 0)) m3ApiTrap(m3Err_trapNegativeFuel);  // a charge never mints fuel
    mod->fuel -= gas;
    if (M3_UNLIKELY(mod->fuel < 0)) {
        mod->fuel = 0;
        m3ApiTrap(m3Err_trapOutOfFuel);
    }
    m3ApiSuccess();
}

// ---- Environment ----------------------------------------------------------------------------

static PyObject *
Environment_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Environment *self = (Environment *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->e = m3_NewEnvironment();
    if (!self->e) { Py_DECREF(self); return PyErr_NoMemory(); }
    return (PyObject *)self;
}

static void
Environment_dealloc(Environment *self)
{
    if (self->e) m3_FreeEnvironment(self->e);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
Environment_new_runtime(Environment *env, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"stack_bytes", "memory_limit", NULL};
    unsigned int stack = 0, limit = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "I|I", kwlist, &stack, &limit)) return NULL;
    Runtime *self = PyObject_GC_New(Runtime, RuntimeType);
    if (!self) return NULL;
    self->r = m3_NewRuntime(env->e, stack, NULL);
    if (!self->r) { self->env = NULL; self->module = NULL; Py_DECREF(self); return PyErr_NoMemory(); }
    // 0 means "no limit" in wasm3; ResizeMemory clamps every (re)allocation to this many bytes.
    // With a limit the block is taken now, before the module's (patches/0025).
    if (m3_ReserveMemory(self->r, limit) != m3Err_none) {
        m3_FreeRuntime(self->r);
        self->r = NULL; self->env = NULL; self->module = NULL; Py_DECREF(self); return PyErr_NoMemory();
    }
    Py_INCREF(env);
    self->env = (PyObject *)env;
    self->module = NULL;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
Environment_parse_module(Environment *env, PyObject *wasm)
{
    if (!PyBytes_Check(wasm)) {
        PyErr_SetString(PyExc_TypeError, "parse_module needs bytes");
        return NULL;
    }
    IM3Module m = NULL;
    M3Result err = m3_ParseModule(env->e, &m, (const uint8_t *)PyBytes_AS_STRING(wasm),
                                  (uint32_t)PyBytes_GET_SIZE(wasm));
    if (err) return raise_m3(NULL, err);
    Module *self = PyObject_GC_New(Module, ModuleType);
    if (!self) { m3_FreeModule(m); return NULL; }
    self->links = PyList_New(0);
    Py_INCREF(env);
    self->env = (PyObject *)env;
    Py_INCREF(wasm);
    self->wasm = wasm;
    self->m = m;
    self->loaded = 0;
    self->fuel = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyMethodDef Environment_methods[] = {
    {"new_runtime", (PyCFunction)(void (*)(void))Environment_new_runtime, METH_VARARGS | METH_KEYWORDS,
     "new_runtime(stack_bytes, memory_limit=0) -> Runtime"},
    {"parse_module", (PyCFunction)Environment_parse_module, METH_O, "parse_module(bytes) -> Module"},
    {NULL, NULL}
};

// ---- Runtime --------------------------------------------------------------------------------

// Host callables usually refer back to the sandbox that owns the runtime (a cycle through
// Module.links), so the types take part in Python's cycle collector: a reclaimed agent's
// runtime is freed even if nobody breaks the cycle by hand.

static int
Runtime_traverse(Runtime *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->env);
    Py_VISIT(self->module);
    return 0;
}

static void
Runtime_dealloc(Runtime *self)
{
    PyObject_GC_UnTrack(self);
    // m3_FreeRuntime frees the loaded module too; the Module object only drops its references.
    if (self->r) m3_FreeRuntime(self->r);
    self->r = NULL;
    Py_CLEAR(self->module);
    Py_CLEAR(self->env);
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PyObject *
Runtime_close(Runtime *self, PyObject *unused)
{
    // Free the runtime now (a reclaimed agent): its code pages go back to the environment
    // for the next agent instead of waiting for the garbage collector.
    if (self->r) m3_FreeRuntime(self->r);
    self->r = NULL;
    Py_RETURN_NONE;
}

static int
runtime_closed(Runtime *self)
{
    if (self->r) return 0;
    PyErr_SetString(Wasm3Error, "runtime is closed");
    return 1;
}

static PyObject *
Runtime_load(Runtime *self, PyObject *arg)
{
    if (runtime_closed(self)) return NULL;
    if (!PyObject_TypeCheck(arg, ModuleType)) {
        PyErr_SetString(PyExc_TypeError, "load needs a Module");
        return NULL;
    }
    Module *mod = (Module *)arg;
    if (mod->loaded || self->module) {
        PyErr_SetString(Wasm3Error, "module or runtime already loaded");
        return NULL;
    }
    M3Result err = m3_LoadModule(self->r, mod->m);
    if (err) return raise_m3(self->r, err);
    mod->loaded = 1;
    // Direct metering calls compile to wasm3's op_UseFuel on this counter (patches/0001);
    // the raw function below still serves indirect calls, with the same charge and trap.
    mod->m->fuelCounter = &mod->fuel;
    Py_INCREF(mod);
    self->module = (PyObject *)mod;
    err = m3_LinkRawFunctionEx(mod->m, "metering", "usegas", "v(i)", &metering_usegas, mod);
    if (err && err != m3Err_functionLookupFailed) return raise_m3(self->r, err);
    Py_RETURN_NONE;
}

static PyObject *
Runtime_find_function(Runtime *self, PyObject *name)
{
    if (runtime_closed(self)) return NULL;
    const char *s = PyUnicode_AsUTF8(name);
    if (!s) return NULL;
    IM3Function f = NULL;
    M3Result err = m3_FindFunction(&f, self->r, s);
    if (err) return raise_m3(self->r, err);
    Function *fn = PyObject_GC_New(Function, FunctionType);
    if (!fn) return NULL;
    Py_INCREF(self);
    fn->runtime = (PyObject *)self;
    fn->f = f;
    PyObject_GC_Track(fn);
    return (PyObject *)fn;
}

static PyObject *
Runtime_get_memory(Runtime *self, PyObject *index)
{
    // The view is only valid until the next call into wasm (memory.grow may move it):
    // callers copy out what they need at once.
    if (runtime_closed(self)) return NULL;
    uint32_t size = 0;
    uint8_t *mem = m3_GetMemory(self->r, &size, (uint32_t)PyLong_AsLong(index));
    if (!mem) Py_RETURN_NONE;
    return PyMemoryView_FromMemory((char *)mem, size, PyBUF_WRITE);
}

static PyObject *
Runtime_get_memory_size(Runtime *self, void *closure)
{
    if (!self->r) return PyLong_FromLong(0);
    return PyLong_FromUnsignedLong(m3_GetMemorySize(self->r));
}

static PyObject *
Runtime_get_memory_limit(Runtime *self, void *closure)
{
    if (!self->r) return PyLong_FromLong(0);
    return PyLong_FromUnsignedLong(self->r->memoryLimit);
}

static PyMethodDef Runtime_methods[] = {
    {"load", (PyCFunction)Runtime_load, METH_O, "load(module) -> None"},
    {"close", (PyCFunction)Runtime_close, METH_NOARGS, "close() -> None: free the runtime now"},
    {"find_function", (PyCFunction)Runtime_find_function, METH_O, "find_function(name) -> Function"},
    {"get_memory", (PyCFunction)Runtime_get_memory, METH_O, "get_memory(index) -> memoryview"},
    {NULL, NULL}
};

static PyGetSetDef Runtime_getset[] = {
    {"memory_size", (getter)Runtime_get_memory_size, NULL, "bytes of linear memory really allocated", NULL},
    {"memory_limit", (getter)Runtime_get_memory_limit, NULL, "cap on linear memory in bytes (0: none)", NULL},
    {NULL}
};

// ---- Module ---------------------------------------------------------------------------------

static int
Module_traverse(Module *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->env);
    Py_VISIT(self->links);
    return 0;
}

static int
Module_clear(Module *self)
{
    // Only reached for unreachable cycles: nothing can call into the runtime any more.
    Py_CLEAR(self->links);
    return 0;
}

static void
Module_dealloc(Module *self)
{
    PyObject_GC_UnTrack(self);
    if (self->m && !self->loaded) m3_FreeModule(self->m);
    self->m = NULL;
    Py_CLEAR(self->links);
    Py_CLEAR(self->wasm);
    Py_CLEAR(self->env);
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static void
put_value(uint64_t *s, M3ValueType type, PyObject *v)
{
    switch (type) {
        case c_m3Type_i32: *(int32_t *)s = (int32_t)PyLong_AsUnsignedLongMask(v); break;
        case c_m3Type_i64: *(int64_t *)s = (int64_t)PyLong_AsUnsignedLongLongMask(v); break;
        case c_m3Type_f32: *(float *)s = (float)PyFloat_AsDouble(v); break;
        case c_m3Type_f64: *(double *)s = PyFloat_AsDouble(v); break;
        default: break;
    }
}

static PyObject *
get_value(const uint64_t *s, M3ValueType type)
{
    switch (type) {
        case c_m3Type_i32: return PyLong_FromLong(*(const int32_t *)s);
        case c_m3Type_i64: return PyLong_FromLongLong(*(const int64_t *)s);
        case c_m3Type_f32: return PyFloat_FromDouble(*(const float *)s);
        case c_m3Type_f64: return PyFloat_FromDouble(*(const double *)s);
        default: return PyErr_Format(Wasm3Error, "unknown value type %d", (int)type);
    }
}

m3ApiRawFunction(call_python)
{
    PyObject *fn = (PyObject *)(_ctx->userdata);
    IM3Function f = _ctx->function;
    int nargs = m3_GetArgCount(f), nrets = m3_GetRetCount(f);
    PyObject *args = PyTuple_New(nargs);
    if (!args) m3ApiTrap(c_hostRaised);
    for (int i = 0; i < nargs; ++i) {
        PyObject *a = get_value(&_sp[i + nrets], m3_GetArgType(f, i));
        if (!a) { Py_DECREF(args); m3ApiTrap(c_hostRaised); }
        PyTuple_SET_ITEM(args, i, a);
    }
    PyObject *ret = PyObject_CallObject(fn, args);
    Py_DECREF(args);
    if (!ret) m3ApiTrap(c_hostRaised);
    if (nrets == 1) {
        if (ret == Py_None) {
            Py_DECREF(ret);
            PyErr_SetString(PyExc_TypeError, "host function must return a value");
            m3ApiTrap(c_hostRaised);
        }
        put_value(&_sp[0], m3_GetRetType(f, 0), ret);
    } else if (nrets > 1) {
        if (!PyTuple_Check(ret) || PyTuple_GET_SIZE(ret) != nrets) {
            Py_DECREF(ret);
            PyErr_SetString(PyExc_TypeError, "host function must return a tuple of results");
            m3ApiTrap(c_hostRaised);
        }
        for (int i = 0; i < nrets; ++i) put_value(&_sp[i], m3_GetRetType(f, i), PyTuple_GET_ITEM(ret, i));
    }
    Py_DECREF(ret);
    if (PyErr_Occurred()) m3ApiTrap(c_hostRaised);
    m3ApiSuccess();
}

static PyObject *
Module_link_function(Module *self, PyObject *args)
{
    const char *mod_name, *name, *sig;
    PyObject *fn;
    if (!PyArg_ParseTuple(args, "sssO", &mod_name, &name, &sig, &fn)) return NULL;
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "link_function needs a callable");
        return NULL;
    }
    M3Result err = m3_LinkRawFunctionEx(self->m, mod_name, name, sig, call_python, fn);
    if (err == m3Err_functionLookupFailed) Py_RETURN_FALSE;   // the module does not import it
    if (err) return raise_m3(NULL, err);
    if (!self->links || PyList_Append(self->links, fn) < 0) return NULL;
    Py_RETURN_TRUE;
}

static PyObject *
Module_get_fuel(Module *self, void *closure)
{
    return PyLong_FromLongLong(self->fuel);
}

static int
Module_set_fuel(Module *self, PyObject *value, void *closure)
{
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred()) return -1;
    self->fuel = v < 0 ? 0 : v;
    return 0;
}

// Compile every function now, after linking: compile errors (too deep, too many slots) are a
// refusal at spawn instead of a trap at a function's first call deep in the C stack, and code
// that can run without charging fuel is refused (patches/0009).
static PyObject *
Module_compile(Module *self, PyObject *unused)
{
    if (!self->loaded || !self->m) {
        PyErr_SetString(Wasm3Error, "compile needs a loaded module");
        return NULL;
    }
    self->m->fuelRequired = true;
    M3Result err = m3_CompileModule(self->m);
    if (err) return raise_m3(self->m->runtime, err);
    // Loaded and compiled, the module needs its bytes no more (data, globals and elements were
    // copied in at load, every function is code now): the caller may let go of them.
    Py_CLEAR(self->wasm);
    Py_RETURN_NONE;
}

// Free the names of the module's functions, imports and globals (patches/0024): for a compiled
// module whose functions the caller has found; find_function finds nothing after.
static PyObject *
Module_forget_names(Module *self, PyObject *unused)
{
    if (!self->loaded || !self->m) {
        PyErr_SetString(Wasm3Error, "forget_names needs a loaded module");
        return NULL;
    }
    m3_ForgetNames(self->m);
    Py_RETURN_NONE;
}

static PyMethodDef Module_methods[] = {
    {"link_function", (PyCFunction)Module_link_function, METH_VARARGS,
     "link_function(module, name, signature, callable) -> bool (False if not imported)"},
    {"compile", (PyCFunction)Module_compile, METH_NOARGS,
     "compile() -> None: compile every function now, refusing code that skips fuel"},
    {"forget_names", (PyCFunction)Module_forget_names, METH_NOARGS,
     "forget_names() -> None: free the names once linked and found (find_function finds nothing after)"},
    {NULL, NULL}
};

static PyGetSetDef Module_getset[] = {
    {"fuel", (getter)Module_get_fuel, (setter)Module_set_fuel, "raw fuel units left", NULL},
    {NULL}
};

// ---- Function -------------------------------------------------------------------------------

static int
Function_traverse(Function *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->runtime);
    return 0;
}

static void
Function_dealloc(Function *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->runtime);
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PyObject *
Function_call(Function *self, PyObject *args, PyObject *kw)
{
    IM3Function f = self->f;
    IM3Runtime r = ((Runtime *)self->runtime)->r;
    if (runtime_closed((Runtime *)self->runtime)) return NULL;
    int nargs = m3_GetArgCount(f);
    if (PyTuple_GET_SIZE(args) != nargs) {
        return PyErr_Format(PyExc_TypeError, "%s takes %d arguments", m3_GetFunctionName(f), nargs);
    }
    if (nargs > MAX_ARGS) return PyErr_Format(Wasm3Error, "too many arguments");
    uint64_t vals[MAX_ARGS];
    const void *ptrs[MAX_ARGS];
    for (int i = 0; i < nargs; ++i) {
        ptrs[i] = &vals[i];
        put_value(&vals[i], m3_GetArgType(f, i), PyTuple_GET_ITEM(args, i));
    }
    if (PyErr_Occurred()) return NULL;
    m3_ResetErrorInfo(r);
    M3Result err = m3_Call(f, nargs, ptrs);
    if (err == c_hostRaised && PyErr_Occurred()) return NULL;   // keep the host's own exception
    if (err) return raise_m3(r, err);
    int nrets = m3_GetRetCount(f);
    if (nrets == 0) Py_RETURN_NONE;
    if (nrets > MAX_ARGS) return PyErr_Format(Wasm3Error, "too many results");
    for (int i = 0; i < nrets; ++i) ptrs[i] = &vals[i];
    err = m3_GetResults(f, nrets, ptrs);
    if (err) return raise_m3(r, err);
    if (nrets == 1) return get_value(&vals[0], m3_GetRetType(f, 0));
    PyObject *t = PyTuple_New(nrets);
    if (!t) return NULL;
    for (int i = 0; i < nrets; ++i) {
        PyObject *v = get_value(&vals[i], m3_GetRetType(f, i));
        if (!v) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *
Function_get_name(Function *self, void *closure)
{
    return PyUnicode_FromString(m3_GetFunctionName(self->f));
}

static PyObject *
Function_get_num_args(Function *self, void *closure)
{
    return PyLong_FromLong(m3_GetArgCount(self->f));
}

static PyObject *
Function_get_num_rets(Function *self, void *closure)
{
    return PyLong_FromLong(m3_GetRetCount(self->f));
}

static PyGetSetDef Function_getset[] = {
    {"name", (getter)Function_get_name, NULL, "function name", NULL},
    {"num_args", (getter)Function_get_num_args, NULL, "number of parameters", NULL},
    {"num_rets", (getter)Function_get_num_rets, NULL, "number of results", NULL},
    {NULL}
};

// ---- module ---------------------------------------------------------------------------------

static PyType_Slot Environment_slots[] = {
    {Py_tp_new, Environment_new},
    {Py_tp_dealloc, Environment_dealloc},
    {Py_tp_methods, Environment_methods},
    {Py_tp_doc, "A wasm3 environment"},
    {0, 0}
};
static PyType_Slot Runtime_slots[] = {
    {Py_tp_dealloc, Runtime_dealloc},
    {Py_tp_traverse, Runtime_traverse},
    {Py_tp_methods, Runtime_methods},
    {Py_tp_getset, Runtime_getset},
    {Py_tp_doc, "A wasm3 runtime: one agent's stack and linear memory"},
    {0, 0}
};
static PyType_Slot Module_slots[] = {
    {Py_tp_dealloc, Module_dealloc},
    {Py_tp_traverse, Module_traverse},
    {Py_tp_clear, Module_clear},
    {Py_tp_methods, Module_methods},
    {Py_tp_getset, Module_getset},
    {Py_tp_doc, "A parsed wasm module"},
    {0, 0}
};
static PyType_Slot Function_slots[] = {
    {Py_tp_dealloc, Function_dealloc},
    {Py_tp_traverse, Function_traverse},
    {Py_tp_call, Function_call},
    {Py_tp_getset, Function_getset},
    {Py_tp_doc, "An exported wasm function"},
    {0, 0}
};

#define SPEC(name, T, slots) {"microfang._wasm3." name, sizeof(T), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, slots}
static PyType_Spec Environment_spec = {"microfang._wasm3.Environment", sizeof(Environment), 0, Py_TPFLAGS_DEFAULT,
                                       Environment_slots};
static PyType_Spec Runtime_spec = SPEC("Runtime", Runtime, Runtime_slots);
static PyType_Spec Module_spec = SPEC("Module", Module, Module_slots);
static PyType_Spec Function_spec = SPEC("Function", Function, Function_slots);

// The address of a local variable: the difference between two calls made at different wasm call
// depths (from a host function) is the C stack those frames take (tests, bench).
static PyObject *
c_stack_address(PyObject *self, PyObject *unused)
{
    volatile char here = 0;
    return PyLong_FromVoidPtr((void *)&here);
}

static PyMethodDef module_methods[] = {
    {"c_stack_address", c_stack_address, METH_NOARGS, "c_stack_address() -> int: where the C stack is now"},
    {NULL, NULL}
};

static int
add_type(PyObject *m, const char *name, PyTypeObject **slot, PyType_Spec *spec)
{
    *slot = (PyTypeObject *)PyType_FromSpec(spec);
    if (!*slot) return -1;
    Py_INCREF(*slot);
    return PyModule_AddObject(m, name, (PyObject *)*slot);
}

static int
exec_module(PyObject *m)
{
    Wasm3Error = PyErr_NewException("microfang._wasm3.Wasm3Error", PyExc_RuntimeError, NULL);
    TrapError = PyErr_NewException("microfang._wasm3.Trap", Wasm3Error, NULL);
    OutOfFuel = PyErr_NewException("microfang._wasm3.OutOfFuel", TrapError, NULL);
    if (!Wasm3Error || !TrapError || !OutOfFuel) return -1;
    Py_INCREF(Wasm3Error); Py_INCREF(TrapError); Py_INCREF(OutOfFuel);
    if (PyModule_AddObject(m, "Wasm3Error", Wasm3Error) < 0) return -1;
    if (PyModule_AddObject(m, "Trap", TrapError) < 0) return -1;
    if (PyModule_AddObject(m, "OutOfFuel", OutOfFuel) < 0) return -1;
    if (add_type(m, "Environment", &EnvironmentType, &Environment_spec) < 0) return -1;
    if (add_type(m, "Runtime", &RuntimeType, &Runtime_spec) < 0) return -1;
    if (add_type(m, "Module", &ModuleType, &Module_spec) < 0) return -1;
    if (add_type(m, "Function", &FunctionType, &Function_spec) < 0) return -1;
    // The engine's limits (patches/0005, 0006), the same on the board's build.
    if (PyModule_AddIntConstant(m, "MAX_CALL_DEPTH", d_mfMaxCallDepth) < 0) return -1;
    if (PyModule_AddIntConstant(m, "MAX_BLOCK_DEPTH", d_mfMaxBlockDepth) < 0) return -1;
    if (PyModule_AddIntConstant(m, "MAX_FUNCTION_STACK_HEIGHT", d_m3MaxFunctionStackHeight) < 0) return -1;
    return PyModule_AddStringConstant(m, "M3_VERSION", M3_VERSION);
}

static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec_module}, {0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "microfang._wasm3", "wasm3 for microfang agents (memory limit, fuel)",
    0, module_methods, slots, NULL, NULL, NULL
};

PyMODINIT_FUNC
PyInit__wasm3(void)
{
    return PyModuleDef_Init(&moduledef);
}
