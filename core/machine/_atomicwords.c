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

/* The deterministic engine's blocked-actor test (harness/engine.py: Engine.run), one
 * call per step instead of a load per blocked actor: blocked is a dict actor id ->
 * request with .word and .mask; the result has bit id set for each actor whose word
 * still has a bit of its mask (load(word) & mask != 0). Ids 0..62. */
static PyObject *
AtomicWords_blocked_mask(AtomicWordsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static PyObject *word_name = NULL, *mask_name = NULL;
    PyObject *key, *req;
    Py_ssize_t pos = 0;
    long long out = 0;
    if (check_nargs("blocked_mask", nargs, 1) < 0) {
        return NULL;
    }
    if (!PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "blocked_mask() needs a dict");
        return NULL;
    }
    if (word_name == NULL && (word_name = PyUnicode_InternFromString("word")) == NULL) {
        return NULL;
    }
    if (mask_name == NULL && (mask_name = PyUnicode_InternFromString("mask")) == NULL) {
        return NULL;
    }
    while (PyDict_Next(args[0], &pos, &key, &req)) {
        long long aid;
        int64_t *p, m;
        PyObject *w, *mk;
        aid = PyLong_AsLongLong(key);
        if (aid == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (aid < 0 || aid > 62) {
            PyErr_Format(PyExc_ValueError, "actor id %lld out of range (0..62)", aid);
            return NULL;
        }
        if ((w = PyObject_GetAttr(req, word_name)) == NULL) {
            return NULL;
        }
        p = word_ptr(self, w);
        Py_DECREF(w);
        if (p == NULL || (mk = PyObject_GetAttr(req, mask_name)) == NULL) {
            return NULL;
        }
        if (get_value(mk, &m) < 0) {
            Py_DECREF(mk);
            return NULL;
        }
        Py_DECREF(mk);
        if (__atomic_load_n(p, __ATOMIC_SEQ_CST) & m) {
            out |= 1LL << aid;
        }
    }
    return PyLong_FromLongLong(out);
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

/* ---- check_all's clean path ------------------------------------------------------ */

/* core/oracles/invariants.py's _proven_clean over the words in one C pass: the quick
   tests of _proven_clean_arrays (the numpy pass), the same decisions, the expected
   refcounts wrapping around as int64 as numpy's do. ``params``: the tables' places and
   the constants, in the order of invariants._quick_params; ``extra``: None or a
   C-contiguous int64 buffer of one extra reference count per frame, or True for the
   references of the LRU-add batches (Kernel.lru_batch_refs) counted from the words.
   Returns the checks it proves as bits (invariants._PROVEN_BITS), or -1 for a batch
   Kernel.lru_batch_refs would not count as a plain list of frames (then the numpy pass
   decides). Plain loads, as numpy reads the words. */
enum {
    PC_FRAMES, PC_NFRAMES, PC_FW, PC_F_FLAGS, PC_F_REF, PC_F_MAP, PC_F_PIN, PC_F_DATA,
    PC_PTL, PC_NPTL, PC_MM, PC_NMM, PC_MMW, PC_AV, PC_NAV, PC_AVW,
    PC_PTE, PC_NPTE, PC_SHADOW, PC_SWAP, PC_NSLOTS, PC_SWAPW, PC_S_USED,
    PC_ZONES, PC_NZONES, PC_ZONEW, PC_Z_FREE, PC_SYS, PC_DEV,
    PC_PG_LOCKED, PC_PG_SWAPCACHE, PC_PG_ALLOCATED, PC_Z_DEVICE, PC_DYNAMIC,
    PC_TYPE_MASK, PC_PFN_SHIFT, PC_PTE_SWAP, PC_PTE_MIGRATION, PC_BIAS, PC_MAPPED,
    PC_LRU, PC_NLRU, PC_LRUW,
    PC_NEED_MASK, /* 8 entries, one per entry type, then PC_NEED_VAL's 8 */
    PC_NEED_VAL = PC_NEED_MASK + 8,
    PC_NPARAMS = PC_NEED_VAL + 8,
};
#define PC_LOCKS 1
#define PC_DIRTY 2
#define PC_SWAP_COUNTS 4
#define PC_DEVICE_PAGES 8
#define PC_ENTRIES 16
#define PC_COUNTS 32
#define PC_CONTENTS 64
#define PC_STACK_FRAMES 1024

static int
pc_region(AtomicWordsObject *self, long long off, long long rows, long long width)
{
    if (off < 0 || rows < 0 || width < 0 || (rows && width && off + rows * width > (long long)self->nwords)) {
        PyErr_SetString(PyExc_ValueError, "proven_clean: a table outside the words");
        return -1;
    }
    return 0;
}

/* numpy's >> on int64: arithmetic. */
static inline int64_t
pc_sar(int64_t v, long long s)
{
    return v < 0 ? ~(~v >> s) : v >> s;
}

static PyObject *
AtomicWords_proven_clean(AtomicWordsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long p[PC_NPARAMS];
    long long stack_maps[PC_STACK_FRAMES], stack_lru[PC_STACK_FRAMES];
    long long *maps = stack_maps, *lru = NULL;
    long long per_type[8] = {0};
    long long nf, fw, i, r, n_sc = 0, bits = 0, n_exp = 0, n_alloc = 0, n_sh = 0, n_written = 0;
    const int64_t *w, *fr, *pte, *sh, *x = NULL;
    Py_buffer xb;
    PyObject *params, *item;
    int64_t f, e, s, pfn;
    uint64_t want;
    int locked = 0, bad = 0;

    if (check_nargs("proven_clean", nargs, 2) < 0 || check_live(self) < 0) {
        return NULL;
    }
    params = args[0];
    if (!PyTuple_Check(params) || PyTuple_GET_SIZE(params) != PC_NPARAMS) {
        PyErr_Format(PyExc_TypeError, "proven_clean() needs a tuple of %d ints", PC_NPARAMS);
        return NULL;
    }
    for (i = 0; i < PC_NPARAMS; i++) {
        item = PyTuple_GET_ITEM(params, i);
        p[i] = PyLong_AsLongLong(item);
        if (p[i] == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    nf = p[PC_NFRAMES];
    fw = p[PC_FW];
    if (p[PC_TYPE_MASK] != 7 || p[PC_PFN_SHIFT] < 0 || p[PC_PFN_SHIFT] > 62 || fw <= 0
        || pc_region(self, p[PC_FRAMES], nf, fw) < 0 || pc_region(self, p[PC_PTL], p[PC_NPTL], 1) < 0
        || pc_region(self, p[PC_MM], p[PC_NMM], p[PC_MMW]) < 0
        || pc_region(self, p[PC_AV], p[PC_NAV], p[PC_AVW]) < 0
        || pc_region(self, p[PC_PTE], p[PC_NPTE], 1) < 0
        || pc_region(self, p[PC_SHADOW], p[PC_NPTE], 1) < 0
        || pc_region(self, p[PC_SWAP], p[PC_NSLOTS], p[PC_SWAPW]) < 0
        || pc_region(self, p[PC_ZONES], p[PC_NZONES], p[PC_ZONEW]) < 0
        || pc_region(self, p[PC_LRU], p[PC_NLRU], p[PC_LRUW]) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "proven_clean: bad constants");
        }
        return NULL;
    }
    if (args[1] != Py_None && args[1] != Py_True) {
        if (PyObject_GetBuffer(args[1], &xb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
            return NULL;
        }
        if (xb.itemsize != 8 || xb.len != nf * 8 || xb.format == NULL
            || strchr("lq", xb.format[xb.format[0] == '<' || xb.format[0] == '=' || xb.format[0] == '@']) == NULL) {
            PyBuffer_Release(&xb);
            PyErr_SetString(PyExc_TypeError, "proven_clean: extra must be int64, one per frame");
            return NULL;
        }
        x = (const int64_t *)xb.buf;
    }
    if (nf > PC_STACK_FRAMES) {
        maps = PyMem_Calloc((size_t)nf, sizeof(long long));
        if (maps == NULL) {
            if (x != NULL) {
                PyBuffer_Release(&xb);
            }
            return PyErr_NoMemory();
        }
    } else {
        memset(maps, 0, sizeof(long long) * (size_t)(nf > 0 ? nf : 1));
    }
    w = self->words;
    if (args[1] == Py_True) {
        /* Kernel.lru_batch_refs: a reference per frame named in each batch's slots
           [1, 1 + count); anything but 0 <= count < width and frames in range: -1 */
        lru = nf > PC_STACK_FRAMES ? PyMem_Calloc((size_t)nf, sizeof(long long)) : stack_lru;
        if (lru == NULL) {
            bits = -1;
            PyErr_NoMemory();
            goto done;
        }
        if (lru == stack_lru) {
            memset(lru, 0, sizeof(long long) * (size_t)(nf > 0 ? nf : 1));
        }
        for (r = 0; r < p[PC_NLRU]; r++) {
            const int64_t *row = w + p[PC_LRU] + r * p[PC_LRUW];
            if (row[0] < 0 || row[0] >= p[PC_LRUW]) {
                bits = -1;
                goto done;
            }
            for (i = 1; i <= row[0]; i++) {
                if (row[i] < 0 || row[i] >= nf) {
                    bits = -1;
                    goto done;
                }
                lru[row[i]]++;
            }
        }
        x = (const int64_t *)lru;
    }
    fr = w + p[PC_FRAMES];
    pte = w + p[PC_PTE];
    sh = w + p[PC_SHADOW];
#define PC_FIELD(pfn, fld) fr[(pfn) * fw + p[fld]]
    /* check_locks: no page lock, page-table lock, mmap_lock or anon_vma rwsem held */
    for (i = 0; i < nf; i++) {
        f = PC_FIELD(i, PC_F_FLAGS);
        locked |= (f & p[PC_PG_LOCKED]) != 0;
        n_sc += (f & p[PC_PG_SWAPCACHE]) != 0;
    }
    for (i = 0; i < p[PC_NPTL]; i++) {
        locked |= w[p[PC_PTL] + i] != 0;
    }
    for (i = 0; i < p[PC_NMM] && p[PC_MMW] > 0; i++) {
        locked |= w[p[PC_MM] + i * p[PC_MMW]] != 0;
    }
    for (i = 0; i < p[PC_NAV] && p[PC_AVW] > 0; i++) {
        locked |= w[p[PC_AV] + i * p[PC_AVW]] != 0;
    }
    if (!locked) {
        bits |= PC_LOCKS;
    }
    if (!n_sc) {
        bits |= PC_DIRTY;  /* check_dirty judges swap-cache pages only */
    }
    for (i = 0; i < p[PC_NPTE]; i++) {
        per_type[pte[i] & 7]++;
    }
    if (!p[PC_NSLOTS]) {
        bits |= PC_SWAP_COUNTS;
    } else if (!per_type[p[PC_PTE_SWAP] & 7] && !n_sc) {
        for (i = 0; i < p[PC_NSLOTS]; i++) {
            if (w[p[PC_SWAP] + i * p[PC_SWAPW] + p[PC_S_USED]]) {
                break;
            }
        }
        if (i == p[PC_NSLOTS]) {
            bits |= PC_SWAP_COUNTS;
        }
    }
    /* check_device_pages: a free device frame has no flags, references, maps or pins */
    for (i = 0; i < nf; i++) {
        f = PC_FIELD(i, PC_F_FLAGS);
        if ((f & (p[PC_Z_DEVICE] | p[PC_PG_ALLOCATED])) == p[PC_Z_DEVICE]
            && ((f & p[PC_DYNAMIC]) | PC_FIELD(i, PC_F_REF) | PC_FIELD(i, PC_F_MAP)
                | PC_FIELD(i, PC_F_PIN))) {
            break;
        }
    }
    if (i == nf) {
        bits |= PC_DEVICE_PAGES;
    }
    if (per_type[p[PC_PTE_MIGRATION] & 7]) {
        goto done;  /* check_entries fails; the later checks run in full after it */
    }
    /* check_entries: every mapped entry maps a frame of the right kind */
    for (i = 0; i < p[PC_NPTE]; i++) {
        e = pte[i];
        r = e & 7;
        if (!(p[PC_MAPPED] >> r & 1)) {
            continue;
        }
        pfn = pc_sar(e, p[PC_PFN_SHIFT]);
        if (pfn < 0 || pfn >= nf
            || (PC_FIELD(pfn, PC_F_FLAGS) & p[PC_NEED_MASK + r]) != p[PC_NEED_VAL + r]) {
            goto done;
        }
        maps[pfn]++;
    }
    bits |= PC_ENTRIES;
    /* check_counts: mapcounts, refcounts (0 free, the expected count allocated, which is
       not 0), each zone's free count */
    for (i = 0; i < nf; i++) {
        f = PC_FIELD(i, PC_F_FLAGS);
        if (maps[i] != PC_FIELD(i, PC_F_MAP)) {
            break;
        }
        want = 0;
        if (f & p[PC_PG_ALLOCATED]) {
            want = (uint64_t)PC_FIELD(i, PC_F_MAP)
                   + (uint64_t)PC_FIELD(i, PC_F_PIN) * (uint64_t)p[PC_BIAS];
            if (n_sc && (f & p[PC_PG_SWAPCACHE])) {
                want += 1;
            }
            if (x != NULL) {
                want += (uint64_t)x[i];
            }
            n_alloc++;
            n_exp += want != 0;
        }
        if ((int64_t)want != PC_FIELD(i, PC_F_REF)) {
            break;
        }
    }
    if (i == nf && n_exp == n_alloc) {
        for (r = 0; r < p[PC_NZONES]; r++) {
            long long lo = r == 0 ? 0 : p[PC_SYS] + (r - 1) * p[PC_DEV];
            long long hi = r == 0 ? p[PC_SYS] : lo + p[PC_DEV];
            long long cnt = 0, j;
            for (j = lo < nf ? lo : nf; j < (hi < nf ? hi : nf); j++) {
                cnt += (PC_FIELD(j, PC_F_FLAGS) & p[PC_PG_ALLOCATED]) != 0;
            }
            if (hi - lo - cnt != w[p[PC_ZONES] + r * p[PC_ZONEW] + p[PC_Z_FREE]]) {
                break;
            }
        }
        if (r == p[PC_NZONES]) {
            bits |= PC_COUNTS;
        }
    }
    /* check_contents: every written page is mapped, its frame holding the last token */
    for (i = 0; i < p[PC_NPTE]; i++) {
        s = sh[i];
        n_sh += s != 0;
        e = pte[i];
        if (p[PC_MAPPED] >> (e & 7) & 1) {
            n_written += s != 0;
            if (s && PC_FIELD(pc_sar(e, p[PC_PFN_SHIFT]), PC_F_DATA) != s) {
                bad = 1;
            }
        }
    }
    if (n_sh == n_written && !bad) {
        bits |= PC_CONTENTS;
    }
#undef PC_FIELD
done:
    if (maps != stack_maps) {
        PyMem_Free(maps);
    }
    if (lru != NULL && lru != stack_lru) {
        PyMem_Free(lru);
    }
    if (x != NULL && lru == NULL) {
        PyBuffer_Release(&xb);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    return PyLong_FromLongLong(bits);
}

static PyMethodDef AtomicWords_methods[] = {
    {"load", (PyCFunction)(void (*)(void))AtomicWords_load, METH_FASTCALL,
     "load($self, i, /)\n--\n\nAtomic (seq_cst) load of word i (READ_ONCE)."},
    {"proven_clean", (PyCFunction)(void (*)(void))AtomicWords_proven_clean, METH_FASTCALL,
     "proven_clean($self, params, extra, /)\n--\n\n"
     "check_all's quick tests over the words (core/oracles/invariants.py): the checks "
     "proven clean, as bits."},
    {"blocked_mask", (PyCFunction)(void (*)(void))AtomicWords_blocked_mask, METH_FASTCALL,
     "blocked_mask($self, blocked, /)\n--\n\n"
     "Bit id set for each id -> request of blocked whose load(word) & mask is not 0."},
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

/* ---- KernelFields: the model kernel's hottest accessors, one C call each ---------- */
/*
 * core/machine/kernel.py's one-line accessors (flags, test_flag, set_flag, pte_read...)
 * are each a Python frame around one words operation: a third of the Python calls a
 * preemption point makes. KernelFields does the index arithmetic and the atomic
 * operation in one METH_FASTCALL method over an AtomicWords object's buffer; the
 * Kernel binds its methods in place of its own when its words backend is an
 * AtomicWords (kernel.py: Kernel.use_words), and keeps the Python ones otherwise (the
 * recording backend of the dependency relation, PlainWords without this extension).
 * Same index checks as AtomicWords (IndexError past either end), same results.
 *
 * KernelFields(words, constants): constants is a dict of the layout's bases and field
 * offsets by name (kf_names below; kernel.py: _kernel_fields builds it).
 */

typedef struct {
    PyObject_HEAD
    AtomicWordsObject *aw;  /* strong reference: its buffer export outlives us */
    long long frames, frame_words, pte, ppm, ptl, tpm, ppt;
    long long f_ref, f_map, f_pin, f_data;
    long long z_device, z_device_private, pg_locked;
    long long tlb, tlb_slots, actors;
    long long z_free, z_cursor, static_mask, pg_allocated, f_owner, f_priv, f_gen;
    long long vma, vma_rows, max_vmas, vma_words, v_start, v_end, v_flags, v_pgoff, v_avc,
        v_seq, vm_live;
    long long actor_base, actor_words, a_progress, g_progress;
    long long pte_pfn_shift, pte_type_mask, pte_present, pte_device_private, pte_migration;
    /* Kernel.use_words's bind(): the kernel (a weak reference: the kernel's __dict__
     * holds this object, so a strong one would make a cycle this type cannot collect),
     * the exhausted generator a lock taken at once returns, and the Python methods the
     * slow paths hand over to (Kernel's class functions, called with the kernel). */
    PyObject *kref, *done, *py_spin_lock, *py_spin_unlock_bad, *py_get_page,
        *py_get_page_bug, *py_put_page, *py_put_page_tail, *py_trylock_page, *py_unlock_page;
    long long pg_waiters;
} KernelFieldsObject;

static PyTypeObject KernelFields_Type;

static int64_t *
kf_ptr(KernelFieldsObject *self, long long i)
{
    AtomicWordsObject *aw = self->aw;
    if (aw->words == NULL) {
        PyErr_SetString(PyExc_ValueError, "AtomicWords is released");
        return NULL;
    }
    if (i < 0 || i >= (long long)aw->nwords) {
        PyErr_Format(PyExc_IndexError, "AtomicWords index %lld out of range (length %zd)",
                     i, aw->nwords);
        return NULL;
    }
    return aw->words + i;
}

/* args[0] as a long long; -1 with an exception set on error. */
static int
kf_arg(PyObject *arg, long long *out)
{
    long long v = PyLong_AsLongLong(arg);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = v;
    return 0;
}

/* The word of a frame field: frames + pfn * frame_words + field. */
static int64_t *
kf_frame(KernelFieldsObject *self, PyObject *pfn_obj, long long field)
{
    long long pfn, i;
    if (kf_arg(pfn_obj, &pfn) < 0) {
        return NULL;
    }
    if (__builtin_mul_overflow(pfn, self->frame_words, &i)
        || __builtin_add_overflow(i, self->frames + field, &i)) {
        PyErr_Format(PyExc_IndexError, "frame %lld out of range", pfn);
        return NULL;
    }
    return kf_ptr(self, i);
}

/* The word of a page-table entry: pte + mm * pages_per_mm + vpn. */
static int64_t *
kf_pte(KernelFieldsObject *self, PyObject *mm_obj, PyObject *vpn_obj)
{
    long long mm, vpn, i;
    if (kf_arg(mm_obj, &mm) < 0 || kf_arg(vpn_obj, &vpn) < 0) {
        return NULL;
    }
    if (__builtin_mul_overflow(mm, self->ppm, &i) || __builtin_add_overflow(i, vpn, &i)
        || __builtin_add_overflow(i, self->pte, &i)) {
        PyErr_Format(PyExc_IndexError, "entry (%lld, %lld) out of range", mm, vpn);
        return NULL;
    }
    return kf_ptr(self, i);
}

#define KF_LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)

static PyObject *
kf_flags(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    if (check_nargs("flags", nargs, 1) < 0 || (p = kf_frame(self, args[0], 0)) == NULL) {
        return NULL;
    }
    return PyLong_FromLongLong(KF_LOAD(p));
}

static PyObject *
kf_test_flag(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    long long m;
    if (check_nargs("test_flag", nargs, 2) < 0 || (p = kf_frame(self, args[0], 0)) == NULL
        || kf_arg(args[1], &m) < 0) {
        return NULL;
    }
    return PyBool_FromLong((KF_LOAD(p) & m) != 0);
}

static PyObject *
kf_set_flag(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    long long m;
    if (check_nargs("set_flag", nargs, 2) < 0 || (p = kf_frame(self, args[0], 0)) == NULL
        || kf_arg(args[1], &m) < 0) {
        return NULL;
    }
    __atomic_fetch_or(p, (int64_t)m, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyObject *
kf_clear_flag(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    long long m;
    if (check_nargs("clear_flag", nargs, 2) < 0 || (p = kf_frame(self, args[0], 0)) == NULL
        || kf_arg(args[1], &m) < 0) {
        return NULL;
    }
    __atomic_fetch_and(p, ~(int64_t)m, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyObject *
kf_test_clear_flag(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    long long m;
    if (check_nargs("test_clear_flag", nargs, 2) < 0
        || (p = kf_frame(self, args[0], 0)) == NULL || kf_arg(args[1], &m) < 0) {
        return NULL;
    }
    return PyBool_FromLong((__atomic_fetch_and(p, ~(int64_t)m, __ATOMIC_SEQ_CST) & m) != 0);
}

/* flags & a mask fixed at construction */
#define KF_FLAG_TEST(name, member)                                                      \
    static PyObject *                                                                   \
    kf_##name(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)        \
    {                                                                                   \
        int64_t *p;                                                                     \
        if (check_nargs(#name, nargs, 1) < 0                                            \
            || (p = kf_frame(self, args[0], 0)) == NULL) {                              \
            return NULL;                                                                \
        }                                                                               \
        return PyBool_FromLong((KF_LOAD(p) & self->member) != 0);                       \
    }
KF_FLAG_TEST(is_zone_device, z_device)
KF_FLAG_TEST(is_device_private, z_device_private)
KF_FLAG_TEST(page_locked, pg_locked)

/* load of a frame field */
#define KF_FIELD_LOAD(name, member)                                                     \
    static PyObject *                                                                   \
    kf_##name(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)        \
    {                                                                                   \
        int64_t *p;                                                                     \
        if (check_nargs(#name, nargs, 1) < 0                                            \
            || (p = kf_frame(self, args[0], self->member)) == NULL) {                   \
            return NULL;                                                                \
        }                                                                               \
        return PyLong_FromLongLong(KF_LOAD(p));                                         \
    }
KF_FIELD_LOAD(ref_count, f_ref)
KF_FIELD_LOAD(mapcount, f_map)
KF_FIELD_LOAD(pincount, f_pin)
KF_FIELD_LOAD(data, f_data)

static PyObject *
kf_set_data(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    long long v;
    if (check_nargs("set_data", nargs, 2) < 0
        || (p = kf_frame(self, args[0], self->f_data)) == NULL || kf_arg(args[1], &v) < 0) {
        return NULL;
    }
    __atomic_store_n(p, (int64_t)v, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyObject *
kf_mapcount_add(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    long long n;
    uint64_t old;
    if (check_nargs("mapcount_add", nargs, 2) < 0
        || (p = kf_frame(self, args[0], self->f_map)) == NULL || kf_arg(args[1], &n) < 0) {
        return NULL;
    }
    old = __atomic_fetch_add((uint64_t *)p, (uint64_t)n, __ATOMIC_SEQ_CST);
    return PyLong_FromLongLong((int64_t)(old + (uint64_t)n));
}

static PyObject *
kf_pte_read(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    if (check_nargs("pte_read", nargs, 2) < 0 || (p = kf_pte(self, args[0], args[1])) == NULL) {
        return NULL;
    }
    return PyLong_FromLongLong(KF_LOAD(p));
}

static PyObject *
kf_set_pte(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    long long v;
    if (check_nargs("set_pte", nargs, 3) < 0 || (p = kf_pte(self, args[0], args[1])) == NULL
        || kf_arg(args[2], &v) < 0) {
        return NULL;
    }
    __atomic_store_n(p, (int64_t)v, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyObject *
kf_ptep_get_and_clear(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p;
    if (check_nargs("ptep_get_and_clear", nargs, 2) < 0
        || (p = kf_pte(self, args[0], args[1])) == NULL) {
        return NULL;
    }
    return PyLong_FromLongLong(__atomic_exchange_n(p, (int64_t)0, __ATOMIC_SEQ_CST));
}

static PyObject *
kf_ptl_word(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long mm, vpn, q;
    if (check_nargs("ptl_word", nargs, 2) < 0 || kf_arg(args[0], &mm) < 0
        || kf_arg(args[1], &vpn) < 0) {
        return NULL;
    }
    /* Python's floor division: vpn // ptes_per_table (ptes_per_table > 0) */
    q = vpn / self->ppt;
    if ((vpn % self->ppt != 0) && (vpn < 0)) {
        q -= 1;
    }
    return PyLong_FromLongLong(self->ptl + mm * self->tpm + q);
}

/* The extra accessors: flush_tlb_range and alloc_frame. */
static PyObject *
kf_flush_tlb_range(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long mm, lo, hi, vpn, key, slot, aid;
    int64_t *p;
    if (check_nargs("flush_tlb_range", nargs, 3) < 0 || kf_arg(args[0], &mm) < 0
        || kf_arg(args[1], &lo) < 0 || kf_arg(args[2], &hi) < 0) {
        return NULL;
    }
    for (vpn = lo; vpn < hi; vpn++) {
        key = mm * self->ppm + vpn;
        slot = key % self->tlb_slots;
        if (slot < 0) {
            slot += self->tlb_slots;  /* Python's modulo */
        }
        for (aid = 0; aid < self->actors; aid++) {
            if ((p = kf_ptr(self, self->tlb + (aid * self->tlb_slots + slot) * 2)) == NULL) {
                return NULL;
            }
            if (KF_LOAD(p) == key + 1) {
                __atomic_store_n(p, (int64_t)0, __ATOMIC_SEQ_CST);
            }
        }
    }
    Py_RETURN_NONE;
}

/* alloc_page's search and claim (kernel.py: Kernel.alloc_page, the same operations in
 * the same order): zone_word is the zone's row; returns the pfn or -1. */
static PyObject *
kf_alloc_frame(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long zw, lo, hi, n, start, k, pfn;
    int64_t *free_p, *cur_p, *fl, cur, *f;
    if (check_nargs("alloc_frame", nargs, 3) < 0 || kf_arg(args[0], &zw) < 0
        || kf_arg(args[1], &lo) < 0 || kf_arg(args[2], &hi) < 0) {
        return NULL;
    }
    if ((free_p = kf_ptr(self, zw + self->z_free)) == NULL
        || (cur_p = kf_ptr(self, zw + self->z_cursor)) == NULL) {
        return NULL;
    }
    if (KF_LOAD(free_p) <= 0) {
        return PyLong_FromLong(-1);
    }
    n = hi - lo;
    if (n <= 0) {
        PyErr_SetString(PyExc_ZeroDivisionError, "integer modulo by zero");
        return NULL;
    }
    start = (long long)__atomic_fetch_add((uint64_t *)cur_p, (uint64_t)1, __ATOMIC_SEQ_CST) % n;
    if (start < 0) {
        start += n;
    }
    for (k = 0; k < n; k++) {
        pfn = lo + (start + k) % n;
        if ((fl = kf_ptr(self, self->frames + pfn * self->frame_words)) == NULL
            || kf_ptr(self, self->frames + pfn * self->frame_words + self->frame_words - 1)
                   == NULL) {
            return NULL;
        }
        cur = KF_LOAD(fl);
        if (cur & self->pg_allocated) {
            continue;
        }
        if (__atomic_compare_exchange_n(fl, &cur, (cur & self->static_mask) | self->pg_allocated,
                                        0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            __atomic_fetch_add((uint64_t *)free_p, (uint64_t)-1, __ATOMIC_SEQ_CST);
            f = fl;
            __atomic_store_n(f + self->f_map, (int64_t)0, __ATOMIC_SEQ_CST);
            __atomic_store_n(f + self->f_pin, (int64_t)0, __ATOMIC_SEQ_CST);
            __atomic_store_n(f + self->f_owner, (int64_t)0, __ATOMIC_SEQ_CST);
            __atomic_store_n(f + self->f_data, (int64_t)0, __ATOMIC_SEQ_CST);
            __atomic_store_n(f + self->f_priv, (int64_t)0, __ATOMIC_SEQ_CST);
            __atomic_fetch_add((uint64_t *)(f + self->f_gen), (uint64_t)1, __ATOMIC_SEQ_CST);
            /* the refcount goes from 0 to 1 last (set_page_count in prep_new_page) */
            __atomic_store_n(f + self->f_ref, (int64_t)1, __ATOMIC_SEQ_CST);
            return PyLong_FromLongLong(pfn);
        }
    }
    return PyLong_FromLong(-1);
}

/* The actor's id (Actor.id) as a long long; -1 with an exception set on error. */
static int
kf_actor_id(PyObject *actor, long long *out)
{
    static PyObject *id_name = NULL;
    PyObject *v;
    int r;
    if (id_name == NULL && (id_name = PyUnicode_InternFromString("id")) == NULL) {
        return -1;
    }
    if ((v = PyObject_GetAttr(actor, id_name)) == NULL) {
        return -1;
    }
    r = kf_arg(v, out);
    Py_DECREF(v);
    return r;
}

/* The TLB slot word of (actor, mm, vpn): tlb + (aid * slots + key % slots) * 2. */
static int64_t *
kf_tlb_slot(KernelFieldsObject *self, PyObject *const *args, long long *key)
{
    long long aid, mm, vpn, slot;
    if (kf_actor_id(args[0], &aid) < 0 || kf_arg(args[1], &mm) < 0
        || kf_arg(args[2], &vpn) < 0) {
        return NULL;
    }
    *key = mm * self->ppm + vpn;
    slot = *key % self->tlb_slots;
    if (slot < 0) {
        slot += self->tlb_slots;
    }
    return kf_ptr(self, self->tlb + (aid * self->tlb_slots + slot) * 2);
}

static PyObject *
kf_tlb_lookup(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p, *q;
    long long key;
    if (check_nargs("tlb_lookup", nargs, 3) < 0 || (p = kf_tlb_slot(self, args, &key)) == NULL) {
        return NULL;
    }
    if (KF_LOAD(p) == key + 1) {
        if ((q = kf_ptr(self, (p - self->aw->words) + 1)) == NULL) {
            return NULL;
        }
        return PyLong_FromLongLong(KF_LOAD(q));
    }
    return PyLong_FromLong(-1);
}

static PyObject *
kf_tlb_fill(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *p, *q;
    long long key, pfn, writable;
    if (check_nargs("tlb_fill", nargs, 5) < 0 || (p = kf_tlb_slot(self, args, &key)) == NULL
        || kf_arg(args[3], &pfn) < 0 || kf_arg(args[4], &writable) < 0
        || (q = kf_ptr(self, (p - self->aw->words) + 1)) == NULL) {
        return NULL;
    }
    __atomic_store_n(p, (int64_t)(key + 1), __ATOMIC_SEQ_CST);
    __atomic_store_n(q, (int64_t)((pfn << 1) | writable), __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

/* free_page's stores once its checks passed (kernel.py: Kernel.free_page, the same
 * operations in the same order): the content and private words, page->mapping, the
 * generation, then the flags word (f & STATIC_MASK: the frame is free from here), then
 * the zone's free count. */
static PyObject *
kf_free_frame(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *fl, *map_p, *free_p;
    long long f, mapping_word, zone_free_word;
    if (check_nargs("free_frame", nargs, 4) < 0 || (fl = kf_frame(self, args[0], 0)) == NULL
        || kf_frame(self, args[0], self->frame_words - 1) == NULL || kf_arg(args[1], &f) < 0
        || kf_arg(args[2], &mapping_word) < 0 || kf_arg(args[3], &zone_free_word) < 0
        || (map_p = kf_ptr(self, mapping_word)) == NULL
        || (free_p = kf_ptr(self, zone_free_word)) == NULL) {
        return NULL;
    }
    __atomic_store_n(fl + self->f_data, (int64_t)0, __ATOMIC_SEQ_CST);
    __atomic_store_n(fl + self->f_priv, (int64_t)0, __ATOMIC_SEQ_CST);
    __atomic_store_n(map_p, (int64_t)0, __ATOMIC_SEQ_CST);
    __atomic_fetch_add((uint64_t *)(fl + self->f_gen), (uint64_t)1, __ATOMIC_SEQ_CST);
    __atomic_store_n(fl, (int64_t)(f & self->static_mask), __ATOMIC_SEQ_CST);
    __atomic_fetch_add((uint64_t *)free_p, (uint64_t)1, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

/* anon_vma_interval_tree_foreach over the VMA rows (rmap.py: anon_vma_interval_tree,
 * the same rows in the same order): (mm, address, vm_flags) of every live row linked to
 * anon_vma av whose pgoff range covers pgoff, sorted by (vm_pgoff, insertion sequence,
 * mm, address, flags). */
#define KF_AVC_MAX 256
static PyObject *
kf_avc_walk(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long av, pgoff, bit, r, n = 0, i, j;
    long long found[KF_AVC_MAX][5];  /* pg, seq, mm, vpn, flags */
    int64_t *row;
    PyObject *out;
    if (check_nargs("avc_walk", nargs, 2) < 0 || kf_arg(args[0], &av) < 0
        || kf_arg(args[1], &pgoff) < 0) {
        return NULL;
    }
    if (av < 0 || av > 62) {
        PyErr_Format(PyExc_ValueError, "anon_vma %lld out of range", av);
        return NULL;
    }
    bit = 1LL << av;
    if (self->vma_rows > 0
        && (row = kf_ptr(self, self->vma + self->vma_rows * self->vma_words - 1)) == NULL) {
        return NULL;
    }
    for (r = 0; r < self->vma_rows; r++) {
        long long pg, fl;
        if ((row = kf_ptr(self, self->vma + r * self->vma_words)) == NULL) {
            return NULL;
        }
        pg = KF_LOAD(row + self->v_pgoff);
        fl = KF_LOAD(row + self->v_flags);
        if ((fl & self->vm_live) && (KF_LOAD(row + self->v_avc) & bit) && pg <= pgoff
            && pgoff < pg + KF_LOAD(row + self->v_end) - KF_LOAD(row + self->v_start)) {
            long long cand[5];
            if (n == KF_AVC_MAX) {
                PyErr_SetString(PyExc_OverflowError, "avc_walk: too many VMAs");
                return NULL;
            }
            cand[0] = pg;
            cand[1] = KF_LOAD(row + self->v_seq);
            cand[2] = r / self->max_vmas;
            cand[3] = KF_LOAD(row + self->v_start) + pgoff - pg;
            cand[4] = fl;
            /* insertion sort by the tuple (stable, as Python's sort of the tuples) */
            for (i = n; i > 0; i--) {
                int less = 0;
                for (j = 0; j < 5; j++) {
                    if (cand[j] != found[i - 1][j]) {
                        less = cand[j] < found[i - 1][j];
                        break;
                    }
                }
                if (!less) {
                    break;
                }
                memcpy(found[i], found[i - 1], sizeof found[0]);
            }
            memcpy(found[i], cand, sizeof cand);
            n++;
        }
    }
    if ((out = PyList_New(n)) == NULL) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *t = Py_BuildValue("(LLL)", found[i][2], found[i][3], found[i][4]);
        if (t == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, t);
    }
    return out;
}

/* Kernel.progress's two word operations: the actor's progress count, then the global
 * one (fetch_add 1 each). */
static PyObject *
kf_progress(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long aid;
    int64_t *mine, *all;
    if (check_nargs("progress", nargs, 1) < 0 || kf_arg(args[0], &aid) < 0
        || (mine = kf_ptr(self, self->actor_base + aid * self->actor_words + self->a_progress))
               == NULL
        || (all = kf_ptr(self, self->g_progress)) == NULL) {
        return NULL;
    }
    __atomic_fetch_add((uint64_t *)mine, (uint64_t)1, __ATOMIC_SEQ_CST);
    __atomic_fetch_add((uint64_t *)all, (uint64_t)1, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

/* rmap_walk_ksm's rmap_items (rmap.py: rmap_walk_ksm, the same entries in the same
 * order): (mm, vpn) of every page-table entry, in (mm, vpn) order, whose pfn field is
 * pfn and whose type is present, device-private or migration. */
static PyObject *
kf_ksm_items(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long pfn, mms, i, n;
    int64_t *base;
    PyObject *out;
    if (check_nargs("ksm_items", nargs, 1) < 0 || kf_arg(args[0], &pfn) < 0) {
        return NULL;
    }
    mms = self->vma_rows / self->max_vmas;
    n = mms * self->ppm;
    if ((out = PyList_New(0)) == NULL) {
        return NULL;
    }
    if (n <= 0) {
        return out;
    }
    if (kf_ptr(self, self->pte + n - 1) == NULL || (base = kf_ptr(self, self->pte)) == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        int64_t e = KF_LOAD(base + i);
        long long kind;
        PyObject *t;
        if ((e >> self->pte_pfn_shift) != pfn) {
            continue;
        }
        kind = e & self->pte_type_mask;
        if (kind != self->pte_present && kind != self->pte_device_private
            && kind != self->pte_migration) {
            continue;
        }
        if ((t = Py_BuildValue("(LL)", i / self->ppm, i % self->ppm)) == NULL
            || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(t);
    }
    return out;
}

/* core/oracles/world.py's device_free_check: the first page-table entry, in row-major
   (mm, vpn) order, whose pfn field is pfn and whose type is in the mask ``types`` (bit
   per entry type), as (mm, vpn, entry) from one load of the entry, or None. */
static PyObject *
kf_pte_naming(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long pfn, types, n, i;
    int64_t *p, v;
    if (check_nargs("pte_naming", nargs, 2) < 0 || kf_arg(args[0], &pfn) < 0
        || kf_arg(args[1], &types) < 0) {
        return NULL;
    }
    n = self->vma_rows / self->max_vmas * self->ppm;
    if (n <= 0) {
        Py_RETURN_NONE;
    }
    if ((p = kf_ptr(self, self->pte)) == NULL || kf_ptr(self, self->pte + n - 1) == NULL) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        v = KF_LOAD(p + i);
        if (pc_sar(v, self->pte_pfn_shift) == pfn && (types >> (v & self->pte_type_mask) & 1)) {
            return Py_BuildValue("(LLL)", i / self->ppm, i % self->ppm, (long long)v);
        }
    }
    Py_RETURN_NONE;
}

/* State.find_vma (state.py, the same rows in the same order): the first live VMA row
 * of mm whose [start, end) covers vpn, or -1. mm counts from the end when negative, as
 * a numpy index does. */
static PyObject *
kf_find_vma(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long mm, vpn, mms, r;
    int64_t *row;
    if (check_nargs("find_vma", nargs, 2) < 0 || kf_arg(args[0], &mm) < 0
        || kf_arg(args[1], &vpn) < 0) {
        return NULL;
    }
    mms = self->vma_rows / self->max_vmas;
    if (mm < 0) {
        mm += mms;
    }
    if (mm < 0 || mm >= mms) {
        PyErr_Format(PyExc_IndexError, "mm %lld out of range (%lld mms)", mm, mms);
        return NULL;
    }
    for (r = 0; r < self->max_vmas; r++) {
        if ((row = kf_ptr(self, self->vma + (mm * self->max_vmas + r) * self->vma_words))
                == NULL
            || kf_ptr(self, self->vma + (mm * self->max_vmas + r + 1) * self->vma_words - 1)
                   == NULL) {
            return NULL;
        }
        if ((KF_LOAD(row + self->v_flags) & self->vm_live) && KF_LOAD(row + self->v_start) <= vpn
            && vpn < KF_LOAD(row + self->v_end)) {
            return PyLong_FromLongLong(r);
        }
    }
    return PyLong_FromLong(-1);
}

/* ---- the lock and reference primitives bound on a Kernel (kernel.py: use_words) ---- */

/* Indexes into a call site's statistics row (kernel.py: S_ACQUIRED ... S_HOLD_MAX). */
#define KF_S_ACQUIRED 0
#define KF_S_HOLDS 8

static PyObject *kf_str_held, *kf_str_site, *kf_str_id, *kf_str_stats, *kf_str_held_since,
    *kf_str_clock, *kf_str_acquired, *kf_str_released, *kf_str_stat;

static int
kf_intern_names(void)
{
#define KF_INTERN(var, text) \
    if (var == NULL && (var = PyUnicode_InternFromString(text)) == NULL) return -1;
    KF_INTERN(kf_str_held, "held")
    KF_INTERN(kf_str_site, "site")
    KF_INTERN(kf_str_id, "id")
    KF_INTERN(kf_str_stats, "stats")
    KF_INTERN(kf_str_held_since, "_held_since")
    KF_INTERN(kf_str_clock, "clock")
    KF_INTERN(kf_str_acquired, "_acquired")
    KF_INTERN(kf_str_released, "_released")
    KF_INTERN(kf_str_stat, "_stat")
#undef KF_INTERN
    return 0;
}

/* bind(kernel, done, spin_lock, spin_unlock_bad, get_page, get_page_bug, put_page,
 * put_page_tail, trylock_page, unlock_page): see KernelFieldsObject. */
static PyObject *
kf_bind(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *ref;
    PyObject **slots[] = {&self->done, &self->py_spin_lock, &self->py_spin_unlock_bad,
                          &self->py_get_page, &self->py_get_page_bug, &self->py_put_page,
                          &self->py_put_page_tail, &self->py_trylock_page,
                          &self->py_unlock_page};
    Py_ssize_t i;
    if (check_nargs("bind", nargs, 10) < 0 || kf_intern_names() < 0) {
        return NULL;
    }
    for (i = 2; i < 10; i++) {
        if (!PyCallable_Check(args[i])) {
            PyErr_Format(PyExc_TypeError, "bind(): argument %zd is not callable", i + 1);
            return NULL;
        }
    }
    if ((ref = PyWeakref_NewRef(args[0], NULL)) == NULL) {
        return NULL;
    }
    Py_XSETREF(self->kref, ref);
    for (i = 0; i < 9; i++) {
        Py_INCREF(args[i + 1]);
        Py_XSETREF(*slots[i], args[i + 1]);
    }
    Py_RETURN_NONE;
}

/* The bound kernel (a new reference) and its instance dict (a new reference). */
static int
kf_kernel(KernelFieldsObject *self, PyObject **kernel, PyObject **kdict)
{
    PyObject *k;
    if (self->kref == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "KernelFields is not bound to a kernel");
        return -1;
    }
    k = PyWeakref_GetObject(self->kref);  /* borrowed */
    if (k == NULL) {
        return -1;
    }
    if (k == Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "the kernel of this KernelFields is gone");
        return -1;
    }
    if ((*kdict = PyObject_GenericGetDict(k, NULL)) == NULL) {
        return -1;
    }
    Py_INCREF(k);
    *kernel = k;
    return 0;
}

/* An item of the kernel's instance dict (borrowed), with an error if it is missing. */
static PyObject *
kf_kattr(PyObject *kdict, PyObject *name)
{
    PyObject *v = PyDict_GetItemWithError(kdict, name);
    if (v == NULL && !PyErr_Occurred()) {
        PyErr_Format(PyExc_AttributeError, "kernel has no attribute %R", name);
    }
    return v;
}

/* st[i] += d for a statistics row (a list of ints); -1 with an exception set. */
static int
kf_stat_add(PyObject *st, Py_ssize_t i, long long d)
{
    long long v;
    PyObject *n;
    if (kf_arg(PyList_GET_ITEM(st, i), &v) < 0 || (n = PyLong_FromLongLong(v + d)) == NULL) {
        return -1;
    }
    return PyList_SetItem(st, i, n);  /* steals n */
}

/* f(kernel, *args): a Python method of Kernel called on the bound kernel. */
static PyObject *
kf_call(PyObject *f, PyObject *kernel, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *stack[6];
    Py_ssize_t i;
    stack[0] = kernel;
    for (i = 0; i < nargs && i < 5; i++) {
        stack[i + 1] = args[i];
    }
    return PyObject_Vectorcall(f, stack, nargs + 1, NULL);
}

/* The actor's id + 1 (the lock words' owner value); -1 with an exception set. */
static int
kf_me(PyObject *actor, long long *me)
{
    PyObject *v = PyObject_GetAttr(actor, kf_str_id);
    int r;
    if (v == NULL) {
        return -1;
    }
    r = kf_arg(v, me);
    Py_DECREF(v);
    *me += 1;
    return r;
}

/* _acquired's bookkeeping (kernel.py, inlined in spin_lock and trylock_page):
 * a.held[word] = site, a.site = site, _held_since[word] = (site, clock()). */
static int
kf_acquired(PyObject *kdict, PyObject *a, PyObject *word, PyObject *site)
{
    PyObject *held, *hs, *clock, *t, *pair;
    int r;
    if ((held = PyObject_GetAttr(a, kf_str_held)) == NULL) {
        return -1;
    }
    r = PyDict_SetItem(held, word, site);
    Py_DECREF(held);
    if (r < 0 || PyObject_SetAttr(a, kf_str_site, site) < 0
        || (hs = kf_kattr(kdict, kf_str_held_since)) == NULL
        || (clock = kf_kattr(kdict, kf_str_clock)) == NULL) {
        return -1;
    }
    Py_INCREF(hs);
    if ((t = PyObject_CallNoArgs(clock)) == NULL) {
        Py_DECREF(hs);
        return -1;
    }
    pair = PyTuple_Pack(2, site, t);
    Py_DECREF(t);
    if (pair == NULL) {
        Py_DECREF(hs);
        return -1;
    }
    r = PyDict_SetItem(hs, word, pair);
    Py_DECREF(pair);
    Py_DECREF(hs);
    return r;
}

/* _released (kernel.py, inlined in spin_unlock and unlock_page): the kernel's own
 * _released when a caller wrapped it; else drop word from a.held and, if _held_since
 * has it, the hold time into the row of the site that took the lock (_add_time at
 * S_HOLDS: count, total, min, max; the row made by _stat if it is gone). */
static int
kf_released(PyObject *kernel, PyObject *kdict, PyObject *a, PyObject *word)
{
    PyObject *held, *hs, *v, *hsite, *stats, *st, *clock, *now;
    long long t0, t, cur;
    int c, r = -1;
    if ((v = PyDict_GetItemWithError(kdict, kf_str_released)) != NULL) {
        PyObject *res = PyObject_CallFunctionObjArgs(v, a, word, NULL);  /* wrapped */
        if (res == NULL) {
            return -1;
        }
        Py_DECREF(res);
        return 0;
    }
    if (PyErr_Occurred() || (held = PyObject_GetAttr(a, kf_str_held)) == NULL) {
        return -1;
    }
    c = PyDict_Contains(held, word);  /* if word in held: del held[word] */
    if (c < 0 || (c && PyDict_DelItem(held, word) < 0)) {
        Py_DECREF(held);
        return -1;
    }
    Py_DECREF(held);
    if ((hs = kf_kattr(kdict, kf_str_held_since)) == NULL) {
        return -1;
    }
    if ((v = PyDict_GetItemWithError(hs, word)) == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(hs);
    Py_INCREF(v);
    st = NULL;
    if (!PyTuple_CheckExact(v) || PyTuple_GET_SIZE(v) != 2) {
        PyErr_SetString(PyExc_TypeError, "_held_since entries are (site, time)");
        goto out;
    }
    hsite = PyTuple_GET_ITEM(v, 0);
    if (PyDict_DelItem(hs, word) < 0 || kf_arg(PyTuple_GET_ITEM(v, 1), &t0) < 0
        || (clock = kf_kattr(kdict, kf_str_clock)) == NULL
        || (now = PyObject_CallNoArgs(clock)) == NULL) {
        goto out;
    }
    c = kf_arg(now, &t);
    Py_DECREF(now);
    if (c < 0 || (stats = kf_kattr(kdict, kf_str_stats)) == NULL) {
        goto out;
    }
    t -= t0;
    if ((st = PyDict_GetItemWithError(stats, hsite)) != NULL) {
        Py_INCREF(st);
    } else if (PyErr_Occurred()
               || (st = PyObject_CallMethodOneArg(kernel, kf_str_stat, hsite)) == NULL) {
        goto out;  /* the row is gone (a caller reset the statistics): _stat makes it */
    }
    if (!PyList_CheckExact(st) || PyList_GET_SIZE(st) < 12) {
        PyErr_SetString(PyExc_TypeError, "a lock statistics row is a list of 12 ints");
        goto out;
    }
    if (kf_stat_add(st, KF_S_HOLDS, 1) < 0 || kf_stat_add(st, KF_S_HOLDS + 1, t) < 0
        || kf_arg(PyList_GET_ITEM(st, KF_S_HOLDS + 2), &cur) < 0
        || (t < cur && kf_stat_add(st, KF_S_HOLDS + 2, t - cur) < 0)
        || kf_arg(PyList_GET_ITEM(st, KF_S_HOLDS + 3), &cur) < 0
        || (t > cur && kf_stat_add(st, KF_S_HOLDS + 3, t - cur) < 0)) {
        goto out;
    }
    r = 0;
out:
    Py_XDECREF(st);
    Py_DECREF(v);
    Py_DECREF(hs);
    return r;
}

/* Whether the C may do the lock bookkeeping itself: no caller wrapped _acquired
 * (harness/steps.py); 1 yes, 0 no, -1 with an exception set. */
static int
kf_unhooked(PyObject *kdict)
{
    if (PyDict_GetItemWithError(kdict, kf_str_acquired) != NULL) {
        return 0;
    }
    return PyErr_Occurred() ? -1 : 1;
}

/* The statistics row of site (a new reference), made by Kernel._stat when it is missing
 * (as kernel.py's `try: self.stats[site] except KeyError: self._stat(site)`); NULL
 * with an exception set on an error. */
static PyObject *
kf_row(PyObject *kernel, PyObject *kdict, PyObject *site)
{
    PyObject *stats, *st;
    if ((stats = kf_kattr(kdict, kf_str_stats)) == NULL) {
        return NULL;
    }
    if ((st = PyDict_GetItemWithError(stats, site)) != NULL) {
        Py_INCREF(st);
    } else if (PyErr_Occurred() || (st = PyObject_CallMethodOneArg(kernel, kf_str_stat, site))
                                       == NULL) {
        return NULL;
    }
    if (!PyList_CheckExact(st) || PyList_GET_SIZE(st) < 12) {
        PyErr_SetString(PyExc_TypeError, "a lock statistics row is a list of 12 ints");
        Py_DECREF(st);
        return NULL;
    }
    return st;
}

/* Kernel.spin_lock(a, word, site) over this object's words: the uncontended take in one
 * call. When no caller wrapped _acquired (harness/steps.py): the statistics row of
 * site (made if missing), cas(word, 0, id + 1), and on success st[S_ACQUIRED] += 1
 * and _acquired's bookkeeping, as kernel.py's spin_lock does, returning the exhausted
 * generator `done`. Otherwise the Python generator does the rest:
 * Kernel.spin_lock(kernel, a, word, site) when wrapped, or with the row when the cas
 * failed (contended: it sleeps and retries). */
static PyObject *
kf_spin_lock(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *kernel, *kdict, *st, *out = NULL;
    long long word, me;
    int64_t *p, expected = 0;
    int c;
    if (check_nargs("spin_lock", nargs, 3) < 0 || kf_arg(args[1], &word) < 0
        || kf_kernel(self, &kernel, &kdict) < 0) {
        return NULL;
    }
    if ((c = kf_unhooked(kdict)) <= 0) {
        if (c == 0) {
            out = kf_call(self->py_spin_lock, kernel, args, 3);
        }
        goto done;
    }
    if ((st = kf_row(kernel, kdict, args[2])) == NULL) {
        goto done;
    }
    if (kf_me(args[0], &me) < 0 || (p = kf_ptr(self, word)) == NULL) {
        goto done_st;
    }
    if (!__atomic_compare_exchange_n(p, &expected, (int64_t)me, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST)) {
        PyObject *stack[5] = {kernel, args[0], args[1], args[2], st};
        out = PyObject_Vectorcall(self->py_spin_lock, stack, 5, NULL);
        goto done_st;
    }
    if (kf_stat_add(st, KF_S_ACQUIRED, 1) == 0
        && kf_acquired(kdict, args[0], args[1], args[2]) == 0) {
        Py_INCREF(self->done);
        out = self->done;
    }
done_st:
    Py_DECREF(st);
done:
    Py_DECREF(kdict);
    Py_DECREF(kernel);
    return out;
}

/* Kernel.spin_unlock(a, word, site) in one call: xchg(word, 0); an owner other than the
 * actor goes to Kernel._spin_unlock_bad (which raises BAD_UNLOCK); then _released. */
static PyObject *
kf_spin_unlock(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *kernel, *kdict, *out = NULL;
    long long word, me, owner;
    int64_t *p;
    if (check_nargs("spin_unlock", nargs, 3) < 0 || kf_arg(args[1], &word) < 0
        || kf_me(args[0], &me) < 0 || (p = kf_ptr(self, word)) == NULL
        || kf_kernel(self, &kernel, &kdict) < 0) {
        return NULL;
    }
    owner = __atomic_exchange_n(p, (int64_t)0, __ATOMIC_SEQ_CST);
    if (owner != me) {
        PyObject *o = PyLong_FromLongLong(owner);
        if (o != NULL) {
            PyObject *stack[5] = {kernel, args[0], args[1], args[2], o};
            out = PyObject_Vectorcall(self->py_spin_unlock_bad, stack, 5, NULL);
            Py_DECREF(o);
        }
    } else if (kf_released(kernel, kdict, args[0], args[1]) == 0) {
        Py_INCREF(Py_None);
        out = Py_None;
    }
    Py_DECREF(kdict);
    Py_DECREF(kernel);
    return out;
}

/* Kernel.trylock_page(a, pfn, site) in one call (folio_trylock): with no wrapped
 * _acquired, on an allocated frame: set PG_locked; if it was clear, store the owner
 * (id + 1); the statistics row of site (made if missing); st[S_TRY] and
 * st[S_ACQUIRED] += 1 and _acquired's bookkeeping: True; or st[S_TRY],
 * st[S_TRY_FAIL] and st[S_CONTENDED] += 1: False. A wrapped _acquired or a frame not
 * allocated changes nothing here: Kernel.trylock_page's Python path runs (the latter
 * raises there: use after free). */
static PyObject *
kf_trylock_page(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *kernel, *kdict, *st, *w, *out = NULL;
    int64_t *fl, *own;
    long long me;
    int c;
    if (check_nargs("trylock_page", nargs, 3) < 0 || (fl = kf_frame(self, args[1], 0)) == NULL
        || (own = kf_frame(self, args[1], self->f_owner)) == NULL
        || kf_kernel(self, &kernel, &kdict) < 0) {
        return NULL;
    }
    if ((c = kf_unhooked(kdict)) <= 0 || !(KF_LOAD(fl) & self->pg_allocated)) {
        if (c >= 0) {
            out = kf_call(self->py_trylock_page, kernel, args, 3);
        }
        goto done;
    }
    if (kf_me(args[0], &me) < 0) {
        goto done;
    }
    if (__atomic_fetch_or(fl, (int64_t)self->pg_locked, __ATOMIC_SEQ_CST) & self->pg_locked) {
        if ((st = kf_row(kernel, kdict, args[2])) == NULL) {
            goto done;
        }
        if (kf_stat_add(st, 2, 1) == 0 && kf_stat_add(st, 3, 1) == 0
            && kf_stat_add(st, 1, 1) == 0) {  /* S_TRY, S_TRY_FAIL, S_CONTENDED */
            Py_INCREF(Py_False);
            out = Py_False;
        }
        goto done_st;
    }
    __atomic_store_n(own, (int64_t)me, __ATOMIC_SEQ_CST);
    if ((st = kf_row(kernel, kdict, args[2])) == NULL) {
        goto done;
    }
    if (kf_stat_add(st, 2, 1) < 0 || kf_stat_add(st, KF_S_ACQUIRED, 1) < 0
        || (w = PyLong_FromLongLong((long long)(fl - self->aw->words))) == NULL) {
        goto done_st;
    }
    if (kf_acquired(kdict, args[0], w, args[2]) == 0) {
        Py_INCREF(Py_True);
        out = Py_True;
    }
    Py_DECREF(w);
done_st:
    Py_DECREF(st);
done:
    Py_DECREF(kdict);
    Py_DECREF(kernel);
    return out;
}

/* Kernel.unlock_page(a, pfn, site) in one call (folio_unlock): if the actor holds the
 * page lock, clear the owner and PG_locked, _released, and if PG_waiters was set call
 * Kernel._folio_wake_bit(flags word); else change nothing: Kernel.unlock_page's Python
 * path runs (and raises BAD_UNLOCK). */
static PyObject *
kf_unlock_page(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *kernel, *kdict, *w = NULL, *out = NULL;
    int64_t *fl, *own;
    long long me;
    int64_t old;
    if (check_nargs("unlock_page", nargs, 3) < 0 || (fl = kf_frame(self, args[1], 0)) == NULL
        || (own = kf_frame(self, args[1], self->f_owner)) == NULL || kf_me(args[0], &me) < 0
        || kf_kernel(self, &kernel, &kdict) < 0) {
        return NULL;
    }
    if (!(KF_LOAD(fl) & self->pg_locked) || KF_LOAD(own) != me) {
        out = kf_call(self->py_unlock_page, kernel, args, 3);
        goto done;
    }
    __atomic_store_n(own, (int64_t)0, __ATOMIC_SEQ_CST);
    if ((w = PyLong_FromLongLong((long long)(fl - self->aw->words))) == NULL
        || kf_released(kernel, kdict, args[0], w) < 0) {
        goto done;
    }
    old = __atomic_fetch_and(fl, ~(int64_t)self->pg_locked, __ATOMIC_SEQ_CST);
    if (old & self->pg_waiters) {
        out = PyObject_CallMethod(kernel, "_folio_wake_bit", "O", w);
        if (out != NULL) {
            Py_DECREF(out);
            out = NULL;
        } else {
            goto done;
        }
    }
    Py_INCREF(Py_None);
    out = Py_None;
done:
    Py_XDECREF(w);
    Py_DECREF(kdict);
    Py_DECREF(kernel);
    return out;
}

/* Kernel.get_page(a, pfn, site) in one call: if the frame is allocated, add the
 * reference; an old count <= 0 goes to Kernel._get_page_bug (which raises BUG_ON). A
 * frame not allocated changes nothing here: Kernel.get_page's Python words path runs
 * (its use-after-free check raises). */
static PyObject *
kf_get_page(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t *fl, *ref;
    int64_t old;
    PyObject *kernel, *kdict, *out = NULL;
    if (check_nargs("get_page", nargs, 3) < 0 || (fl = kf_frame(self, args[1], 0)) == NULL
        || (ref = kf_frame(self, args[1], self->f_ref)) == NULL) {
        return NULL;
    }
    if (KF_LOAD(fl) & self->pg_allocated) {
        old = (int64_t)__atomic_fetch_add((uint64_t *)ref, (uint64_t)1, __ATOMIC_SEQ_CST);
        if (old > 0) {
            Py_RETURN_NONE;
        }
        if (kf_kernel(self, &kernel, &kdict) < 0) {
            return NULL;
        }
        {
            PyObject *o = PyLong_FromLongLong(old);
            if (o != NULL) {
                PyObject *stack[5] = {kernel, args[0], args[1], args[2], o};
                out = PyObject_Vectorcall(self->py_get_page_bug, stack, 5, NULL);
                Py_DECREF(o);
            }
        }
    } else {
        if (kf_kernel(self, &kernel, &kdict) < 0) {
            return NULL;
        }
        out = kf_call(self->py_get_page, kernel, args, 3);
    }
    Py_DECREF(kdict);
    Py_DECREF(kernel);
    return out;
}

/* Kernel.put_page(a, pfn, site, refs=1) in one call: if the frame is allocated, drop
 * refs references; an old count <= refs (the last put, or an underflow) goes to
 * Kernel._put_page_tail (the free, or REFCOUNT_UNDERFLOW). A frame not allocated
 * changes nothing here: Kernel.put_page's Python words path runs. */
static PyObject *
kf_put_page(KernelFieldsObject *self, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames)
{
    int64_t *fl, *ref;
    int64_t old;
    long long refs = 1;
    PyObject *kernel, *kdict, *out = NULL, *refs_obj = NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nkw > 1 || (nkw == 1 && (nargs != 3
                                 || !PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0))
                                 || PyUnicode_CompareWithASCIIString(
                                        PyTuple_GET_ITEM(kwnames, 0), "refs") != 0))) {
        PyErr_SetString(PyExc_TypeError, "put_page() takes a, pfn, site and refs");
        return NULL;
    }
    if (nkw == 0 && (nargs < 3 || nargs > 4)) {
        PyErr_Format(PyExc_TypeError, "put_page() takes 3 or 4 arguments (%zd given)", nargs);
        return NULL;
    }
    if (nkw == 1 || nargs == 4) {
        refs_obj = args[3];
        if (kf_arg(refs_obj, &refs) < 0) {
            return NULL;
        }
    }
    if ((fl = kf_frame(self, args[1], 0)) == NULL
        || (ref = kf_frame(self, args[1], self->f_ref)) == NULL) {
        return NULL;
    }
    if (KF_LOAD(fl) & self->pg_allocated) {
        old = (int64_t)__atomic_fetch_add((uint64_t *)ref, (uint64_t)-refs, __ATOMIC_SEQ_CST);
        if (old > refs) {
            Py_RETURN_NONE;
        }
        if (kf_kernel(self, &kernel, &kdict) < 0) {
            return NULL;
        }
        {
            PyObject *o = PyLong_FromLongLong(old), *r = PyLong_FromLongLong(refs);
            if (o != NULL && r != NULL) {
                PyObject *stack[6] = {kernel, args[0], args[1], args[2], r, o};
                out = PyObject_Vectorcall(self->py_put_page_tail, stack, 6, NULL);
            }
            Py_XDECREF(o);
            Py_XDECREF(r);
        }
    } else {
        PyObject *r;
        if (kf_kernel(self, &kernel, &kdict) < 0) {
            return NULL;
        }
        if ((r = PyLong_FromLongLong(refs)) != NULL) {
            PyObject *stack[5] = {kernel, args[0], args[1], args[2], r};
            out = PyObject_Vectorcall(self->py_put_page, stack, 5, NULL);
            Py_DECREF(r);
        }
    }
    Py_DECREF(kdict);
    Py_DECREF(kernel);
    return out;
}

/* The constants, by name, from a dict (kernel.py: _kernel_fields). */
static const char *const kf_names[] = {
    "frames", "frame_words", "pte", "pages_per_mm", "ptl", "tables_per_mm",
    "ptes_per_table", "F_REF", "F_MAP", "F_PIN", "F_DATA", "Z_DEVICE",
    "Z_DEVICE_PRIVATE", "PG_locked", "tlb", "tlb_slots", "actors", "Z_FREE", "Z_CURSOR",
    "STATIC_MASK", "PG_allocated", "F_OWNER", "F_PRIV", "F_GEN", "vma", "vma_rows",
    "max_vmas", "VMA_WORDS", "V_START", "V_END", "V_FLAGS", "V_PGOFF", "V_AVC", "V_SEQ",
    "VM_LIVE", "actor_base", "ACTOR_WORDS", "A_PROGRESS", "g_progress", "PTE_PFN_SHIFT",
    "PTE_TYPE_MASK", "PTE_PRESENT", "PTE_DEVICE_PRIVATE", "PTE_MIGRATION", "PG_waiters", NULL,
};

/* kf_names as interned str objects, made at the first KernelFields(): a lookup by one of
   them reuses its cached hash (PyDict_GetItemString made and hashed a new str for each
   of the 45 names, a model built a run). Kept for the life of the process. */
static PyObject *kf_keys[sizeof(kf_names) / sizeof(kf_names[0])];

static PyObject *
KernelFields_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    KernelFieldsObject *self;
    PyObject *aw, *consts, *item;
    long long v[45];
    Py_ssize_t i;

    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "KernelFields() takes no keyword arguments");
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) != 2) {
        PyErr_Format(PyExc_TypeError, "KernelFields() takes exactly 2 arguments (%zd given)",
                     PyTuple_GET_SIZE(args));
        return NULL;
    }
    aw = PyTuple_GET_ITEM(args, 0);
    consts = PyTuple_GET_ITEM(args, 1);
    if (!PyObject_TypeCheck(aw, &AtomicWords_Type)) {
        PyErr_SetString(PyExc_TypeError, "KernelFields() needs an AtomicWords");
        return NULL;
    }
    if (!PyDict_Check(consts)) {
        PyErr_SetString(PyExc_TypeError, "KernelFields() needs a dict of constants");
        return NULL;
    }
    for (i = 0; kf_names[i] != NULL; i++) {
        if (kf_keys[i] == NULL && (kf_keys[i] = PyUnicode_InternFromString(kf_names[i])) == NULL) {
            return NULL;
        }
        item = PyDict_GetItemWithError(consts, kf_keys[i]);  /* borrowed */
        if (item == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_KeyError, "KernelFields() constant %s missing", kf_names[i]);
            }
            return NULL;
        }
        if (kf_arg(item, &v[i]) < 0) {
            return NULL;
        }
    }
    if (v[6] <= 0 || v[15] <= 0 || v[26] <= 0) {
        PyErr_SetString(PyExc_ValueError, "ptes_per_table and tlb_slots must be positive");
        return NULL;
    }
    self = (KernelFieldsObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(aw);
    self->aw = (AtomicWordsObject *)aw;
    self->frames = v[0];
    self->frame_words = v[1];
    self->pte = v[2];
    self->ppm = v[3];
    self->ptl = v[4];
    self->tpm = v[5];
    self->ppt = v[6];
    self->f_ref = v[7];
    self->f_map = v[8];
    self->f_pin = v[9];
    self->f_data = v[10];
    self->z_device = v[11];
    self->z_device_private = v[12];
    self->pg_locked = v[13];
    self->tlb = v[14];
    self->tlb_slots = v[15];
    self->actors = v[16];
    self->z_free = v[17];
    self->z_cursor = v[18];
    self->static_mask = v[19];
    self->pg_allocated = v[20];
    self->f_owner = v[21];
    self->f_priv = v[22];
    self->f_gen = v[23];
    self->vma = v[24];
    self->vma_rows = v[25];
    self->max_vmas = v[26];
    self->vma_words = v[27];
    self->v_start = v[28];
    self->v_end = v[29];
    self->v_flags = v[30];
    self->v_pgoff = v[31];
    self->v_avc = v[32];
    self->v_seq = v[33];
    self->vm_live = v[34];
    self->actor_base = v[35];
    self->actor_words = v[36];
    self->a_progress = v[37];
    self->g_progress = v[38];
    self->pte_pfn_shift = v[39];
    self->pte_type_mask = v[40];
    self->pte_present = v[41];
    self->pte_device_private = v[42];
    self->pte_migration = v[43];
    self->pg_waiters = v[44];
    return (PyObject *)self;
}

static void
KernelFields_dealloc(KernelFieldsObject *self)
{
    Py_XDECREF(self->kref);
    Py_XDECREF(self->done);
    Py_XDECREF(self->py_spin_lock);
    Py_XDECREF(self->py_spin_unlock_bad);
    Py_XDECREF(self->py_get_page);
    Py_XDECREF(self->py_get_page_bug);
    Py_XDECREF(self->py_put_page);
    Py_XDECREF(self->py_put_page_tail);
    Py_XDECREF(self->py_trylock_page);
    Py_XDECREF(self->py_unlock_page);
    Py_XDECREF(self->aw);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define KF_METHOD(name, doc) \
    {#name, (PyCFunction)(void (*)(void))kf_##name, METH_FASTCALL, doc}

static PyMethodDef KernelFields_methods[] = {
    KF_METHOD(flags, "flags($self, pfn, /)\n--\n\nThe frame's flags word."),
    KF_METHOD(test_flag, "test_flag($self, pfn, flag, /)\n--\n\nbool(flags & flag)."),
    KF_METHOD(set_flag, "set_flag($self, pfn, flag, /)\n--\n\nfetch_or of flag."),
    KF_METHOD(clear_flag, "clear_flag($self, pfn, flag, /)\n--\n\nfetch_and of ~flag."),
    KF_METHOD(test_clear_flag,
              "test_clear_flag($self, pfn, flag, /)\n--\n\nClear flag; whether it was set."),
    KF_METHOD(is_zone_device, "is_zone_device($self, pfn, /)\n--\n\nbool(flags & Z_DEVICE)."),
    KF_METHOD(is_device_private,
              "is_device_private($self, pfn, /)\n--\n\nbool(flags & Z_DEVICE_PRIVATE)."),
    KF_METHOD(page_locked, "page_locked($self, pfn, /)\n--\n\nbool(flags & PG_locked)."),
    KF_METHOD(ref_count, "ref_count($self, pfn, /)\n--\n\nThe frame's refcount."),
    KF_METHOD(mapcount, "mapcount($self, pfn, /)\n--\n\nThe frame's mapcount."),
    KF_METHOD(pincount, "pincount($self, pfn, /)\n--\n\nThe frame's pin count."),
    KF_METHOD(data, "data($self, pfn, /)\n--\n\nThe frame's content token."),
    KF_METHOD(set_data, "set_data($self, pfn, v, /)\n--\n\nStore the content token."),
    KF_METHOD(mapcount_add,
              "mapcount_add($self, pfn, n, /)\n--\n\nAdd n to the mapcount; the new value."),
    KF_METHOD(pte_read, "pte_read($self, mm, vpn, /)\n--\n\nThe entry (READ_ONCE)."),
    KF_METHOD(set_pte, "set_pte($self, mm, vpn, pte, /)\n--\n\nStore the entry."),
    KF_METHOD(ptep_get_and_clear,
              "ptep_get_and_clear($self, mm, vpn, /)\n--\n\nExchange the entry with 0."),
    KF_METHOD(ptl_word, "ptl_word($self, mm, vpn, /)\n--\n\nThe entry's page-table-lock word."),
    KF_METHOD(tlb_lookup,
              "tlb_lookup($self, a, mm, vpn, /)\n--\n\n"
              "The actor's cached translation (pfn << 1) | writable, or -1 on a miss."),
    KF_METHOD(tlb_fill,
              "tlb_fill($self, a, mm, vpn, pfn, writable, /)\n--\n\nCache a translation."),
    KF_METHOD(flush_tlb_range,
              "flush_tlb_range($self, mm, lo, hi, /)\n--\n\n"
              "Drop every actor's cached translation of [lo, hi) of mm."),
    KF_METHOD(alloc_frame,
              "alloc_frame($self, zone_word, lo, hi, /)\n--\n\n"
              "alloc_page's search and claim in a zone; the pfn or -1."),
    KF_METHOD(free_frame,
              "free_frame($self, pfn, flags, mapping_word, zone_free_word, /)\n--\n\n"
              "free_page's stores after its checks."),
    KF_METHOD(avc_walk,
              "avc_walk($self, anon_vma, pgoff, /)\n--\n\n"
              "anon_vma_interval_tree's (mm, address, vm_flags) list, in the tree's order."),
    KF_METHOD(ksm_items,
              "ksm_items($self, pfn, /)\n--\n\n"
              "rmap_walk_ksm's (mm, vpn) of every present, device-private or migration "
              "entry naming pfn, in (mm, vpn) order."),
    KF_METHOD(pte_naming,
              "pte_naming($self, pfn, types, /)\n--\n\nThe first entry naming pfn with a type in "
              "the mask types, as (mm, vpn, entry), or None."),
    KF_METHOD(find_vma,
              "find_vma($self, mm, vpn, /)\n--\n\nThe live VMA row of mm covering vpn, or -1."),
    KF_METHOD(bind,
              "bind($self, kernel, done, spin_lock, spin_unlock_bad, get_page, get_page_bug, "
              "put_page, put_page_tail, trylock_page, unlock_page, /)\n--\n\n"
              "Bind the lock and reference primitives to a Kernel (kernel.py: use_words)."),
    KF_METHOD(spin_lock,
              "spin_lock($self, a, word, site, /)\n--\n\n"
              "Kernel.spin_lock: an uncontended take in one call (an exhausted generator), "
              "else the Python generator."),
    KF_METHOD(spin_unlock,
              "spin_unlock($self, a, word, site, /)\n--\n\nKernel.spin_unlock in one call."),
    KF_METHOD(trylock_page,
              "trylock_page($self, a, pfn, site, /)\n--\n\n"
              "Kernel.trylock_page (folio_trylock) in one call."),
    KF_METHOD(unlock_page,
              "unlock_page($self, a, pfn, site, /)\n--\n\n"
              "Kernel.unlock_page (folio_unlock) in one call."),
    KF_METHOD(get_page,
              "get_page($self, a, pfn, site, /)\n--\n\nKernel.get_page's fast path in one call."),
    {"put_page", (PyCFunction)(void (*)(void))kf_put_page, METH_FASTCALL | METH_KEYWORDS,
     "put_page($self, a, pfn, site, refs=1)\n--\n\nKernel.put_page's fast path in one call."},
    KF_METHOD(progress,
              "progress($self, actor_id, /)\n--\n\n"
              "Add 1 to the actor's and the global progress words."),
    {NULL, NULL, 0, NULL},
};

static PyTypeObject KernelFields_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pagerace.core.machine._atomicwords.KernelFields",
    .tp_basicsize = sizeof(KernelFieldsObject),
    .tp_itemsize = 0,
    .tp_dealloc = (destructor)KernelFields_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The model kernel's one-word accessors over an AtomicWords (kernel.py).",
    .tp_methods = KernelFields_methods,
    .tp_new = KernelFields_new,
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
    if (PyType_Ready(&KernelFields_Type) < 0) {
        return -1;
    }
    Py_INCREF(&KernelFields_Type);
    if (PyModule_AddObject(module, "KernelFields", (PyObject *)&KernelFields_Type) < 0) {
        Py_DECREF(&KernelFields_Type);
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
