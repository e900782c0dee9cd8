/* Lossless coding of class-id masks: the edge's answers.
 *
 * A raw mask costs a byte per pixel (380 KB at 720x528), far more than the keyframe that asked for it. Masks are
 * smooth: what costs bits is their boundaries. So each bit plane of the class ids (most significant first) is
 * coded pixel by pixel with an adaptive binary range coder whose context is JBIG's three-line template of ten
 * already coded neighbours in the same plane, plus, for masks of more than two classes, whether the pixel's
 * higher planes equal those of its left and upper neighbours. A row equal to the one above it costs one bit
 * (JBIG's typical prediction). Python adds the header (stac/codec/mask.py); this module codes the planes only.
 *
 * The range coder is LZMA's (carry propagation through a cached byte) with 16-bit probabilities, each context's
 * Krichevsky-Trofimov estimate from the counts it has seen: LZMA's 11-bit shift-adapted probabilities would floor
 * the cost of a background pixel at 0.02 bits (1 KB for a 720x528 frame) and learn a rare context slowly. The decoder must consume exactly the bytes the encoder wrote; anything
 * else (truncation, trailing bytes, corruption that runs off the end) is a ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PROB_BITS 16
#define TEMPLATE_BITS 10
#define CONTEXTS (1 << (TEMPLATE_BITS + 2))
#define TOP (1u << 24)
#define HALVE_AT 16384

/* counts of the 0s and 1s seen in one context */
typedef struct {
    uint16_t zeros, ones;
} Model;

static void models_init(Model *m, size_t n) { memset(m, 0, sizeof(Model) * n); }

/* 2^32 / m, so that no pixel pays for a division */
static uint32_t reciprocal[2 * HALVE_AT + 1];

/* probability that the bit is 0, in (0, 2^16): the Krichevsky-Trofimov estimate (n0 + 1/2) / (n + 1) */
static inline uint32_t model_p(const Model *m) {
    uint32_t p = (uint32_t)(((uint64_t)(2u * m->zeros + 1) * reciprocal[2u * ((uint32_t)m->zeros + m->ones) + 2]) >>
                            (32 - PROB_BITS));
    return p < 1 ? 1 : p > 65535 ? 65535 : p;
}

static inline void model_update(Model *m, int bit) {
    if (bit) m->ones++;
    else m->zeros++;
    if (m->zeros + m->ones >= HALVE_AT) { /* forget slowly, so a context follows what the mask does now */
        m->zeros = (uint16_t)((m->zeros + 1) >> 1);
        m->ones = (uint16_t)((m->ones + 1) >> 1);
    }
}

typedef struct {
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    uint64_t cache_size;
    uint8_t *out;
    size_t pos, cap;
    int failed;
} Encoder;

static void put_byte(Encoder *e, uint8_t b) {
    if (e->pos == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 4096;
        uint8_t *grown = realloc(e->out, cap);
        if (!grown) {
            e->failed = 1;
            return;
        }
        e->out = grown;
        e->cap = cap;
    }
    e->out[e->pos++] = b;
}

static void shift_low(Encoder *e) {
    if ((uint32_t)e->low < 0xFF000000u || (e->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(e->low >> 32);
        uint8_t byte = e->cache;
        do {
            put_byte(e, (uint8_t)(byte + carry));
            byte = 0xFF;
        } while (--e->cache_size != 0);
        e->cache = (uint8_t)(e->low >> 24);
    }
    e->cache_size++;
    e->low = (e->low & 0x00FFFFFFu) << 8;
}

static inline void encode_bit(Encoder *e, Model *m, int bit) {
    uint32_t bound = (e->range >> PROB_BITS) * model_p(m);
    if (bit) {
        e->low += bound;
        e->range -= bound;
    } else {
        e->range = bound;
    }
    model_update(m, bit);
    while (e->range < TOP) {
        e->range <<= 8;
        shift_low(e);
    }
}

typedef struct {
    uint32_t code, range;
    const uint8_t *in;
    size_t pos, len;
    int overrun;
} Decoder;

static inline uint8_t next_byte(Decoder *d) {
    if (d->pos < d->len) return d->in[d->pos++];
    d->overrun = 1;
    return 0;
}

static inline int decode_bit(Decoder *d, Model *m) {
    uint32_t bound = (d->range >> PROB_BITS) * model_p(m);
    int bit;
    if (d->code < bound) {
        d->range = bound;
        bit = 0;
    } else {
        d->code -= bound;
        d->range -= bound;
        bit = 1;
    }
    model_update(m, bit);
    while (d->range < TOP) {
        d->range <<= 8;
        d->code = (d->code << 8) | next_byte(d);
    }
    return bit;
}

/* row y of plane `plane` equals row y-1 (row -1 is all zeros) */
static int row_repeats(const uint8_t *row, const uint8_t *above, int w, int plane, int planes) {
    if (planes == 1) return memcmp(row, above, (size_t)w) == 0; /* class ids 0 and 1: the bytes are the plane */
    uint8_t differ = 0;
    for (int x = 0; x < w; x++) differ |= (uint8_t)(row[x] ^ above[x]) >> plane;
    return !(differ & 1);
}

static inline uint32_t bit_at(const uint8_t *row, int x, int w, int plane) {
    return x < w ? (uint32_t)((row[x] >> plane) & 1) : 0u;
}

/* Code (encoder) or decode into `mask` one bit plane. A pixel's context: JBIG's three-line template of ten coded
 * neighbours of the same plane, kept in three sliding registers (row y: x-2, x-1; row y-1: x-2 .. x+2; row y-2:
 * x-1 .. x+1), and whether its higher planes equal its left and upper neighbours' (a constant on the top plane).
 * The decoder's mask holds the higher planes decoded so far, so both sides see the same contexts. */
static inline void code_plane(Encoder *e, Decoder *d, uint8_t *mask, const uint8_t *zeros, int h, int w, int plane,
                              int planes, Model *models) {
    const int high = plane + 1, top = plane == planes - 1;
    models_init(models, CONTEXTS + 1);
    Model *repeat = &models[CONTEXTS];
    for (int y = 0; y < h; y++) {
        uint8_t *row = mask + (size_t)y * w;
        const uint8_t *up1 = y > 0 ? row - w : zeros, *up2 = y > 1 ? row - 2 * (size_t)w : zeros;
        int same;
        if (d) {
            same = decode_bit(d, repeat);
        } else {
            same = row_repeats(row, up1, w, plane, planes);
            encode_bit(e, repeat, same);
        }
        if (same) {
            if (d)
                for (int x = 0; x < w; x++) row[x] |= (uint8_t)(((up1[x] >> plane) & 1) << plane);
            continue;
        }
        uint32_t r0 = 0, r1 = bit_at(up1, 0, w, plane) << 2 | bit_at(up1, 1, w, plane) << 1 | bit_at(up1, 2, w, plane),
                 r2 = bit_at(up2, 0, w, plane) << 1 | bit_at(up2, 1, w, plane);
        for (int x = 0; x < w; x++) {
            uint32_t equal = 3;
            if (!top) { /* outside the mask is class 0 */
                uint32_t self = (uint32_t)(row[x] >> high), left = x > 0 ? (uint32_t)(row[x - 1] >> high) : 0u;
                equal = (uint32_t)(self == left) | (uint32_t)(self == (uint32_t)(up1[x] >> high)) << 1;
            }
            Model *m = &models[r0 | r1 << 2 | r2 << 7 | equal << TEMPLATE_BITS];
            uint32_t bit;
            if (d) {
                bit = (uint32_t)decode_bit(d, m);
                row[x] |= (uint8_t)(bit << plane);
            } else {
                bit = (uint32_t)((row[x] >> plane) & 1);
                encode_bit(e, m, (int)bit);
            }
            r0 = ((r0 << 1) | bit) & 3u;
            r1 = ((r1 << 1) | bit_at(up1, x + 3, w, plane)) & 31u;
            r2 = ((r2 << 1) | bit_at(up2, x + 2, w, plane)) & 7u;
        }
    }
}

/* Every plane, most significant first (encoder: e, decoder: d); -1 if memory ran out. */
static int code_planes(Encoder *e, Decoder *d, uint8_t *mask, int h, int w, int planes) {
    Model *models = malloc(sizeof(Model) * (CONTEXTS + 1));
    uint8_t *zeros = calloc((size_t)w, 1);
    if (models && zeros) {
        Py_BEGIN_ALLOW_THREADS
        for (int plane = planes - 1; plane >= 0 && !(d && d->overrun); plane--)
            code_plane(e, d, mask, zeros, h, w, plane, planes, models);
        if (e)
            for (int i = 0; i < 5; i++) shift_low(e);
        Py_END_ALLOW_THREADS
    }
    int ok = models && zeros;
    free(models);
    free(zeros);
    return ok ? 0 : -1;
}

static int check_geometry(int height, int width, int planes) {
    if (height < 1 || width < 1 || planes < 1 || planes > 8) {
        PyErr_Format(PyExc_ValueError, "mask geometry %dx%d with %d planes is not codable (1..8 planes)", width,
                     height, planes);
        return -1;
    }
    return 0;
}

static PyObject *encode(PyObject *self, PyObject *args) {
    Py_buffer buf;
    int height, width, planes;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*iii", &buf, &height, &width, &planes)) return NULL;
    if (check_geometry(height, width, planes) < 0 || buf.len != (Py_ssize_t)height * width) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "mask buffer holds %zd bytes, %dx%d needs %lld", buf.len, width, height,
                         (long long)height * width);
        PyBuffer_Release(&buf);
        return NULL;
    }
    const uint8_t *mask = buf.buf;
    for (Py_ssize_t i = 0; i < buf.len; i++) {
        if (mask[i] >> planes) {
            PyBuffer_Release(&buf);
            PyErr_Format(PyExc_ValueError, "class id %d does not fit in %d planes", mask[i], planes);
            return NULL;
        }
    }
    Encoder e = {0, 0xFFFFFFFFu, 0, 1, NULL, 0, 0, 0};
    int coded = code_planes(&e, NULL, (uint8_t *)mask, height, width, planes);
    PyBuffer_Release(&buf);
    if (coded < 0 || e.failed) {
        free(e.out);
        return PyErr_NoMemory();
    }
    PyObject *result = PyBytes_FromStringAndSize((const char *)e.out, (Py_ssize_t)e.pos);
    free(e.out);
    return result;
}

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer buf;
    int height, width, planes;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*iii", &buf, &height, &width, &planes)) return NULL;
    if (check_geometry(height, width, planes) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)height * width);
    if (!result) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    uint8_t *mask = (uint8_t *)PyBytes_AS_STRING(result);
    memset(mask, 0, (size_t)height * width);
    Decoder d = {0, 0xFFFFFFFFu, buf.buf, 0, (size_t)buf.len, 0};
    for (int i = 0; i < 5; i++) d.code = (d.code << 8) | next_byte(&d);
    if (code_planes(NULL, &d, mask, height, width, planes) < 0) {
        Py_DECREF(result);
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    size_t consumed = d.pos, length = (size_t)buf.len;
    PyBuffer_Release(&buf);
    if (d.overrun || consumed != length) {
        Py_DECREF(result);
        if (d.overrun) PyErr_SetString(PyExc_ValueError, "coded mask is truncated or corrupt (its coder ran past the end)");
        else
            PyErr_Format(PyExc_ValueError, "coded mask has %zu bytes after its end", length - consumed);
        return NULL;
    }
    return result;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS, "encode(mask bytes, height, width, planes) -> coded planes"},
    {"decode", decode, METH_VARARGS, "decode(coded planes, height, width, planes) -> mask bytes"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mask", "Lossless class-id mask coding", -1, methods};

PyMODINIT_FUNC PyInit__mask(void) {
    for (uint32_t m = 2; m < sizeof(reciprocal) / sizeof(reciprocal[0]); m++)
        reciprocal[m] = (uint32_t)((1ull << 32) / m);
    return PyModule_Create(&module);
}
