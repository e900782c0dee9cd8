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

/* probability that the bit is 0, in (0, 2^16): the Krichevsky-Trofimov estimate (n0 + 1/2) / (n + 1) */
static inline uint32_t model_p(const Model *m) {
    uint32_t p = (uint32_t)((((uint64_t)2 * m->zeros + 1) << PROB_BITS) / (2u * ((uint32_t)m->zeros + m->ones) + 2));
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

/* the context of pixel (y, x) of plane `plane`: ten coded neighbours of that plane (JBIG's three-line template),
 * and whether its higher planes equal its left and upper neighbours'. `mask` holds the planes decoded so far
 * (the encoder: all of them, masked to the planes at or above `plane`). */
static inline uint32_t context(const uint8_t *mask, int h, int w, int y, int x, int plane) {
    (void)h;
#define BIT(yy, xx) (((yy) >= 0 && (xx) >= 0 && (xx) < w) ? (uint32_t)((mask[(size_t)(yy) * w + (xx)] >> plane) & 1) : 0u)
    uint32_t c = BIT(y, x - 1) | BIT(y, x - 2) << 1 | BIT(y - 1, x - 2) << 2 | BIT(y - 1, x - 1) << 3 |
                 BIT(y - 1, x) << 4 | BIT(y - 1, x + 1) << 5 | BIT(y - 1, x + 2) << 6 | BIT(y - 2, x - 1) << 7 |
                 BIT(y - 2, x) << 8 | BIT(y - 2, x + 1) << 9;
#undef BIT
    int high = plane + 1;
    uint32_t self = (uint32_t)(mask[(size_t)y * w + x] >> high);
    uint32_t left = x > 0 ? (uint32_t)(mask[(size_t)y * w + x - 1] >> high) : 0u;
    uint32_t up = y > 0 ? (uint32_t)(mask[(size_t)(y - 1) * w + x] >> high) : 0u;
    return c | (uint32_t)(self == left) << TEMPLATE_BITS | (uint32_t)(self == up) << (TEMPLATE_BITS + 1);
}

/* row y of plane `plane` equals row y-1 (row -1 is all zeros) */
static int row_repeats(const uint8_t *mask, int w, int y, int plane) {
    for (int x = 0; x < w; x++) {
        int bit = (mask[(size_t)y * w + x] >> plane) & 1;
        int above = y > 0 ? (mask[(size_t)(y - 1) * w + x] >> plane) & 1 : 0;
        if (bit != above) return 0;
    }
    return 1;
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
    Model *models = malloc(sizeof(Model) * (CONTEXTS + 1));
    Encoder e = {0, 0xFFFFFFFFu, 0, 1, NULL, 0, 0, 0};
    if (!models) {
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    for (int plane = planes - 1; plane >= 0; plane--) {
        models_init(models, CONTEXTS + 1);
        Model *repeat = &models[CONTEXTS];
        for (int y = 0; y < height; y++) {
            int same = row_repeats(mask, width, y, plane);
            encode_bit(&e, repeat, same);
            if (same) continue;
            for (int x = 0; x < width; x++)
                encode_bit(&e, &models[context(mask, height, width, y, x, plane)], (mask[(size_t)y * width + x] >> plane) & 1);
        }
    }
    for (int i = 0; i < 5; i++) shift_low(&e);
    Py_END_ALLOW_THREADS
    free(models);
    PyBuffer_Release(&buf);
    if (e.failed) {
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
    Model *models = malloc(sizeof(Model) * (CONTEXTS + 1));
    if (!result || !models) {
        Py_XDECREF(result);
        free(models);
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    uint8_t *mask = (uint8_t *)PyBytes_AS_STRING(result);
    memset(mask, 0, (size_t)height * width);
    Decoder d = {0, 0xFFFFFFFFu, buf.buf, 0, (size_t)buf.len, 0};
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < 5; i++) d.code = (d.code << 8) | next_byte(&d);
    for (int plane = planes - 1; plane >= 0 && !d.overrun; plane--) {
        models_init(models, CONTEXTS + 1);
        Model *repeat = &models[CONTEXTS];
        for (int y = 0; y < height && !d.overrun; y++) {
            uint8_t *row = mask + (size_t)y * width;
            if (decode_bit(&d, repeat)) {
                for (int x = 0; x < width; x++) {
                    int above = y > 0 ? (row[x - width] >> plane) & 1 : 0;
                    row[x] |= (uint8_t)(above << plane);
                }
                continue;
            }
            for (int x = 0; x < width; x++)
                row[x] |= (uint8_t)(decode_bit(&d, &models[context(mask, height, width, y, x, plane)]) << plane);
        }
    }
    Py_END_ALLOW_THREADS
    free(models);
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

PyMODINIT_FUNC PyInit__mask(void) { return PyModule_Create(&module); }
