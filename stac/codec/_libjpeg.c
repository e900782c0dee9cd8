/* Coefficient-level JPEG I/O over the system libjpeg(-turbo), entirely in memory.
 *
 * Python's jpeglib goes through temporary files and copies coefficient by
 * coefficient; at 2048x1024 that alone costs 5x an OpenCV decode. This module
 * does only what STAC needs: write a baseline, Huffman-optimized, 4:4:4 YCbCr
 * JPEG from quantized coefficients, and read them back. libjpeg errors and
 * corrupt-data warnings become ValueError (never exit(), never a partial read).
 * The GIL is released while libjpeg works, so encoders run beside the frame loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} strict_error_mgr;

static void fail(j_common_ptr cinfo) {
    strict_error_mgr *err = (strict_error_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

/* level < 0 is a warning about corrupt data: a STAC stream is never corrupt. */
static void strict_message(j_common_ptr cinfo, int level) {
    if (level < 0) fail(cinfo);
}

static void init_errors(strict_error_mgr *err) {
    jpeg_std_error(&err->pub);
    err->pub.error_exit = fail;
    err->pub.emit_message = strict_message;
    err->message[0] = '\0';
}

/* Growable output buffer owned by us: libjpeg's jpeg_mem_dest keeps its reallocated buffer private until
 * the end, so after an error the caller cannot free it safely. */
typedef struct {
    struct jpeg_destination_mgr pub;
    unsigned char *buffer;
    size_t capacity;
} growing_dest;

static void dest_init(j_compress_ptr cinfo) {
    growing_dest *d = (growing_dest *)cinfo->dest;
    d->pub.next_output_byte = d->buffer;
    d->pub.free_in_buffer = d->capacity;
}

static boolean dest_grow(j_compress_ptr cinfo) {
    growing_dest *d = (growing_dest *)cinfo->dest;
    unsigned char *bigger = realloc(d->buffer, d->capacity * 2);
    if (bigger == NULL) ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 0);
    d->buffer = bigger;
    d->pub.next_output_byte = bigger + d->capacity;
    d->pub.free_in_buffer = d->capacity;
    d->capacity *= 2;
    return TRUE;
}

static void dest_term(j_compress_ptr cinfo) { (void)cinfo; }

/* coeffs: int16 [3, hb, wb, 64] natural order; qtables: uint16 [n, 64], component c uses min(c, n-1). */
static int write_coefficients(const short *coeffs, int height, int width, const unsigned short *qtables,
                              int n_tables, const unsigned char *app11, size_t app11_len,
                              unsigned char **out, size_t *out_len, char *message) {
    struct jpeg_compress_struct cinfo;
    strict_error_mgr err;
    /* allocated before setjmp: after a longjmp, locals assigned since setjmp are indeterminate */
    growing_dest dest = {{0}, malloc(65536), 65536};
    volatile int created = 0;
    if (dest.buffer == NULL) {
        strcpy(message, "out of memory");
        return 0;
    }
    init_errors(&err);
    cinfo.err = &err.pub;
    if (setjmp(err.jump)) {
        strcpy(message, err.message);
        if (created) jpeg_destroy_compress(&cinfo);
        free(dest.buffer);
        return 0;
    }
    jpeg_create_compress(&cinfo);
    created = 1;
    dest.pub.init_destination = dest_init;
    dest.pub.empty_output_buffer = dest_grow;
    dest.pub.term_destination = dest_term;
    cinfo.dest = &dest.pub;
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_YCbCr;
    jpeg_set_defaults(&cinfo);
    jpeg_set_colorspace(&cinfo, JCS_YCbCr);
    cinfo.write_JFIF_header = FALSE; /* every byte crosses the network; JFIF adds nothing here */
    cinfo.write_Adobe_marker = FALSE;
    cinfo.optimize_coding = TRUE;
    for (int t = 0; t < n_tables; t++) {
        unsigned int table[DCTSIZE2];
        for (int k = 0; k < DCTSIZE2; k++) table[k] = qtables[t * DCTSIZE2 + k];
        jpeg_add_quant_table(&cinfo, t, table, 100, TRUE);
    }
    int hb = (height + 7) / 8, wb = (width + 7) / 8;
    jvirt_barray_ptr arrays[3];
    for (int c = 0; c < 3; c++) {
        jpeg_component_info *comp = &cinfo.comp_info[c];
        comp->h_samp_factor = comp->v_samp_factor = 1;
        comp->quant_tbl_no = c < n_tables ? c : n_tables - 1;
        arrays[c] = (*cinfo.mem->request_virt_barray)((j_common_ptr)&cinfo, JPOOL_IMAGE, TRUE,
                                                     (JDIMENSION)wb, (JDIMENSION)hb, 1);
    }
    jpeg_write_coefficients(&cinfo, arrays);
    if (app11_len > 0) jpeg_write_marker(&cinfo, JPEG_APP0 + 11, app11, (unsigned int)app11_len);
    for (int c = 0; c < 3; c++) {
        for (int r = 0; r < hb; r++) {
            JBLOCKARRAY row = (*cinfo.mem->access_virt_barray)((j_common_ptr)&cinfo, arrays[c], (JDIMENSION)r, 1, TRUE);
            memcpy(row[0], coeffs + ((size_t)(c * hb + r) * wb) * DCTSIZE2, (size_t)wb * sizeof(JBLOCK));
        }
    }
    jpeg_finish_compress(&cinfo);
    *out = dest.buffer;
    *out_len = dest.capacity - dest.pub.free_in_buffer;
    jpeg_destroy_compress(&cinfo);
    return 1;
}

static int read_coefficients(const unsigned char *data, size_t len, int height, int width, short *out,
                             int *max_ac, int *max_dc, char *message) {
    struct jpeg_decompress_struct cinfo;
    strict_error_mgr err;
    volatile int created = 0;
    init_errors(&err);
    cinfo.err = &err.pub;
    if (setjmp(err.jump)) {
        strcpy(message, err.message);
        if (created) jpeg_destroy_decompress(&cinfo);
        return 0;
    }
    jpeg_create_decompress(&cinfo);
    created = 1;
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    if ((int)cinfo.image_height != height || (int)cinfo.image_width != width) {
        snprintf(message, JMSG_LENGTH_MAX, "frame is %ux%u, expected %dx%d", cinfo.image_height,
                 cinfo.image_width, height, width);
        jpeg_destroy_decompress(&cinfo);
        return 0;
    }
    if (cinfo.num_components != 3 || cinfo.progressive_mode || cinfo.arith_code || cinfo.data_precision != 8) {
        snprintf(message, JMSG_LENGTH_MAX, "not a baseline 8-bit 3-component JPEG");
        jpeg_destroy_decompress(&cinfo);
        return 0;
    }
    for (int c = 0; c < 3; c++) {
        if (cinfo.comp_info[c].h_samp_factor != 1 || cinfo.comp_info[c].v_samp_factor != 1) {
            snprintf(message, JMSG_LENGTH_MAX, "chroma subsampling is not 4:4:4");
            jpeg_destroy_decompress(&cinfo);
            return 0;
        }
    }
    jvirt_barray_ptr *arrays = jpeg_read_coefficients(&cinfo);
    int hb = (height + 7) / 8, wb = (width + 7) / 8;
    for (int c = 0; c < 3; c++) {
        for (int r = 0; r < hb; r++) {
            JBLOCKARRAY row = (*cinfo.mem->access_virt_barray)((j_common_ptr)&cinfo, arrays[c], (JDIMENSION)r, 1, FALSE);
            short *o = out + ((size_t)(c * hb + r) * wb) * DCTSIZE2;
            memcpy(o, row[0], (size_t)wb * sizeof(JBLOCK));
            /* a hostile Huffman table can code values no 8-bit image has: report the extremes */
            for (int b = 0; b < wb; b++, o += DCTSIZE2) {
                int dc = o[0] < 0 ? -o[0] : o[0];
                if (dc > *max_dc) *max_dc = dc;
                for (int k = 1; k < DCTSIZE2; k++) {
                    int a = o[k] < 0 ? -o[k] : o[k];
                    if (a > *max_ac) *max_ac = a;
                }
            }
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return 1;
}

static PyObject *py_write(PyObject *self, PyObject *args) {
    Py_buffer coeffs, qtables, app11;
    int height, width;
    if (!PyArg_ParseTuple(args, "y*iiy*y*", &coeffs, &height, &width, &qtables, &app11)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t blocks = (Py_ssize_t)((height + 7) / 8) * ((width + 7) / 8);
    int n_tables = (int)(qtables.len / (DCTSIZE2 * sizeof(unsigned short)));
    if (height <= 0 || width <= 0 || height > 65535 || width > 65535) {
        PyErr_SetString(PyExc_ValueError, "frame size must be 1..65535");
    } else if (coeffs.len != blocks * 3 * DCTSIZE2 * (Py_ssize_t)sizeof(short)) {
        PyErr_SetString(PyExc_ValueError, "coefficient buffer does not match the frame size");
    } else if (n_tables < 1 || n_tables > 3 || qtables.len != n_tables * DCTSIZE2 * (Py_ssize_t)sizeof(unsigned short)) {
        PyErr_SetString(PyExc_ValueError, "quantization tables must be uint16 [1..3, 64]");
    } else if (app11.len > 65533) {
        PyErr_SetString(PyExc_ValueError, "APP11 payload longer than a JPEG segment allows");
    } else {
        unsigned char *out = NULL;
        size_t out_len = 0;
        char message[JMSG_LENGTH_MAX];
        int ok;
        Py_BEGIN_ALLOW_THREADS
        ok = write_coefficients((const short *)coeffs.buf, height, width, (const unsigned short *)qtables.buf,
                                n_tables, (const unsigned char *)app11.buf, (size_t)app11.len, &out, &out_len,
                                message);
        Py_END_ALLOW_THREADS
        if (ok) {
            result = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)out_len);
            free(out);
        } else {
            PyErr_Format(PyExc_ValueError, "libjpeg: %s", message);
        }
    }
    PyBuffer_Release(&coeffs);
    PyBuffer_Release(&qtables);
    PyBuffer_Release(&app11);
    return result;
}

static PyObject *py_read(PyObject *self, PyObject *args) {
    Py_buffer data, out;
    int height, width;
    if (!PyArg_ParseTuple(args, "y*iiw*", &data, &height, &width, &out)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t blocks = (Py_ssize_t)((height + 7) / 8) * ((width + 7) / 8);
    if (height <= 0 || width <= 0) {
        PyErr_SetString(PyExc_ValueError, "frame size must be positive");
    } else if (out.len != blocks * 3 * DCTSIZE2 * (Py_ssize_t)sizeof(short)) {
        PyErr_SetString(PyExc_ValueError, "output buffer does not match the frame size");
    } else {
        char message[JMSG_LENGTH_MAX];
        int ok, max_ac = 0, max_dc = 0;
        Py_BEGIN_ALLOW_THREADS
        ok = read_coefficients((const unsigned char *)data.buf, (size_t)data.len, height, width, (short *)out.buf,
                               &max_ac, &max_dc, message);
        Py_END_ALLOW_THREADS
        if (ok) {
            result = Py_BuildValue("ii", max_ac, max_dc);
        } else {
            PyErr_Format(PyExc_ValueError, "libjpeg: %s", message);
        }
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return result;
}


/* ---- Fused block transforms: per-block table lookup, DCT + quantize, dequantize + IDCT. ----
 * Done per 8x8 block in cache; numpy's whole-plane version is memory-bound at 3-4x the time.
 * block_level [hb, wb] picks each block's table from tables [L, 3, 64] (float32 steps). */
typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
static v8 dct_row[8];  /* dct_row[k][x] = C[k][x] */
static v8 dct_col[8];  /* dct_col[x][k] = C[k][x] */

static void init_dct(void) {
    for (int k = 0; k < 8; k++)
        for (int x = 0; x < 8; x++) {
            float c = (float)((k == 0 ? sqrt(0.125) : 0.5) * cos((2 * x + 1) * k * M_PI / 16.0));
            dct_row[k][x] = c;
            dct_col[x][k] = c;
        }
}

/* out[r] = sum_k m[r][k] * basis[k]: 64 scalar-times-row products, one vector register per row. */
static inline void mix_rows(v8 out[8], const float m[8][8], const v8 basis[8]) {
    for (int r = 0; r < 8; r++) {
        v8 acc = basis[0] * m[r][0];
        for (int k = 1; k < 8; k++) acc += basis[k] * m[r][k];
        out[r] = acc;
    }
}

__attribute__((target_clones("avx2", "default")))
static void dct_quantize_plane(const unsigned char *plane, int hb, int wb, const unsigned char *block_level,
                               const float *tables, int c, short *out, int *max_ac, int *max_dc_diff) {
    int stride = wb * 8, prev_dc = 0;
    float ct[8][8];
    for (int y = 0; y < 8; y++)
        for (int k = 0; k < 8; k++) ct[k][y] = dct_row[k][y];
    for (int br = 0; br < hb; br++) {
        for (int bc = 0; bc < wb; bc++) {
            v8 x[8], t[8], f[8];
            for (int y = 0; y < 8; y++) {
                const unsigned char *px = plane + (size_t)(br * 8 + y) * stride + bc * 8;
                for (int i = 0; i < 8; i++) x[y][i] = (float)px[i] - 128.0f;
            }
            /* t = C X (rows u), then F = t C^T: f[u] = sum_i t[u][i] * C[:, i]. */
            mix_rows(t, ct, x);
            float tm[8][8];
            memcpy(tm, t, sizeof tm);
            mix_rows(f, tm, dct_col);
            const float *step = tables + ((size_t)block_level[br * wb + bc] * 3 + c) * 64;
            short *o = out + ((size_t)br * wb + bc) * 64;
            v8i big = {0};
            for (int u = 0; u < 8; u++) {
                v8 st, q;
                memcpy(&st, step + u * 8, sizeof st);
                q = f[u] / st;
                /* round half away from zero, as libjpeg: add 0.5 carrying q's sign, then truncate */
                v8 half = (v8)(((v8i)q & (int)0x80000000) | (v8i)(v8){0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f});
                v8i r = __builtin_convertvector(q + half, v8i);
                v8i sign = r >> 31, mag = (r ^ sign) - sign;
                if (u == 0) mag[0] = 0; /* DC is checked as a difference below */
                v8i keep = big > mag;
                big = (big & keep) | (mag & ~keep);
                for (int i = 0; i < 8; i++) o[u * 8 + i] = (short)r[i];
            }
            for (int i = 0; i < 8; i++)
                if (big[i] > *max_ac) *max_ac = big[i];
            int d = o[0] - prev_dc;
            if (d < 0) d = -d;
            if (d > *max_dc_diff) *max_dc_diff = d;
            prev_dc = o[0];
        }
    }
}

__attribute__((target_clones("avx2", "default")))
static void dequantize_idct_plane(const short *coeffs, int hb, int wb, const unsigned char *block_level,
                                  const float *tables, int c, unsigned char *pixels) {
    /* pixels: interleaved [8hb, 8wb, 3] in OpenCV's YCrCb order, ready for its colour conversion */
    int stride = wb * 8 * 3;
    unsigned char *plane = pixels + (c == 0 ? 0 : c == 1 ? 2 : 1);
    float ctt[8][8];
    for (int y = 0; y < 8; y++)
        for (int k = 0; k < 8; k++) ctt[y][k] = dct_row[k][y];
    for (int br = 0; br < hb; br++) {
        for (int bc = 0; bc < wb; bc++) {
            const float *step = tables + ((size_t)block_level[br * wb + bc] * 3 + c) * 64;
            const short *q = coeffs + ((size_t)br * wb + bc) * 64;
            v8 f[8], t[8], x[8];
            float fm[64];
            for (int k = 0; k < 64; k++) fm[k] = (float)q[k] * step[k];
            memcpy(f, fm, sizeof f);
            /* t = C^T F (rows y), then X = t C: x[y] = sum_v t[y][v] * C[v, :]. */
            mix_rows(t, ctt, f);
            float tm[8][8];
            memcpy(tm, t, sizeof tm);
            mix_rows(x, tm, dct_row);
            for (int y = 0; y < 8; y++) {
                unsigned char *px = plane + (size_t)(br * 8 + y) * stride + bc * 8 * 3;
                for (int i = 0; i < 8; i++) {
                    float s = x[y][i] + 128.5f;
                    px[3 * i] = (unsigned char)(s < 0 ? 0 : s > 255 ? 255 : s);
                }
            }
        }
    }
}

/* Shared argument checks: planes [3, 8hb, 8wb], coeffs [3, hb, wb, 64], block_level [hb, wb], tables [L, 3, 64]. */
static int check_blocks(Py_buffer *planes, Py_buffer *coeffs, Py_buffer *block_level, Py_buffer *tables, int hb, int wb) {
    Py_ssize_t n = (Py_ssize_t)hb * wb;
    if (hb <= 0 || wb <= 0 || planes->len != n * 3 * 64 || coeffs->len != n * 3 * 64 * (Py_ssize_t)sizeof(short) ||
        block_level->len != n || tables->len == 0 || tables->len % (3 * 64 * sizeof(float)) != 0) {
        PyErr_SetString(PyExc_ValueError, "buffer sizes do not match the block grid");
        return 0;
    }
    Py_ssize_t levels = tables->len / (3 * 64 * (Py_ssize_t)sizeof(float));
    const unsigned char *lv = (const unsigned char *)block_level->buf;
    for (Py_ssize_t i = 0; i < n; i++)
        if (lv[i] >= levels) {
            PyErr_Format(PyExc_ValueError, "level %d out of range for %zd tables", lv[i], levels);
            return 0;
        }
    return 1;
}

static PyObject *py_dct_quantize(PyObject *self, PyObject *args) {
    Py_buffer planes, block_level, tables, out;
    int hb, wb;
    if (!PyArg_ParseTuple(args, "y*iiy*y*w*", &planes, &hb, &wb, &block_level, &tables, &out)) return NULL;
    PyObject *result = NULL;
    if (check_blocks(&planes, &out, &block_level, &tables, hb, wb)) {
        int max_ac = 0, max_dc_diff = 0;
        Py_BEGIN_ALLOW_THREADS
        for (int c = 0; c < 3; c++)
            dct_quantize_plane((const unsigned char *)planes.buf + (size_t)c * hb * wb * 64, hb, wb,
                               (const unsigned char *)block_level.buf, (const float *)tables.buf, c,
                               (short *)out.buf + (size_t)c * hb * wb * 64, &max_ac, &max_dc_diff);
        Py_END_ALLOW_THREADS
        result = Py_BuildValue("ii", max_ac, max_dc_diff);
    }
    PyBuffer_Release(&planes);
    PyBuffer_Release(&block_level);
    PyBuffer_Release(&tables);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *py_dequantize_idct(PyObject *self, PyObject *args) {
    Py_buffer coeffs, block_level, tables, out;
    int hb, wb;
    if (!PyArg_ParseTuple(args, "y*iiy*y*w*", &coeffs, &hb, &wb, &block_level, &tables, &out)) return NULL;
    PyObject *result = NULL;
    if (check_blocks(&out, &coeffs, &block_level, &tables, hb, wb)) {
        Py_BEGIN_ALLOW_THREADS
        for (int c = 0; c < 3; c++)
            dequantize_idct_plane((const short *)coeffs.buf + (size_t)c * hb * wb * 64, hb, wb,
                                  (const unsigned char *)block_level.buf, (const float *)tables.buf, c,
                                  (unsigned char *)out.buf);
        Py_END_ALLOW_THREADS
        Py_INCREF(Py_None);
        result = Py_None;
    }
    PyBuffer_Release(&coeffs);
    PyBuffer_Release(&block_level);
    PyBuffer_Release(&tables);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"write", py_write, METH_VARARGS,
     "write(coeffs, height, width, qtables, app11) -> bytes\n"
     "coeffs: int16 [3, ceil(H/8), ceil(W/8), 64]; qtables: uint16 [n, 64] natural order (component c uses "
     "table min(c, n-1)); app11: payload of one APP11 segment written right after SOI (b'' for none)."},
    {"read", py_read, METH_VARARGS,
     "read(data, height, width, out) -> (max_ac, max_dc)\n"
     "Fills out (int16 [3, ceil(H/8), ceil(W/8), 64]) with the quantized coefficients of a baseline 4:4:4 JPEG."},
    {"dct_quantize", py_dct_quantize, METH_VARARGS,
     "dct_quantize(planes, hb, wb, block_level, tables, out) -> (max_ac, max_dc_diff)\n"
     "planes: uint8 YCbCr [3, 8hb, 8wb]; block_level: uint8 [hb, wb]; tables: float32 [L, 3, 64] steps; "
     "out: int16 [3, hb, wb, 64]. Level shift, DCT, divide by the block's steps, round half away from zero."},
    {"dequantize_idct", py_dequantize_idct, METH_VARARGS,
     "dequantize_idct(coeffs, hb, wb, block_level, tables, out) -> None\n"
     "Inverse of dct_quantize: multiply by the steps, inverse DCT, level shift, round, clip into out uint8 "
     "[8hb, 8wb, 3], interleaved in OpenCV's YCrCb order."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_libjpeg",
                                    "Coefficient-level JPEG I/O over libjpeg, in memory.", -1, methods};

PyMODINIT_FUNC PyInit__libjpeg(void) {
    init_dct();
    return PyModule_Create(&module);
}
