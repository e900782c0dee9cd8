/* H.264 encoding over the system libx264, with a quantizer offset per macroblock.
 *
 * PyAV's libx264 (through libavcodec) cannot pass x264's per-macroblock quant_offsets, which is how STAC's
 * device shapes an inter-coded keyframe around what the edge's mask says matters. This module does only what
 * the H.264 codec needs: open an encoder tuned for live uplink, code one 4:2:0 frame at a time (optionally
 * as an IDR, optionally with offsets) and return its Annex-B bytes at once, and change the CRF between frames
 * (the device's rate control). Bad arguments raise ValueError;
 * the GIL is released while x264 works.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <x264.h>

typedef struct {
    PyObject_HEAD
    x264_t *x264;
    int width, height, mb_width, mb_height;
    int64_t pts;
} Encoder;

static void Encoder_dealloc(Encoder *self) {
    if (self->x264) x264_encoder_close(self->x264);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Encoder_init(Encoder *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"width", "height", "crf", "preset", "keyint", "fps", NULL};
    int width, height, keyint, fps;
    double crf;
    const char *preset;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iidsii", names, &width, &height, &crf, &preset, &keyint,
                                     &fps))
        return -1;
    if (width <= 0 || height <= 0 || width % 2 || height % 2) {
        PyErr_Format(PyExc_ValueError, "frame size must be positive and even, got %dx%d", width, height);
        return -1;
    }
    if (keyint < 1 || fps < 1) {
        PyErr_SetString(PyExc_ValueError, "keyint and fps must be at least 1");
        return -1;
    }
    x264_param_t p;
    if (x264_param_default_preset(&p, preset, "zerolatency") < 0) {
        PyErr_Format(PyExc_ValueError, "unknown x264 preset %s", preset);
        return -1;
    }
    /* what libavcodec sets for the same options, so that with no offsets the bytes match PyAV's encoder */
    p.i_width = width;
    p.i_height = height;
    p.i_csp = X264_CSP_I420;
    p.i_bframe = 0;
    p.i_keyint_max = keyint;
    p.i_fps_num = (uint32_t)fps;
    p.i_fps_den = 1;
    p.i_timebase_num = 1;
    p.i_timebase_den = (uint32_t)fps;
    p.rc.i_rc_method = X264_RC_CRF;
    p.rc.f_rf_constant = (float)crf;
    p.b_repeat_headers = 1;
    p.b_annexb = 1;
    p.i_log_level = X264_LOG_NONE;
    if (p.rc.i_aq_mode == X264_AQ_NONE)  /* quant_offsets are ignored without adaptive quantization */
        p.rc.i_aq_mode = X264_AQ_VARIANCE;
    if (self->x264) x264_encoder_close(self->x264);
    self->x264 = x264_encoder_open(&p);
    if (!self->x264) {
        PyErr_SetString(PyExc_ValueError, "x264_encoder_open failed");
        return -1;
    }
    self->width = width;
    self->height = height;
    self->mb_width = (width + 15) / 16;
    self->mb_height = (height + 15) / 16;
    self->pts = 0;
    return 0;
}

/* encode(yuv, offsets=None, idr=False) -> bytes
 * yuv: uint8 buffer of H*3/2 rows of W (planes Y, U, V, as PyAV's yuv420p ndarray);
 * offsets: float32 buffer, one QP offset per macroblock in raster order ([ceil(H/16), ceil(W/16)]). */
static PyObject *Encoder_encode(Encoder *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"yuv", "offsets", "idr", NULL};
    Py_buffer yuv, offsets = {0};
    PyObject *offsets_obj = Py_None;
    int idr = 0;
    if (!self->x264) {
        PyErr_SetString(PyExc_ValueError, "encoder not initialised");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|Op", names, &yuv, &offsets_obj, &idr)) return NULL;
    PyObject *result = NULL;
    size_t luma = (size_t)self->width * self->height;
    if ((size_t)yuv.len != luma * 3 / 2) {
        PyErr_Format(PyExc_ValueError, "yuv420p frame of %zd bytes, expected %zu for %dx%d", yuv.len,
                     luma * 3 / 2, self->width, self->height);
        goto done;
    }
    if (offsets_obj != Py_None) {
        if (PyObject_GetBuffer(offsets_obj, &offsets, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
        if (strcmp(offsets.format ? offsets.format : "B", "f") != 0 ||
            offsets.len != (Py_ssize_t)(sizeof(float) * self->mb_width * self->mb_height)) {
            PyErr_Format(PyExc_ValueError, "offsets must be float32 [%d, %d] (one per macroblock)",
                         self->mb_height, self->mb_width);
            goto done;
        }
    }
    x264_picture_t in, out;
    x264_picture_init(&in);
    in.img.i_csp = X264_CSP_I420;
    in.img.i_plane = 3;
    in.img.plane[0] = (uint8_t *)yuv.buf;
    in.img.plane[1] = in.img.plane[0] + luma;
    in.img.plane[2] = in.img.plane[1] + luma / 4;
    in.img.i_stride[0] = self->width;
    in.img.i_stride[1] = in.img.i_stride[2] = self->width / 2;
    in.i_pts = self->pts;
    in.i_type = idr ? X264_TYPE_IDR : X264_TYPE_AUTO;
    in.prop.quant_offsets = offsets.buf;  /* read during the call; x264 keeps no reference */
    x264_nal_t *nals;
    int n_nals, size;
    Py_BEGIN_ALLOW_THREADS
    size = x264_encoder_encode(self->x264, &nals, &n_nals, &in, &out);
    Py_END_ALLOW_THREADS
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "x264_encoder_encode failed");
        goto done;
    }
    if (size == 0) {
        PyErr_SetString(PyExc_ValueError, "x264 delayed the frame (expected zero latency)");
        goto done;
    }
    self->pts++;
    /* x264 lays a frame's NAL payloads out back to back */
    result = PyBytes_FromStringAndSize((const char *)nals[0].p_payload, size);
done:
    PyBuffer_Release(&yuv);
    if (offsets.obj) PyBuffer_Release(&offsets);
    return result;
}

/* set_crf(crf): the CRF of the frames coded from now on (x264_encoder_reconfig; fractional values allowed) */
static PyObject *Encoder_set_crf(Encoder *self, PyObject *arg) {
    double crf = PyFloat_AsDouble(arg);
    if (crf == -1.0 && PyErr_Occurred()) return NULL;
    if (!(crf >= 0 && crf <= 51)) {
        PyErr_Format(PyExc_ValueError, "CRF must be 0..51, got %g", crf);
        return NULL;
    }
    if (!self->x264) {
        PyErr_SetString(PyExc_ValueError, "encoder not initialised");
        return NULL;
    }
    x264_param_t p;
    x264_encoder_parameters(self->x264, &p);
    p.rc.f_rf_constant = (float)crf;
    if (x264_encoder_reconfig(self->x264, &p) < 0) {
        PyErr_SetString(PyExc_ValueError, "x264_encoder_reconfig refused the CRF");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Encoder_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(yuv, offsets=None, idr=False) -> bytes: one frame's Annex-B access unit"},
    {"set_crf", (PyCFunction)Encoder_set_crf, METH_O, "set_crf(crf): the CRF of the frames coded from now on"},
    {NULL}};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stac.codec._libx264.Encoder",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Encoder(width, height, crf, preset, keyint, fps): libx264, zerolatency, CRF, no B-frames",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_methods = Encoder_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_libx264",
                                    "H.264 encoding with per-macroblock quantizer offsets (system libx264)", -1,
                                    NULL};

PyMODINIT_FUNC PyInit__libx264(void) {
    if (PyType_Ready(&EncoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&EncoderType);
    if (PyModule_AddObject(m, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(&EncoderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
