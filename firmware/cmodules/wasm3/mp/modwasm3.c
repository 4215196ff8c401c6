// wasm3 for MicroPython: the board's agent engine.
//
// Same names as the CPython binding (../cpython/_wasm3.c) so firmware/port.py can pick either:
//   env = wasm3.Environment(); rt = env.new_runtime(stack_bytes, memory_limit)
//   mod = env.parse_module(bytes); rt.load(mod); mod.link_function("mf", "log", "v(ii)", fn)
//   f = rt.find_function("name"); f(*args); rt.get_memory(0); rt.memory_size; mod.fuel
//   exceptions Wasm3Error > Trap > OutOfFuel
//
// Memory: every wasm3 allocation (runtime, stack, compiled code, linear memory) is a tracked
// block on the MicroPython GC heap (m_tracked_calloc), so `-X heapsize` or the board's heap
// really bounds what agents can use, and the GC neither frees nor misses those blocks.
//
// Exceptions: a Python exception raised by a host function must not longjmp across wasm3's
// C frames. call_python catches it with nlr_push, parks it on the module and returns a trap;
// the caller re-raises it once wasm3 has unwound.

#include <string.h>

#include "py/runtime.h"
#include "py/objarray.h"
#include "py/objexcept.h"
#include "py/objint.h"
#include "py/gc.h"

#include "wasm3.h"
#include "m3_env.h"

#define MAX_ARGS 16

static const char *c_hostRaised = "host function raised";

// wasm3's own allocations are tracked blocks, which the GC treats as roots and scans. A plain
// pointer from them to a GC object (a host callable, a sandbox) would keep it alive forever
// and, through the sandbox, the runtime itself: a reclaimed agent would never be freed. So
// pointers handed to wasm3 as userdata are stored inverted, which no heap address looks like;
// the objects they name are kept alive by ordinary references instead (Module.links).
#define HIDE(p) ((void *)~(uintptr_t)(p))
#define SHOW(p) ((void *)~(uintptr_t)(p))

// ---- allocator: wasm3 on the GC heap -----------------------------------------------------

void *m3_Malloc(size_t size) {
    return m_tracked_calloc(1, size);
}

void m3_FreeImpl(void *ptr) {
    m_tracked_free(ptr);
}

// A tracked block is a GC block with two link words in front (py/malloc.c m_tracked_node_t).
#define TRACKED_HEADER (2 * sizeof(void *))

// Resize a tracked block where it lies (gc_realloc without moving): true if it could.
static bool resize_in_place(void *ptr, size_t new_size) {
    uint8_t *node = (uint8_t *)ptr - TRACKED_HEADER;
    return gc_realloc(node, TRACKED_HEADER + new_size, false) == node;
}

bool m3_ShrinkInPlace(void *ptr, size_t new_size) {
    // Trimmed code pages (patches/0020): the tail blocks go back to the heap.
    return ptr != NULL && new_size > 0 && resize_in_place(ptr, new_size);
}

void *m3_Realloc(void *ptr, size_t new_size, size_t old_size) {
    if (new_size == old_size) {
        return ptr;
    }
    // In place where the heap allows (a memory.grow, a growing array): no second block and no
    // hole left behind, which is what fragments a small heap.
    if (ptr != NULL && new_size > 0 && resize_in_place(ptr, new_size)) {
        if (new_size > old_size) {
            memset((uint8_t *)ptr + old_size, 0, new_size - old_size);
        }
        return ptr;
    }
    // Otherwise copy into a new block (zeroed past the old size).
    void *grown = m_tracked_calloc(1, new_size);
    if (grown == NULL) {
        return NULL;
    }
    if (ptr != NULL) {
        memcpy(grown, ptr, old_size < new_size ? old_size : new_size);
        m_tracked_free(ptr);
    }
    return grown;
}

// ---- exceptions --------------------------------------------------------------------------

MP_DEFINE_EXCEPTION(Wasm3Error, RuntimeError)
MP_DEFINE_EXCEPTION(Trap, Wasm3Error)
MP_DEFINE_EXCEPTION(OutOfFuel, Trap)

static NORETURN void raise_m3(IM3Runtime runtime, M3Result err) {
    const mp_obj_type_t *kind = &mp_type_Wasm3Error;
    if (err == m3Err_trapOutOfFuel) {
        kind = &mp_type_OutOfFuel;
    } else if (strncmp(err, "[trap]", 6) == 0) {
        kind = &mp_type_Trap;
    }
    if (runtime != NULL) {
        M3ErrorInfo info;
        memset(&info, 0, sizeof(info));
        m3_GetErrorInfo(runtime, &info);
        if (info.message != NULL && info.message[0]) {
            mp_raise_msg_varg(kind, MP_ERROR_TEXT("%s (%s)"), err, info.message);
        }
    }
    mp_raise_msg_varg(kind, MP_ERROR_TEXT("%s"), err);
}

// ---- objects -----------------------------------------------------------------------------

// The wasm3 environment outlives every runtime made from it (a runtime gives its code pages
// back to the environment when freed). The GC runs finalisers in no particular order and frees
// each object right after its finaliser, so the environment's state lives in a tracked block
// shared by the Environment and its Runtimes, freed when the last of them is gone.
//
// One value stack for all runtimes of an environment (a board's agents): one agent runs at a
// time, so each runtime is pointed at it before it runs, with its own size as its limit
// (memory's maxStack), and N agents need one stack, the largest, instead of N.
typedef struct {
    IM3Environment e;
    int runtimes;   // live runtimes made from it
    bool orphaned;  // the Environment object is gone
    void *stack;    // the shared value stack: the largest a runtime asked for
    size_t stack_bytes;
    int calls;      // wasm calls in progress (a host function may call back into its runtime)
    IM3Runtime running;  // the runtime of the outermost call in progress
} env_core_t;

// wasm3 keeps four slots of slack past a stack (m3_NewRuntime).
#define STACK_SLACK (4 * sizeof(m3slot_t))

typedef struct {
    mp_obj_base_t base;
    env_core_t *core;
} env_obj_t;

static void env_core_release(env_core_t *core) {
    if (core->orphaned && core->runtimes == 0) {
        m3_FreeEnvironment(core->e);
        m_tracked_free(core->stack);
        m_tracked_free(core);
    }
}

typedef struct {
    mp_obj_base_t base;
    mp_obj_t env;
    mp_obj_t wasm;         // wasm3 keeps pointers into these bytes until compile()
    mp_obj_t links;        // list of linked Python callables (keeps them alive)
    mp_obj_t pending;      // exception raised by a host function, re-raised after the call
    IM3Module m;
    bool loaded;
    int64_t *fuel;         // raw units left, in a tracked block: op_UseFuel subtracts (patches/0001)
} module_obj_t;

typedef struct {
    mp_obj_base_t base;
    env_core_t *core;
    mp_obj_t module;
    IM3Runtime r;
    int64_t *fuel;         // the loaded module's counter, freed with the runtime
} runtime_obj_t;

typedef struct {
    mp_obj_base_t base;
    mp_obj_t runtime;
    IM3Function f;
} function_obj_t;

static const mp_obj_type_t env_type, runtime_type, module_type, function_type;

static mp_obj_t env_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 0, 0, false);
    env_core_t *core = m_tracked_calloc(1, sizeof(env_core_t));
    if (core == NULL) {
        mp_raise_msg(&mp_type_MemoryError, MP_ERROR_TEXT("wasm3 environment"));
    }
    core->e = m3_NewEnvironment();
    if (core->e == NULL) {
        m_tracked_free(core);
        mp_raise_msg(&mp_type_MemoryError, MP_ERROR_TEXT("wasm3 environment"));
    }
    env_obj_t *self = mp_obj_malloc_with_finaliser(env_obj_t, type);
    self->core = core;
    return MP_OBJ_FROM_PTR(self);
}

static mp_obj_t env_del(mp_obj_t self_in) {
    env_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (self->core != NULL) {
        self->core->orphaned = true;
        env_core_release(self->core);
        self->core = NULL;
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(env_del_obj, env_del);

static mp_obj_t env_new_runtime(size_t n_args, const mp_obj_t *args) {
    env_obj_t *env = MP_OBJ_TO_PTR(args[0]);
    mp_int_t stack = mp_obj_get_int(args[1]);
    mp_int_t limit = n_args > 2 ? mp_obj_get_int(args[2]) : 0;
    if (stack <= 0 || limit < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("stack and memory limit must be positive"));
    }
    runtime_obj_t *self = mp_obj_malloc_with_finaliser(runtime_obj_t, &runtime_type);
    self->core = NULL;
    self->module = mp_const_none;
    self->fuel = NULL;
    env_core_t *core = env->core;
    if ((size_t)stack > core->stack_bytes) {
        if (core->calls > 0) {  // a call in progress runs on the stack that would move
            mp_raise_msg(&mp_type_Wasm3Error, MP_ERROR_TEXT("a larger stack cannot be made during a wasm call"));
        }
        // The shared stack grows to the largest (in place if it can); runtimes find its new
        // address at their next call (use_shared_stack).
        void *grown = m3_Realloc(core->stack, stack + STACK_SLACK, core->stack == NULL ? 0 : core->stack_bytes + STACK_SLACK);
        if (grown == NULL) {
            mp_raise_msg(&mp_type_MemoryError, MP_ERROR_TEXT("wasm3 stack"));
        }
        core->stack = grown;
        core->stack_bytes = stack;
    }
    self->r = m3_NewRuntimeOnStack(core->e, (uint32_t)stack, core->stack);
    if (self->r == NULL) {
        mp_raise_msg(&mp_type_MemoryError, MP_ERROR_TEXT("wasm3 runtime"));
    }
    self->core = env->core;
    self->core->runtimes++;
    // ResizeMemory clamps every (re)allocation of linear memory to this many bytes; the block is
    // taken now, before the module's small ones (patches/0025).
    if (m3_ReserveMemory(self->r, (uint32_t)limit) != m3Err_none) {
        mp_raise_msg(&mp_type_MemoryError, MP_ERROR_TEXT("wasm3 linear memory"));
    }
    return MP_OBJ_FROM_PTR(self);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(env_new_runtime_obj, 2, 3, env_new_runtime);

static mp_obj_t env_parse_module(mp_obj_t self_in, mp_obj_t wasm) {
    env_obj_t *env = MP_OBJ_TO_PTR(self_in);
    if (!mp_obj_is_type(wasm, &mp_type_bytes)) {
        mp_raise_TypeError(MP_ERROR_TEXT("parse_module needs bytes"));
    }
    mp_buffer_info_t buf;
    mp_get_buffer_raise(wasm, &buf, MP_BUFFER_READ);
    IM3Module m = NULL;
    M3Result err = m3_ParseModule(env->core->e, &m, buf.buf, (uint32_t)buf.len);
    if (err) {
        raise_m3(NULL, err);
    }
    module_obj_t *self = mp_obj_malloc_with_finaliser(module_obj_t, &module_type);
    self->env = self_in;
    self->wasm = wasm;
    self->links = mp_obj_new_list(0, NULL);
    self->pending = MP_OBJ_NULL;
    self->m = m;
    self->loaded = false;
    self->fuel = m_tracked_calloc(1, sizeof(int64_t));
    if (self->fuel == NULL) {
        mp_raise_msg(&mp_type_MemoryError, MP_ERROR_TEXT("wasm3 fuel counter"));
    }
    return MP_OBJ_FROM_PTR(self);
}
static MP_DEFINE_CONST_FUN_OBJ_2(env_parse_module_obj, env_parse_module);

static const mp_rom_map_elem_t env_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___del__), MP_ROM_PTR(&env_del_obj) },
    { MP_ROM_QSTR(MP_QSTR_new_runtime), MP_ROM_PTR(&env_new_runtime_obj) },
    { MP_ROM_QSTR(MP_QSTR_parse_module), MP_ROM_PTR(&env_parse_module_obj) },
};
static MP_DEFINE_CONST_DICT(env_locals, env_locals_table);

static MP_DEFINE_CONST_OBJ_TYPE(env_type, MP_QSTR_Environment, MP_TYPE_FLAG_NONE,
    make_new, env_make_new, locals_dict, &env_locals);

// ---- Runtime -----------------------------------------------------------------------------

static mp_obj_t runtime_del(mp_obj_t self_in) {
    runtime_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (self->r != NULL) {
        // Frees the loaded module too; the Module object only drops its references.
        m3_FreeRuntime(self->r);
        self->r = NULL;
        m_tracked_free(self->fuel);
        self->fuel = NULL;
    }
    if (self->core != NULL) {
        self->core->runtimes--;
        env_core_release(self->core);
        self->core = NULL;
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(runtime_del_obj, runtime_del);

static void check_open(runtime_obj_t *rt) {
    if (rt->r == NULL) {
        mp_raise_msg(&mp_type_Wasm3Error, MP_ERROR_TEXT("runtime is closed"));
    }
}

// Before wasm3 uses a runtime's stack: point it at the shared one, limited to its own size. A
// call from a host function back into the running runtime goes on above its caller's frames
// (wasm3 moved runtime->stack there); into another runtime it would overwrite them: refused.
static void use_shared_stack(runtime_obj_t *rt) {
    env_core_t *core = rt->core;
    IM3Runtime r = rt->r;
    if (core->calls > 0) {
        if (r != core->running) {
            mp_raise_msg(&mp_type_Wasm3Error, MP_ERROR_TEXT("a host function called into another runtime"));
        }
        return;
    }
    r->stack = core->stack;
    if (r->memory.mallocated != NULL) {
        r->memory.mallocated->maxStack = (m3slot_t *)core->stack + r->numStackSlots;
    }
}

// m3_Call or m3_FindFunction (which may run the start function) on the shared stack.
static void enter(runtime_obj_t *rt) {
    use_shared_stack(rt);
    if (rt->core->calls++ == 0) {
        rt->core->running = rt->r;
    }
}

static void leave(runtime_obj_t *rt) {
    rt->core->calls--;
}

m3ApiRawFunction(metering_usegas) {
    m3ApiGetArg(int32_t, gas)
    int64_t *fuel = (int64_t *)(_ctx->userdata);  // a tracked block: no GC object behind it
    if (gas < 0) {
        m3ApiTrap(m3Err_trapNegativeFuel);  // a charge never mints fuel
    }
    *fuel -= gas;
    if (*fuel < 0) {
        *fuel = 0;
        m3ApiTrap(m3Err_trapOutOfFuel);
    }
    m3ApiSuccess();
}

static mp_obj_t runtime_load(mp_obj_t self_in, mp_obj_t mod_in) {
    runtime_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (!mp_obj_is_type(mod_in, &module_type)) {
        mp_raise_TypeError(MP_ERROR_TEXT("load needs a Module"));
    }
    module_obj_t *mod = MP_OBJ_TO_PTR(mod_in);
    check_open(self);
    if (mod->loaded || self->module != mp_const_none) {
        mp_raise_msg(&mp_type_Wasm3Error, MP_ERROR_TEXT("module or runtime already loaded"));
    }
    use_shared_stack(self);  // loading evaluates constant expressions on the stack
    M3Result err = m3_LoadModule(self->r, mod->m);
    if (err) {
        raise_m3(self->r, err);
    }
    mod->loaded = true;
    self->module = mod_in;
    self->fuel = mod->fuel;  // now owned by the runtime, whose code refers to it
    // Direct metering calls compile to op_UseFuel on this counter; the raw function serves
    // indirect calls with the same charge and trap.
    mod->m->fuelCounter = mod->fuel;
    err = m3_LinkRawFunctionEx(mod->m, "metering", "usegas", "v(i)", &metering_usegas, mod->fuel);
    if (err && err != m3Err_functionLookupFailed) {
        raise_m3(self->r, err);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(runtime_load_obj, runtime_load);

static mp_obj_t runtime_find_function(mp_obj_t self_in, mp_obj_t name) {
    runtime_obj_t *self = MP_OBJ_TO_PTR(self_in);
    check_open(self);
    IM3Function f = NULL;
    const char *wanted = mp_obj_str_get_str(name);
    enter(self);
    M3Result err = m3_FindFunction(&f, self->r, wanted);
    leave(self);
    if (err) {
        raise_m3(self->r, err);
    }
    function_obj_t *fn = mp_obj_malloc(function_obj_t, &function_type);
    fn->runtime = self_in;
    fn->f = f;
    return MP_OBJ_FROM_PTR(fn);
}
static MP_DEFINE_CONST_FUN_OBJ_2(runtime_find_function_obj, runtime_find_function);

static mp_obj_t runtime_get_memory(mp_obj_t self_in, mp_obj_t index) {
    // Valid until the next call into wasm (memory.grow may move it): callers copy at once.
    runtime_obj_t *self = MP_OBJ_TO_PTR(self_in);
    check_open(self);
    uint32_t size = 0;
    uint8_t *mem = m3_GetMemory(self->r, &size, (uint32_t)mp_obj_get_int(index));
    if (mem == NULL) {
        return mp_const_none;
    }
    return mp_obj_new_memoryview(MP_OBJ_ARRAY_TYPECODE_FLAG_RW | 'B', size, mem);
}
static MP_DEFINE_CONST_FUN_OBJ_2(runtime_get_memory_obj, runtime_get_memory);

static void runtime_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    runtime_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (self->r == NULL && dest[0] == MP_OBJ_NULL && (attr == MP_QSTR_memory_size || attr == MP_QSTR_memory_limit)) {
        dest[0] = MP_OBJ_NEW_SMALL_INT(0);
        return;
    }
    if (dest[0] == MP_OBJ_NULL && attr == MP_QSTR_memory_size) {
        dest[0] = mp_obj_new_int_from_uint(m3_GetMemorySize(self->r));
    } else if (dest[0] == MP_OBJ_NULL && attr == MP_QSTR_memory_limit) {
        dest[0] = mp_obj_new_int_from_uint(self->r->memoryLimit);
    } else {
        dest[1] = MP_OBJ_SENTINEL;  // continue lookup in locals_dict
    }
}

static const mp_rom_map_elem_t runtime_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___del__), MP_ROM_PTR(&runtime_del_obj) },
    // close(): free the runtime now (a reclaimed agent), not at the next garbage collection.
    { MP_ROM_QSTR(MP_QSTR_close), MP_ROM_PTR(&runtime_del_obj) },
    { MP_ROM_QSTR(MP_QSTR_load), MP_ROM_PTR(&runtime_load_obj) },
    { MP_ROM_QSTR(MP_QSTR_find_function), MP_ROM_PTR(&runtime_find_function_obj) },
    { MP_ROM_QSTR(MP_QSTR_get_memory), MP_ROM_PTR(&runtime_get_memory_obj) },
};
static MP_DEFINE_CONST_DICT(runtime_locals, runtime_locals_table);

static MP_DEFINE_CONST_OBJ_TYPE(runtime_type, MP_QSTR_Runtime, MP_TYPE_FLAG_NONE,
    attr, runtime_attr, locals_dict, &runtime_locals);

// ---- Module ------------------------------------------------------------------------------

static mp_obj_t module_del(mp_obj_t self_in) {
    module_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (self->m != NULL && !self->loaded) {
        m3_FreeModule(self->m);
        m_tracked_free(self->fuel);
    }
    self->m = NULL;
    self->fuel = NULL;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(module_del_obj, module_del);

static void put_value(uint64_t *slot, M3ValueType type, mp_obj_t v) {
    switch (type) {
        case c_m3Type_i32:
            *(int32_t *)slot = (int32_t)mp_obj_get_int_truncated(v);
            break;
        case c_m3Type_i64: {
            // Through bytes so values above the small-int range work on 32-bit boards too.
            uint8_t raw[8] = {0};
            if (mp_obj_is_small_int(v)) {
                *(int64_t *)slot = MP_OBJ_SMALL_INT_VALUE(v);
            } else {
                mp_obj_int_to_bytes_impl(v, false, 8, raw);
                int64_t x = 0;
                for (int i = 7; i >= 0; i--) {
                    x = (x << 8) | raw[i];
                }
                *(int64_t *)slot = x;
            }
            break;
        }
        #if MICROPY_PY_BUILTINS_FLOAT
        case c_m3Type_f32:
            *(float *)slot = (float)mp_obj_get_float(v);
            break;
        case c_m3Type_f64:
            *(double *)slot = (double)mp_obj_get_float(v);
            break;
        #endif
        default:
            break;
    }
}

static mp_obj_t get_value(const uint64_t *slot, M3ValueType type) {
    switch (type) {
        case c_m3Type_i32:
            return mp_obj_new_int(*(const int32_t *)slot);
        case c_m3Type_i64:
            return mp_obj_new_int_from_ll(*(const int64_t *)slot);
        #if MICROPY_PY_BUILTINS_FLOAT
        case c_m3Type_f32:
            return mp_obj_new_float(*(const float *)slot);
        case c_m3Type_f64:
            return mp_obj_new_float(*(const double *)slot);
        #endif
        default:
            mp_raise_msg(&mp_type_Wasm3Error, MP_ERROR_TEXT("unsupported value type"));
    }
}

typedef struct {
    mp_obj_t fn;
    module_obj_t *module;
} link_t;

m3ApiRawFunction(call_python) {
    link_t *link = (link_t *)SHOW(_ctx->userdata);
    IM3Function f = _ctx->function;
    int nargs = m3_GetArgCount(f), nrets = m3_GetRetCount(f);
    mp_obj_t args[MAX_ARGS];
    nlr_buf_t nlr;
    if (nargs > MAX_ARGS) {
        m3ApiTrap("too many host-function arguments");
    }
    if (nlr_push(&nlr) == 0) {
        for (int i = 0; i < nargs; ++i) {
            args[i] = get_value(&_sp[i + nrets], m3_GetArgType(f, i));
        }
        mp_obj_t ret = mp_call_function_n_kw(link->fn, nargs, 0, args);
        if (nrets == 1) {
            if (ret == mp_const_none) {
                mp_raise_TypeError(MP_ERROR_TEXT("host function must return a value"));
            }
            put_value(&_sp[0], m3_GetRetType(f, 0), ret);
        } else if (nrets > 1) {
            size_t n;
            mp_obj_t *items;
            mp_obj_get_array(ret, &n, &items);
            if ((int)n != nrets) {
                mp_raise_TypeError(MP_ERROR_TEXT("host function must return a tuple of results"));
            }
            for (int i = 0; i < nrets; ++i) {
                put_value(&_sp[i], m3_GetRetType(f, i), items[i]);
            }
        }
        nlr_pop();
    } else {
        link->module->pending = MP_OBJ_FROM_PTR(nlr.ret_val);
        m3ApiTrap(c_hostRaised);
    }
    m3ApiSuccess();
}

static mp_obj_t module_link_function(size_t n_args, const mp_obj_t *args) {
    module_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    if (!mp_obj_is_callable(args[4])) {
        mp_raise_TypeError(MP_ERROR_TEXT("link_function needs a callable"));
    }
    // The link record lives on the GC heap, reachable through self->links, so neither it nor
    // the callable is collected while wasm3 holds a pointer to it.
    link_t init = { args[4], self };
    mp_obj_t record = mp_obj_new_bytearray(sizeof(link_t), &init);
    mp_buffer_info_t buf;
    mp_get_buffer_raise(record, &buf, MP_BUFFER_WRITE);
    link_t *link = buf.buf;
    M3Result err = m3_LinkRawFunctionEx(self->m, mp_obj_str_get_str(args[1]), mp_obj_str_get_str(args[2]),
        mp_obj_str_get_str(args[3]), call_python, HIDE(link));
    if (err == m3Err_functionLookupFailed) {
        return mp_const_false;
    }
    if (err) {
        raise_m3(NULL, err);
    }
    mp_obj_list_append(self->links, record);
    mp_obj_list_append(self->links, args[4]);
    return mp_const_true;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(module_link_function_obj, 5, 5, module_link_function);

static void module_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    module_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (attr == MP_QSTR_fuel) {
        if (dest[0] == MP_OBJ_NULL) {
            dest[0] = mp_obj_new_int_from_ll(self->fuel != NULL ? *self->fuel : 0);
        } else if (dest[1] != MP_OBJ_NULL) {
            uint64_t v = 0;
            put_value(&v, c_m3Type_i64, dest[1]);
            if (self->fuel != NULL) {
                *self->fuel = (int64_t)v < 0 ? 0 : (int64_t)v;
            }
            dest[0] = MP_OBJ_NULL;  // store succeeded
        }
        return;
    }
    if (dest[0] == MP_OBJ_NULL) {
        dest[1] = MP_OBJ_SENTINEL;
    }
}

// Compile every function now, after linking (see the CPython binding's Module.compile).
static mp_obj_t module_compile(mp_obj_t self_in) {
    module_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (!self->loaded || self->m == NULL) {
        mp_raise_msg(&mp_type_Wasm3Error, MP_ERROR_TEXT("compile needs a loaded module"));
    }
    self->m->fuelRequired = true;
    M3Result err = m3_CompileModule(self->m);
    if (err) {
        raise_m3(self->m->runtime, err);
    }
    // Loaded and compiled, the module needs its bytes no more (data, globals and elements were
    // copied in at load, every function is code now): the board may let go of them.
    self->wasm = mp_const_none;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(module_compile_obj, module_compile);

// Free the names of the module's functions, imports and globals (patches/0024): for a compiled
// module whose functions the caller has found; find_function finds nothing after.
static mp_obj_t module_forget_names(mp_obj_t self_in) {
    module_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (!self->loaded || self->m == NULL) {
        mp_raise_msg(&mp_type_Wasm3Error, MP_ERROR_TEXT("forget_names needs a loaded module"));
    }
    m3_ForgetNames(self->m);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(module_forget_names_obj, module_forget_names);

static const mp_rom_map_elem_t module_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___del__), MP_ROM_PTR(&module_del_obj) },
    { MP_ROM_QSTR(MP_QSTR_link_function), MP_ROM_PTR(&module_link_function_obj) },
    { MP_ROM_QSTR(MP_QSTR_compile), MP_ROM_PTR(&module_compile_obj) },
    { MP_ROM_QSTR(MP_QSTR_forget_names), MP_ROM_PTR(&module_forget_names_obj) },
};
static MP_DEFINE_CONST_DICT(module_locals, module_locals_table);

static MP_DEFINE_CONST_OBJ_TYPE(module_type, MP_QSTR_Module, MP_TYPE_FLAG_NONE,
    attr, module_attr, locals_dict, &module_locals);

// ---- Function ----------------------------------------------------------------------------

static mp_obj_t function_call(mp_obj_t self_in, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    function_obj_t *self = MP_OBJ_TO_PTR(self_in);
    runtime_obj_t *rt = MP_OBJ_TO_PTR(self->runtime);
    check_open(rt);
    module_obj_t *mod = MP_OBJ_TO_PTR(rt->module);
    IM3Function f = self->f;
    int nargs = m3_GetArgCount(f);
    mp_arg_check_num(n_args, n_kw, nargs, nargs, false);
    if (nargs > MAX_ARGS) {
        mp_raise_msg(&mp_type_Wasm3Error, MP_ERROR_TEXT("too many arguments"));
    }
    uint64_t vals[MAX_ARGS];
    const void *ptrs[MAX_ARGS];
    for (int i = 0; i < nargs; ++i) {
        ptrs[i] = &vals[i];
        put_value(&vals[i], m3_GetArgType(f, i), args[i]);
    }
    m3_ResetErrorInfo(rt->r);
    mod->pending = MP_OBJ_NULL;
    enter(rt);
    M3Result err = m3_Call(f, nargs, ptrs);
    leave(rt);
    if (err == c_hostRaised && mod->pending != MP_OBJ_NULL) {
        mp_obj_t exc = mod->pending;
        mod->pending = MP_OBJ_NULL;
        nlr_raise(exc);  // the host function's own exception, raised now that wasm3 unwound
    }
    if (err) {
        raise_m3(rt->r, err);
    }
    int nrets = m3_GetRetCount(f);
    if (nrets == 0) {
        return mp_const_none;
    }
    for (int i = 0; i < nrets; ++i) {
        ptrs[i] = &vals[i];
    }
    err = m3_GetResults(f, nrets, ptrs);
    if (err) {
        raise_m3(rt->r, err);
    }
    if (nrets == 1) {
        return get_value(&vals[0], m3_GetRetType(f, 0));
    }
    mp_obj_t items[MAX_ARGS];
    for (int i = 0; i < nrets; ++i) {
        items[i] = get_value(&vals[i], m3_GetRetType(f, i));
    }
    return mp_obj_new_tuple(nrets, items);
}

static void function_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    function_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (dest[0] != MP_OBJ_NULL) {
        return;
    }
    if (attr == MP_QSTR_name) {
        dest[0] = mp_obj_new_str(m3_GetFunctionName(self->f), strlen(m3_GetFunctionName(self->f)));
    } else if (attr == MP_QSTR_num_args) {
        dest[0] = MP_OBJ_NEW_SMALL_INT(m3_GetArgCount(self->f));
    } else if (attr == MP_QSTR_num_rets) {
        dest[0] = MP_OBJ_NEW_SMALL_INT(m3_GetRetCount(self->f));
    }
}

static MP_DEFINE_CONST_OBJ_TYPE(function_type, MP_QSTR_Function, MP_TYPE_FLAG_NONE,
    call, function_call, attr, function_attr);

// ---- module ------------------------------------------------------------------------------

// The address of a local variable (see the CPython binding's c_stack_address).
static mp_obj_t wasm3_c_stack_address(void) {
    volatile char here = 0;
    return mp_obj_new_int_from_uint((uintptr_t)&here);
}
static MP_DEFINE_CONST_FUN_OBJ_0(wasm3_c_stack_address_obj, wasm3_c_stack_address);

static const mp_rom_map_elem_t wasm3_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_c_stack_address), MP_ROM_PTR(&wasm3_c_stack_address_obj) },
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_wasm3) },
    { MP_ROM_QSTR(MP_QSTR_Environment), MP_ROM_PTR(&env_type) },
    { MP_ROM_QSTR(MP_QSTR_Runtime), MP_ROM_PTR(&runtime_type) },
    { MP_ROM_QSTR(MP_QSTR_Module), MP_ROM_PTR(&module_type) },
    { MP_ROM_QSTR(MP_QSTR_Function), MP_ROM_PTR(&function_type) },
    { MP_ROM_QSTR(MP_QSTR_Wasm3Error), MP_ROM_PTR(&mp_type_Wasm3Error) },
    { MP_ROM_QSTR(MP_QSTR_Trap), MP_ROM_PTR(&mp_type_Trap) },
    { MP_ROM_QSTR(MP_QSTR_OutOfFuel), MP_ROM_PTR(&mp_type_OutOfFuel) },
    // The engine's limits (patches/0005, 0006), the same in the simulator's binding.
    { MP_ROM_QSTR(MP_QSTR_MAX_CALL_DEPTH), MP_ROM_INT(d_mfMaxCallDepth) },
    { MP_ROM_QSTR(MP_QSTR_MAX_BLOCK_DEPTH), MP_ROM_INT(d_mfMaxBlockDepth) },
    { MP_ROM_QSTR(MP_QSTR_MAX_FUNCTION_STACK_HEIGHT), MP_ROM_INT(d_m3MaxFunctionStackHeight) },
};
static MP_DEFINE_CONST_DICT(wasm3_globals, wasm3_globals_table);

const mp_obj_module_t wasm3_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&wasm3_globals,
};

MP_REGISTER_MODULE(MP_QSTR_wasm3, wasm3_module);
