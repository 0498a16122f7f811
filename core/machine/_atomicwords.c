/*
 * pagerace.core.machine._atomicwords: cross-process atomic operations on 64-bit words.
 *
 * One type, AtomicWords, wraps a writable C-contiguous buffer (a numpy int64 array, a
 * memoryview, multiprocessing.shared_memory.SharedMemory.buf) as an array of int64
 * words and exposes the words API of core/machine/words.py (load, store, cas, fetch_add,
 * fetch_or, fetch_and, xchg) plus test_set_bit / test_clear_bit, each a GCC __atomic
 * builtin with __ATOMIC_SEQ_CST. Two processes mapping the same shared memory see each
 * other's operations as they would on kernel atomic64_t / bitops.
 *
 * Design (see shared/MEASUREMENTS.md sections 2, 3 and 5):
 * - METH_FASTCALL with hand-rolled argument parsing (nargs check + PyLong_AsLongLong),
 *   so one call costs about 30 ns. The GIL is never released: an atomic is a few
 *   nanoseconds and releasing the GIL would cost more than the operation.
 * - The Py_buffer is held from construction until release() or dealloc, so the
 *   exporter (e.g. SharedMemory.buf) cannot be closed or unmapped under us:
 *   shm.close() raises BufferError until release() has been called.
 * - Arithmetic is done on uint64_t and reinterpreted as int64_t, so fetch_add wraps
 *   modulo 2**64 like the kernel's atomic64_add instead of being signed overflow.
 *   (PlainWords raises ValueError on such overflow instead; callers stay in range.)
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

typedef struct {
    PyObject_HEAD
    Py_buffer view;     /* valid while words != NULL */
    int64_t *words;     /* NULL once released */
    Py_ssize_t nwords;
} AtomicWordsObject;

static PyTypeObject AtomicWords_Type;

/* ---- helpers ------------------------------------------------------------------- */

static int
check_live(AtomicWordsObject *self)
{
    if (self->words == NULL) {
        PyErr_SetString(PyExc_ValueError, "AtomicWords is released");
        return -1;
    }
    return 0;
}

static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd argument%s (%zd given)",
                     name, want, want == 1 ? "" : "s", nargs);
        return -1;
    }
    return 0;
}

/*
 * Resolve args[0] to a word pointer. Returns NULL with an exception set when the object
 * is released, the index is not an integer, negative, or past the end.
 */
static int64_t *
word_ptr(AtomicWordsObject *self, PyObject *arg)
{
    long long i;

    if (check_live(self) < 0) {
        return NULL;
    }
    i = PyLong_AsLongLong(arg);
    if (i == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_IndexError,
                         "AtomicWords index %R out of range (length %zd)",
                         arg, self->nwords);
        }
        return NULL;
    }
    if (i < 0 || i >= (long long)self->nwords) {
        PyErr_Format(PyExc_IndexError,
                     "AtomicWords index %lld out of range (length %zd)",
                     i, self->nwords);
        return NULL;
    }
    return self->words + i;
}

/* Parse a signed 64-bit value argument; -1 with an exception set on error. */
static int
get_value(PyObject *arg, int64_t *out)
{
    long long v = PyLong_AsLongLong(arg);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* Parse a bit number 0..63; -1 with an exception set on error. */
static int
get_bit(PyObject *arg, uint64_t *mask)
{
    long long b = PyLong_AsLongLong(arg);
    if (b == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (b < 0 || b > 63) {
        PyErr_Format(PyExc_ValueError, "bit %lld out of range (0..63)", b);
        return -1;
    }
    *mask = (uint64_t)1 << b;
    return 0;
}

/* ---- construction / destruction ------------------------------------------------- */

static PyObject *
AtomicWords_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *obj;
    AtomicWordsObject *self;
    Py_buffer view;

    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "AtomicWords() takes no keyword arguments");
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) != 1) {
        PyErr_Format(PyExc_TypeError,
                     "AtomicWords() takes exactly 1 argument (%zd given)",
                     PyTuple_GET_SIZE(args));
        return NULL;
    }
    obj = PyTuple_GET_ITEM(args, 0);

    if (PyObject_GetBuffer(obj, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    if (view.len % 8 != 0) {
        PyErr_Format(PyExc_ValueError,
                     "AtomicWords buffer length %zd bytes is not a multiple of 8",
                     view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    if (((uintptr_t)view.buf) % 8 != 0) {
        PyErr_Format(PyExc_ValueError,
                     "AtomicWords buffer address %p is not 8-byte aligned "
                     "(misaligned by %d bytes)",
                     view.buf, (int)(((uintptr_t)view.buf) % 8));
        PyBuffer_Release(&view);
        return NULL;
    }

    self = (AtomicWordsObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    self->view = view;
    self->nwords = view.len / 8;
    /* A zero-length buffer may export a NULL pointer; keep "released" distinct. */
    self->words = view.buf != NULL ? (int64_t *)view.buf : (int64_t *)&self->nwords;
    return (PyObject *)self;
}

static void
do_release(AtomicWordsObject *self)
{
    if (self->words != NULL) {
        self->words = NULL;
        self->nwords = 0;
        PyBuffer_Release(&self->view);
    }
}

static void
AtomicWords_dealloc(AtomicWordsObject *self)
{
    do_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- methods -------------------------------------------------------------------- */

static PyObject *
AtomicWords_release(AtomicWordsObject *self, PyObject *Py_UNUSED(ignored))
{
    do_release(self);
    Py_RETURN_NONE;
}

static PyObject *
AtomicWords_load(AtomicWordsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    if (check_nargs("load", nargs, 1) < 0 || (p = word_ptr(self, args[0])) == NULL) {
        return NULL;
    }
    return PyLong_FromLongLong(__atomic_load_n(p, __ATOMIC_SEQ_CST));
}

static PyObject *
AtomicWords_store(AtomicWordsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p, v;
    if (check_nargs("store", nargs, 2) < 0 || (p = word_ptr(self, args[0])) == NULL
        || get_value(args[1], &v) < 0) {
        return NULL;
    }
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyObject *
AtomicWords_cas(AtomicWordsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p, expected, desired;
    if (check_nargs("cas", nargs, 3) < 0 || (p = word_ptr(self, args[0])) == NULL
        || get_value(args[1], &expected) < 0 || get_value(args[2], &desired) < 0) {
        return NULL;
    }
    if (__atomic_compare_exchange_n(p, &expected, desired, /* weak */ 0,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyObject *
AtomicWords_fetch_add(AtomicWordsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p, v;
    uint64_t old;
    if (check_nargs("fetch_add", nargs, 2) < 0 || (p = word_ptr(self, args[0])) == NULL
        || get_value(args[1], &v) < 0) {
        return NULL;
    }
    old = __atomic_fetch_add((uint64_t *)p, (uint64_t)v, __ATOMIC_SEQ_CST);
    return PyLong_FromLongLong((int64_t)old);
}

static PyObject *
AtomicWords_fetch_or(AtomicWordsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p, v;
    if (check_nargs("fetch_or", nargs, 2) < 0 || (p = word_ptr(self, args[0])) == NULL
        || get_value(args[1], &v) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(__atomic_fetch_or(p, v, __ATOMIC_SEQ_CST));
}

static PyObject *
AtomicWords_fetch_and(AtomicWordsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p, v;
    if (check_nargs("fetch_and", nargs, 2) < 0 || (p = word_ptr(self, args[0])) == NULL
        || get_value(args[1], &v) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(__atomic_fetch_and(p, v, __ATOMIC_SEQ_CST));
}

static PyObject *
AtomicWords_xchg(AtomicWordsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p, v;
    if (check_nargs("xchg", nargs, 2) < 0 || (p = word_ptr(self, args[0])) == NULL
        || get_value(args[1], &v) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(__atomic_exchange_n(p, v, __ATOMIC_SEQ_CST));
}

static PyObject *
AtomicWords_test_set_bit(AtomicWordsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    uint64_t mask, old;
    if (check_nargs("test_set_bit", nargs, 2) < 0
        || (p = word_ptr(self, args[0])) == NULL || get_bit(args[1], &mask) < 0) {
        return NULL;
    }
    old = __atomic_fetch_or((uint64_t *)p, mask, __ATOMIC_SEQ_CST);
    return PyBool_FromLong((old & mask) != 0);
}

static PyObject *
AtomicWords_test_clear_bit(AtomicWordsObject *self, PyObject *const *args,
                           Py_ssize_t nargs)
{
    int64_t *p;
    uint64_t mask, old;
    if (check_nargs("test_clear_bit", nargs, 2) < 0
        || (p = word_ptr(self, args[0])) == NULL || get_bit(args[1], &mask) < 0) {
        return NULL;
    }
    old = __atomic_fetch_and((uint64_t *)p, ~mask, __ATOMIC_SEQ_CST);
    return PyBool_FromLong((old & mask) != 0);
}

static PyObject *
AtomicWords_reduce(AtomicWordsObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    PyErr_SetString(PyExc_TypeError,
                    "AtomicWords cannot be pickled: pass the shared memory name to the "
                    "worker and wrap its buffer there");
    return NULL;
}

static Py_ssize_t
AtomicWords_len(AtomicWordsObject *self)
{
    if (check_live(self) < 0) {
        return -1;
    }
    return self->nwords;
}

static PyObject *
AtomicWords_get_released(AtomicWordsObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->words == NULL);
}

static PyMethodDef AtomicWords_methods[] = {
    {"load", (PyCFunction)(void (*)(void))AtomicWords_load, METH_FASTCALL,
     "load($self, i, /)\n--\n\nAtomic (seq_cst) load of word i (READ_ONCE)."},
    {"store", (PyCFunction)(void (*)(void))AtomicWords_store, METH_FASTCALL,
     "store($self, i, v, /)\n--\n\nAtomic (seq_cst) store of v into word i (WRITE_ONCE)."},
    {"cas", (PyCFunction)(void (*)(void))AtomicWords_cas, METH_FASTCALL,
     "cas($self, i, expected, new, /)\n--\n\n"
     "Strong compare-and-swap: if word i == expected, set it to new and return True."},
    {"fetch_add", (PyCFunction)(void (*)(void))AtomicWords_fetch_add, METH_FASTCALL,
     "fetch_add($self, i, v, /)\n--\n\n"
     "Atomically add v to word i (wrapping modulo 2**64); return the old value."},
    {"fetch_or", (PyCFunction)(void (*)(void))AtomicWords_fetch_or, METH_FASTCALL,
     "fetch_or($self, i, mask, /)\n--\n\nAtomically OR mask into word i; return the old value."},
    {"fetch_and", (PyCFunction)(void (*)(void))AtomicWords_fetch_and, METH_FASTCALL,
     "fetch_and($self, i, mask, /)\n--\n\n"
     "Atomically AND mask into word i; return the old value."},
    {"xchg", (PyCFunction)(void (*)(void))AtomicWords_xchg, METH_FASTCALL,
     "xchg($self, i, v, /)\n--\n\nAtomically replace word i with v; return the old value."},
    {"test_set_bit", (PyCFunction)(void (*)(void))AtomicWords_test_set_bit, METH_FASTCALL,
     "test_set_bit($self, i, bit, /)\n--\n\n"
     "Atomically set bit (0..63) of word i; return its old value."},
    {"test_clear_bit", (PyCFunction)(void (*)(void))AtomicWords_test_clear_bit,
     METH_FASTCALL,
     "test_clear_bit($self, i, bit, /)\n--\n\n"
     "Atomically clear bit (0..63) of word i; return its old value."},
    {"release", (PyCFunction)AtomicWords_release, METH_NOARGS,
     "release($self, /)\n--\n\n"
     "Release the buffer export (idempotent). Later calls raise ValueError."},
    {"__reduce__", (PyCFunction)AtomicWords_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef AtomicWords_getset[] = {
    {"released", (getter)AtomicWords_get_released, NULL,
     "True once release() has been called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods AtomicWords_as_sequence = {
    .sq_length = (lenfunc)AtomicWords_len,
};

PyDoc_STRVAR(AtomicWords_doc,
"AtomicWords(buf, /)\n"
"--\n"
"\n"
"Sequentially consistent atomic operations on the int64 words of buf.\n"
"\n"
"buf is any writable C-contiguous buffer whose length is a multiple of 8 bytes and\n"
"whose address is 8-byte aligned. The buffer export is held until release().");

static PyTypeObject AtomicWords_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pagerace.core.machine._atomicwords.AtomicWords",
    .tp_basicsize = sizeof(AtomicWordsObject),
    .tp_itemsize = 0,
    .tp_dealloc = (destructor)AtomicWords_dealloc,
    .tp_as_sequence = &AtomicWords_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = AtomicWords_doc,
    .tp_methods = AtomicWords_methods,
    .tp_getset = AtomicWords_getset,
    .tp_new = AtomicWords_new,
};

/* ---- module --------------------------------------------------------------------- */

static int
atomicwords_exec(PyObject *module)
{
    if (PyType_Ready(&AtomicWords_Type) < 0) {
        return -1;
    }
    Py_INCREF(&AtomicWords_Type);
    if (PyModule_AddObject(module, "AtomicWords", (PyObject *)&AtomicWords_Type) < 0) {
        Py_DECREF(&AtomicWords_Type);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot atomicwords_slots[] = {
    {Py_mod_exec, atomicwords_exec},
    {0, NULL},
};

static struct PyModuleDef atomicwords_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pagerace.core.machine._atomicwords",
    .m_doc = "Cross-process sequentially consistent atomics on int64 words "
             "(the parallel engine's words backend).",
    .m_size = 0,
    .m_slots = atomicwords_slots,
};

PyMODINIT_FUNC
PyInit__atomicwords(void)
{
    return PyModuleDef_Init(&atomicwords_module);
}
