/*
 * pagerace.core.machine._cpcg: numpy's default_rng stream (SeedSequence + PCG64) in C.
 *
 * A run seeds two generators (the engine's Stream, the CPU actor's stream) and draws a
 * few batches from each. numpy builds a SeedSequence, a PCG64 and a Generator object for
 * each seeding (about 24 us, most of it Python-level object set-up and np.errstate) and
 * an array per batch. This module computes the same numbers from the same algorithms,
 * transcribed from numpy's sources (numpy/random/bit_generator.pyx, _pcg64.pyx,
 * src/pcg64/pcg64.h, pcg64.c):
 *
 * - SeedSequence: the entropy as uint32 words (each int's 32-bit words lowest first, 0 as
 *   one word: _coerce_to_uint32_array), mixed into a pool of 4 words (mix_entropy with
 *   hashmix / mix), then generate_state(4, uint64): 8 uint32 words, read as 4 uint64
 *   little-endian;
 * - PCG64: pcg64_set_seed(state, words[0:2], words[2:4]), i.e. pcg_setseq_128_srandom_r
 *   with the 128-bit initstate = words[0] << 64 | words[1] and initseq = words[2] << 64 |
 *   words[3]; each output steps the 128-bit LCG (numpy's default multiplier) and returns
 *   XSL-RR of the new state;
 * - next_double = (next64 >> 11) * 2**-53 (Generator.random);
 * - the CPU actor kind's operations (cpu_ops: Lemire's bounded draw on 32-bit halves,
 *   then a double), as workloads/_schema.py _Raw32.cpu_ops computes them in Python.
 *
 * new(seed) takes the seed forms core/machine/seeding.py hands numpy as words (an int >= 0, a
 * list or tuple of ints >= 0, exact types) and returns None for any other form, which
 * the caller seeds through numpy itself. tests/unit/test_rng_c.py compares states and
 * numbers with numpy over thousands of seeds. No 32-bit buffer (has_uint32) is kept: the
 * callers draw only 64-bit outputs and doubles, which never touch it in numpy either.
 *
 * Needs a compiler with unsigned __int128 (GCC, Clang); setup.py builds it as optional,
 * and without it core/machine/seeding.py and its callers use numpy as before.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#ifndef __SIZEOF_INT128__
#error "pagerace.core.machine._cpcg needs unsigned __int128"
#endif

typedef unsigned __int128 u128;

/* bit_generator.pyx */
#define INIT_A 0x43b0d7e5u
#define MULT_A 0x931e8875u
#define INIT_B 0x8b51f9ddu
#define MULT_B 0x58f38dedu
#define MIX_MULT_L 0xca01f9ddu
#define MIX_MULT_R 0x4973f715u
#define XSHIFT 16
#define POOL 4

/* pcg64.h: PCG_DEFAULT_MULTIPLIER_128 */
#define MULT_HIGH 2549297995355413924ULL
#define MULT_LOW 4865540595714422341ULL

typedef struct {
    PyObject_HEAD
    u128 state;
    u128 inc;
} PCGObject;

static PyTypeObject PCG_Type;

/* "write" and "read", the CPU kind's operation names (PyInit). */
static PyObject *str_write, *str_read;

/* ---- numpy's algorithms -------------------------------------------------------- */

static inline uint32_t
hashmix(uint32_t value, uint32_t *hash_const)
{
    value ^= *hash_const;
    *hash_const *= MULT_A;
    value *= *hash_const;
    value ^= value >> XSHIFT;
    return value;
}

static inline uint32_t
mix(uint32_t x, uint32_t y)
{
    uint32_t result = MIX_MULT_L * x - MIX_MULT_R * y;
    result ^= result >> XSHIFT;
    return result;
}

static inline void
pcg_step(PCGObject *g)
{
    const u128 mult = ((u128)MULT_HIGH << 64) | MULT_LOW;
    g->state = g->state * mult + g->inc;
}

static inline uint64_t
pcg_next64(PCGObject *g)
{
    pcg_step(g);
    uint64_t hi = (uint64_t)(g->state >> 64), lo = (uint64_t)g->state;
    unsigned int rot = (unsigned int)(hi >> 58);
    uint64_t v = hi ^ lo;
    return (v >> rot) | (v << ((-rot) & 63));
}

/* SeedSequence(entropy).generate_state(4, uint64), then pcg64_set_seed. */
static void
pcg_seed(PCGObject *g, const uint32_t *ent, Py_ssize_t n)
{
    uint32_t pool[POOL];
    uint32_t hc = INIT_A;
    for (int i = 0; i < POOL; i++)
        pool[i] = hashmix(i < n ? ent[i] : 0, &hc);
    for (int src = 0; src < POOL; src++)
        for (int dst = 0; dst < POOL; dst++)
            if (src != dst)
                pool[dst] = mix(pool[dst], hashmix(pool[src], &hc));
    for (Py_ssize_t src = POOL; src < n; src++)
        for (int dst = 0; dst < POOL; dst++)
            pool[dst] = mix(pool[dst], hashmix(ent[src], &hc));

    uint32_t w[2 * POOL];
    uint32_t hb = INIT_B;
    for (int i = 0; i < 2 * POOL; i++) {
        uint32_t d = pool[i % POOL];
        d ^= hb;
        hb *= MULT_B;
        d *= hb;
        d ^= d >> XSHIFT;
        w[i] = d;
    }
    uint64_t v[4];
    for (int k = 0; k < 4; k++)
        v[k] = (uint64_t)w[2 * k] | ((uint64_t)w[2 * k + 1] << 32);
    u128 initstate = ((u128)v[0] << 64) | v[1];
    u128 initseq = ((u128)v[2] << 64) | v[3];
    g->state = 0;
    g->inc = (initseq << 1) | 1;
    pcg_step(g);
    g->state += initstate;
    pcg_step(g);
}

/* ---- the entropy words --------------------------------------------------------- */

typedef struct {
    uint32_t *w;
    Py_ssize_t n, cap;
    uint32_t local[16];
} Words;

static int
words_push(Words *ws, uint32_t x)
{
    if (ws->n == ws->cap) {
        Py_ssize_t cap = ws->cap * 2;
        uint32_t *w = PyMem_Malloc((size_t)cap * sizeof(uint32_t));
        if (w == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(w, ws->w, (size_t)ws->n * sizeof(uint32_t));
        if (ws->w != ws->local)
            PyMem_Free(ws->w);
        ws->w = w;
        ws->cap = cap;
    }
    ws->w[ws->n++] = x;
    return 0;
}

/* An exact int's 32-bit words, lowest first (0 is one word 0). Returns 1 if pushed, 0 if
 * the value is not of the form (not an exact int, or negative), -1 on error. */
static int
push_int(Words *ws, PyObject *v)
{
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow = 0;
    long long s = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (s == -1 && PyErr_Occurred())
        return -1;
    if (overflow < 0 || (!overflow && s < 0))
        return 0;
    if (!overflow) {
        uint64_t x = (uint64_t)s;
        if (words_push(ws, (uint32_t)x) < 0)
            return -1;
        x >>= 32;
        if (x && words_push(ws, (uint32_t)x) < 0)
            return -1;
        return 1;
    }
    /* >= 2**63: 64 bits at a time. */
    PyObject *shift = PyLong_FromLong(64);
    if (shift == NULL)
        return -1;
    Py_INCREF(v);
    int rc = 1;
    while (rc == 1) {
        uint64_t x = PyLong_AsUnsignedLongLongMask(v);
        if (x == (uint64_t)-1 && PyErr_Occurred()) {
            rc = -1;
            break;
        }
        PyObject *rest = PyNumber_Rshift(v, shift);
        Py_DECREF(v);
        v = rest;
        if (v == NULL) {
            rc = -1;
            break;
        }
        int more = PyObject_IsTrue(v);
        if (more < 0) {
            rc = -1;
            break;
        }
        if (words_push(ws, (uint32_t)x) < 0) {
            rc = -1;
            break;
        }
        if ((more || (x >> 32)) && words_push(ws, (uint32_t)(x >> 32)) < 0) {
            rc = -1;
            break;
        }
        if (!more)
            break;
    }
    Py_XDECREF(v);
    Py_DECREF(shift);
    return rc;
}

/* ---- the type ------------------------------------------------------------------ */

static PyObject *
cpcg_new(PyObject *Py_UNUSED(module), PyObject *seed)
{
    Words ws;
    ws.w = ws.local;
    ws.n = 0;
    ws.cap = (Py_ssize_t)(sizeof(ws.local) / sizeof(ws.local[0]));
    int rc;
    if (PyLong_CheckExact(seed)) {
        rc = push_int(&ws, seed);
    }
    else if (PyList_CheckExact(seed) || PyTuple_CheckExact(seed)) {
        rc = 1;
        /* A list's items are read by index each time: an item cannot vanish under us. */
        for (Py_ssize_t i = 0; rc == 1 && i < PySequence_Fast_GET_SIZE(seed); i++)
            rc = push_int(&ws, PySequence_Fast_GET_ITEM(seed, i));
    }
    else {
        rc = 0;
    }
    PyObject *out = NULL;
    if (rc == 0) {
        out = Py_NewRef(Py_None);
    }
    else if (rc == 1) {
        PCGObject *g = PyObject_New(PCGObject, &PCG_Type);
        if (g != NULL) {
            pcg_seed(g, ws.w, ws.n);
            out = (PyObject *)g;
        }
    }
    if (ws.w != ws.local)
        PyMem_Free(ws.w);
    return out;
}

static Py_ssize_t
count_arg(PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "count must be >= 0, got %zd", n);
        return -1;
    }
    return n;
}

/* A list of `arg` draws: doubles in [0, 1) (numpy's next_double) or, with `raw`, the
 * 64-bit outputs themselves. */
static PyObject *
draw_list(PCGObject *self, PyObject *arg, int raw)
{
    Py_ssize_t n = count_arg(arg);
    if (n < 0)
        return NULL;
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t x = pcg_next64(self);
        PyObject *v = raw ? PyLong_FromUnsignedLongLong(x)
                          : PyFloat_FromDouble((double)(x >> 11) * (1.0 / 9007199254740992.0));
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, v);
    }
    return out;
}

static PyObject *
PCG_random(PCGObject *self, PyObject *arg)
{
    return draw_list(self, arg, 0);
}

static PyObject *
PCG_raw(PCGObject *self, PyObject *arg)
{
    return draw_list(self, arg, 1);
}

/* The CPU kind's operations (workloads/_schema.py _Raw32.cpu_ops, the same algorithm and
 * the same numbers): for each, numpy's Generator.integers(0, span) (Lemire's bounded draw
 * on 32-bit words, buffered_bounded_lemire_uint32: a word is the low half of a 64-bit
 * output, the next the high half; a span of 1 draws nothing) plus off, then random()
 * (next_double, which leaves the half buffer alone) < wr: a write. The outputs are drawn
 * as _Raw32 draws them, `first` then 16 at a time, so the stream is left where _Raw32
 * leaves numpy's bit generator. */
static PyObject *
PCG_cpu_ops(PCGObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError,
                     "cpu_ops() takes exactly 7 arguments (n, span, off, wr, mm, hot, first), "
                     "%zd given", nargs);
        return NULL;
    }
    Py_ssize_t n = count_arg(args[0]);
    if (n < 0)
        return NULL;
    unsigned long long span = PyLong_AsUnsignedLongLong(args[1]);
    if (span == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (span < 1 || span > 0xFFFFFFFFULL) {
        PyErr_Format(PyExc_ValueError, "span must be in [1, 2**32 - 1], got %llu", span);
        return NULL;
    }
    long long off = PyLong_AsLongLong(args[2]);
    if (off == -1 && PyErr_Occurred())
        return NULL;
    double wr = PyFloat_AsDouble(args[3]);
    if (wr == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *mm = args[4], *hot = args[5];
    if (!PyList_CheckExact(hot)) {
        PyErr_SetString(PyExc_TypeError, "hot must be a list");
        return NULL;
    }
    Py_ssize_t first = count_arg(args[6]);
    if (first < 0)
        return NULL;

    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    Py_ssize_t drawn = first, used = 0; /* outputs drawn as _Raw32 draws them; read */
    int64_t half = -1;                  /* the buffered high half of an output, or -1 */
    for (Py_ssize_t k = 0; k < n; k++) {
        long long i;
        if (span == 1) {
            i = off;
        }
        else {
            uint64_t m;
            int64_t threshold = -1;
            for (;;) {
                uint64_t x;
                if (half >= 0) {
                    x = (uint64_t)half;
                    half = -1;
                }
                else {
                    if (used == drawn)
                        drawn += 16;
                    used++;
                    uint64_t w = pcg_next64(self);
                    half = (int64_t)(w >> 32);
                    x = w & 0xFFFFFFFFULL;
                }
                m = x * span;
                uint64_t lo = m & 0xFFFFFFFFULL;
                if (lo >= span)
                    break;
                if (threshold < 0)
                    threshold = (int64_t)((0x100000000ULL - span) % span);
                if (lo >= (uint64_t)threshold)
                    break;
            }
            i = (long long)(m >> 32) + off;
        }
        if (used == drawn)
            drawn += 16;
        used++;
        double d = (double)(pcg_next64(self) >> 11) * (1.0 / 9007199254740992.0);
        PyObject *page;
        if (PyList_GET_SIZE(hot)) {
            if (i < 0 || i >= PyList_GET_SIZE(hot)) {
                PyErr_SetString(PyExc_IndexError, "list index out of range");
                Py_DECREF(out);
                return NULL;
            }
            page = Py_NewRef(PyList_GET_ITEM(hot, i));
        }
        else {
            page = PyLong_FromLongLong(i);
            if (page == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        }
        PyObject *op = PyTuple_New(3);
        if (op == NULL) {
            Py_DECREF(page);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(op, 0, Py_NewRef(d < wr ? str_write : str_read));
        PyTuple_SET_ITEM(op, 1, Py_NewRef(mm));
        PyTuple_SET_ITEM(op, 2, page);
        PyList_SET_ITEM(out, k, op);
    }
    for (; used < drawn; used++) /* what _Raw32 would have drawn beyond the last number */
        pcg_step(self);
    return out;
}

static PyObject *
u128_to_int(u128 v)
{
    PyObject *hi = PyLong_FromUnsignedLongLong((uint64_t)(v >> 64));
    PyObject *lo = PyLong_FromUnsignedLongLong((uint64_t)v);
    PyObject *shift = PyLong_FromLong(64);
    PyObject *out = NULL;
    if (hi != NULL && lo != NULL && shift != NULL) {
        PyObject *up = PyNumber_Lshift(hi, shift);
        if (up != NULL) {
            out = PyNumber_Or(up, lo);
            Py_DECREF(up);
        }
    }
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(shift);
    return out;
}

static PyObject *
PCG_state(PCGObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *s = u128_to_int(self->state);
    if (s == NULL)
        return NULL;
    PyObject *i = u128_to_int(self->inc);
    if (i == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    PyObject *out = PyTuple_Pack(2, s, i);
    Py_DECREF(s);
    Py_DECREF(i);
    return out;
}

static PyMethodDef PCG_methods[] = {
    {"random", (PyCFunction)PCG_random, METH_O,
     "random(n) -> list of n floats in [0, 1): numpy's Generator.random(n).tolist()"},
    {"raw", (PyCFunction)PCG_raw, METH_O,
     "raw(n) -> list of the next n 64-bit outputs: PCG64.random_raw(n).tolist()"},
    {"cpu_ops", (PyCFunction)(void (*)(void))PCG_cpu_ops, METH_FASTCALL,
     "cpu_ops(n, span, off, wr, mm, hot, first) -> the CPU kind's n operations:\n"
     "workloads/_schema.py _Raw32(raw, first).cpu_ops(n, span, off, wr, mm, hot)"},
    {"state", (PyCFunction)PCG_state, METH_NOARGS,
     "state() -> (state, inc): numpy's PCG64 state['state'] as two 128-bit ints"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PCG_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pagerace.core.machine._cpcg.PCG64",
    .tp_basicsize = sizeof(PCGObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "numpy's PCG64 seeded through SeedSequence; made by new(seed).",
    .tp_methods = PCG_methods,
};

static PyMethodDef module_methods[] = {
    {"new", (PyCFunction)cpcg_new, METH_O,
     "new(seed) -> PCG64 in the state of numpy.random.default_rng(seed), for an int >= 0\n"
     "or a list / tuple of ints >= 0 (exact types); None for any other seed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cpcg_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pagerace.core.machine._cpcg",
    .m_doc = "numpy's default_rng stream (SeedSequence + PCG64) in C; see core/machine/seeding.py.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__cpcg(void)
{
    if (PyType_Ready(&PCG_Type) < 0)
        return NULL;
    str_write = PyUnicode_InternFromString("write");
    str_read = PyUnicode_InternFromString("read");
    if (str_write == NULL || str_read == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&cpcg_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PCG_Type);
    if (PyModule_AddObject(m, "PCG64", (PyObject *)&PCG_Type) < 0) {
        Py_DECREF(&PCG_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
