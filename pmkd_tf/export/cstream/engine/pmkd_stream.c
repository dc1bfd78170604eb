/* The row-streaming int8 engine: fixed code, the same for every model; the model is pmkd_model.c.
 *
 * A model is a list of nodes (pmkd_engine.h), one per TFLite op, in graph order; node 0 is the
 * camera. pmkd_stream_push_row hands over one image row and then repeatedly runs the last node (in
 * graph order) that can compute its next row, until none can: each row flows as deep into the
 * network as it can before the next row is read, so a 1xN network holds one row per layer in flight
 * plus its stem's line buffer, and an NxN one N rows per layer. Which rows are computed (rows that
 * no later layer reads are skipped) and where every row lives in the arena (rows never alive at the
 * same time share bytes) was laid out offline by pmkd_tf.export.cstream, whose layout.py simulates this
 * very loop; the engine only follows the tables.
 *
 * The arithmetic is that of TFLite's int8 reference kernels (what LiteRT's reference kernels and
 * TFLite Micro run): per-channel requantisation with SaturatingRoundingDoublingHighMul and
 * RoundingDivideByPOT, saturation, fused activation clamps, ADD's rescaling of both inputs after a
 * left shift of 20, AVERAGE_POOL's rounded division, MEAN's requantisation of the int32 sums. C99,
 * <stdint.h> and <string.h> only; no heap, no float. Signed right shifts are assumed arithmetic, as
 * TFLite itself assumes.
 */
#include <string.h>

#include "pmkd_engine.h"

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

#define ADD_LEFT_SHIFT 20

/* ---- TFLite's fixed-point helpers (kernels/internal/common.h), bit for bit ---- */

/* SaturatingRoundingDoublingHighMul: the high 32 bits of 2 * a * b, rounded to nearest. TFLite adds
 * 2^30 (or 1 - 2^30 below zero) and divides by 2^31 rounding toward zero; for every product that
 * equals floor((a * b + 2^30) / 2^31), which is one multiply-accumulate and a shift. Its saturating
 * case, a = b = INT32_MIN, cannot occur: the generated multipliers are all in [0, 2^31). */
static int32_t doubling_high_mul(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * b + (INT64_C(1) << 30)) >> 31);
}

/* RoundingDivideByPOT: x / 2^exponent, rounded to nearest, ties away from zero. */
static int32_t divide_by_power_of_two(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)((UINT32_C(1) << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* MultiplyByQuantizedMultiplier: x * multiplier * 2^(shift - 31), TFLite's double rounding. */
static int32_t rescale(int32_t x, int32_t multiplier, int shift)
{
    const int left = shift > 0 ? shift : 0;
    return divide_by_power_of_two(doubling_high_mul((int32_t)((uint32_t)x << left), multiplier), left - shift);
}

static int8_t clamp(int32_t value, const pmkd_node *n)
{
    if (value < n->act_min) {
        value = n->act_min;
    }
    if (value > n->act_max) {
        value = n->act_max;
    }
    return (int8_t)value;
}

/* ---- Dot products: the inner loops (int8 x int8 into int32) ---- */

#if defined(__ARM_FEATURE_DSP)
static uint32_t load4(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v); /* one unaligned LDR on a Cortex-M4 */
    return v;
}

/* Bytes 0 and 2, and bytes 1 and 3, sign-extended to two int16 lanes each. The second is one
 * SXTB16 with its built-in rotation; GCC does not fold a C rotation into it, hence the asm. */
static int16x2_t even_bytes(uint32_t v)
{
    return __sxtb16(v);
}

static int16x2_t odd_bytes(uint32_t v)
{
#if defined(__GNUC__)
    int16x2_t lanes;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(lanes) : "r"(v));
    return lanes;
#else
    return __sxtb16((v >> 8) | (v << 24));
#endif
}
#endif

/* acc += x . w over n bytes. */
static int32_t dot(const int8_t *x, const int8_t *w, uint32_t n, int32_t acc)
{
#if defined(__ARM_FEATURE_DSP)
    for (; n >= 4; n -= 4, x += 4, w += 4) {
        const uint32_t xv = load4(x), wv = load4(w);
        acc = __smlad(even_bytes(xv), even_bytes(wv), acc);
        acc = __smlad(odd_bytes(xv), odd_bytes(wv), acc);
    }
#endif
    for (; n > 0; --n) {
        acc += (int32_t)*x++ * *w++;
    }
    return acc;
}

/* Two pixels (xa, xb) times two output channels (w0, w1) over n bytes: each input and weight word is
 * loaded and sign-extended once and used twice. acc: {a.w0, a.w1, b.w0, b.w1}. */
static void dot_2x2(const int8_t *xa, const int8_t *xb, const int8_t *w0, const int8_t *w1, uint32_t n,
                    int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
#if defined(__ARM_FEATURE_DSP)
    for (; n >= 4; n -= 4, xa += 4, xb += 4, w0 += 4, w1 += 4) {
        const uint32_t u = load4(w0), v = load4(w1);
        const int16x2_t u02 = even_bytes(u), u13 = odd_bytes(u);
        const int16x2_t v02 = even_bytes(v), v13 = odd_bytes(v);
        const uint32_t p = load4(xa);
        const int16x2_t p02 = even_bytes(p), p13 = odd_bytes(p);
        a0 = __smlad(p13, u13, __smlad(p02, u02, a0));
        a1 = __smlad(p13, v13, __smlad(p02, v02, a1));
        const uint32_t q = load4(xb);
        const int16x2_t q02 = even_bytes(q), q13 = odd_bytes(q);
        b0 = __smlad(q13, u13, __smlad(q02, u02, b0));
        b1 = __smlad(q13, v13, __smlad(q02, v02, b1));
    }
#endif
    for (; n > 0; --n) {
        const int32_t p = *xa++, q = *xb++, u = *w0++, v = *w1++;
        a0 += p * u;
        a1 += p * v;
        b0 += q * u;
        b1 += q * v;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

/* ---- Rows ---- */

static uint32_t row_bytes(const pmkd_node *n)
{
    return (uint32_t)n->out_w * n->out_c;
}

static int8_t *slot(pmkd_stream *s, const pmkd_node *n, uint32_t row)
{
    return (int8_t *)s->arena + n->offset + (row % n->ring) * row_bytes(n);
}

/* Row `row` of node `producer`'s output: its ring slot, or the caller's row for an image read in place. */
static const int8_t *input_row(pmkd_stream *s, uint16_t producer, uint32_t row, const int8_t *image)
{
    const pmkd_node *p = &pmkd_nodes[producer];
    return p->ring ? slot(s, p, row) : image;
}

static int is_live(const pmkd_node *n, uint32_t row)
{
    return (n->live[row >> 3] >> (row & 7u)) & 1u;
}

static pmkd_row next_live(const pmkd_node *n, uint32_t row)
{
    while (row < n->out_h && !is_live(n, row)) {
        ++row;
    }
    return (pmkd_row)row;
}

/* How many leading output rows of node i are done (or skipped); a MEAN has its one row after its last sum. */
static uint32_t produced(const pmkd_stream *s, uint16_t i)
{
    const pmkd_node *n = &pmkd_nodes[i];
    if (n->kind == PMKD_MEAN) {
        return s->next[i] == n->in_h;
    }
    return s->next[i];
}

/* ---- Kernels: one output row each ---- */

static int8_t conv_output(const pmkd_node *n, const pmkd_conv *p, uint32_t co, int32_t acc)
{
    return clamp(rescale(acc, p->multiplier[co], p->shift[co]) + p->output_zero_point, n);
}

static int32_t weight_sum(const int8_t *w, uint32_t n)
{
    int32_t sum = 0;
#if defined(__ARM_FEATURE_DSP)
    for (; n >= 4; n -= 4, w += 4) {
        const uint32_t v = load4(w);
        sum = __smlad(odd_bytes(v), 0x00010001, __smlad(even_bytes(v), 0x00010001, sum));
    }
#endif
    while (n-- > 0) {
        sum += *w++;
    }
    return sum;
}

/* An output pixel whose window leaves the input: the missing taps read the input zero point. In each
 * kernel row the taps inside the input, columns [lo, hi) of the window, are one contiguous dot. */
static void conv_edge_pixel(const pmkd_node *n, const pmkd_conv *p, const int8_t *const rows[], int32_t x0,
                            int8_t *out)
{
    const uint32_t taps = (uint32_t)n->kw * n->in_c, filter = taps * n->kh;
    const int32_t kw = n->kw, in_w = n->in_w;
    const int32_t lo = x0 < 0 ? (-x0 < kw ? -x0 : kw) : 0;
    const int32_t hi = x0 + kw > in_w ? (in_w - x0 > lo ? in_w - x0 : lo) : kw;
    const uint32_t before = (uint32_t)lo * n->in_c, inside = (uint32_t)(hi - lo) * n->in_c;
    for (uint32_t co = 0; co < n->out_c; ++co) {
        int32_t acc = p->bias[co];
        for (uint32_t ky = 0; ky < n->kh; ++ky) {
            const int8_t *w = p->weights + co * filter + ky * taps;
            if (rows[ky] == NULL) {
                acc += p->input_zero_point * weight_sum(w, taps);
            } else {
                acc += p->input_zero_point * (weight_sum(w, before) + weight_sum(w + before + inside,
                                                                                  taps - before - inside));
                acc = dot(rows[ky] + (x0 + lo) * (int32_t)n->in_c, w + before, inside, acc);
            }
        }
        out[co] = conv_output(n, p, co, acc);
    }
}

/* One output pixel whose window lies inside the input, starting at byte `at` of each input row. */
static void conv_pixel(const pmkd_node *n, const pmkd_conv *p, const int8_t *const rows[], uint32_t at,
                       int8_t *out)
{
    const uint32_t taps = (uint32_t)n->kw * n->in_c, filter = taps * n->kh;
    for (uint32_t co = 0; co < n->out_c; ++co) {
        int32_t acc = p->bias[co];
        for (uint32_t ky = 0; ky < n->kh; ++ky) {
            acc = dot(rows[ky] + at, p->weights + co * filter + ky * taps, taps, acc);
        }
        out[co] = conv_output(n, p, co, acc);
    }
}

/* Two neighbouring output pixels inside the input (windows at `at` and `at + stride`), two channels at a
 * time. */
static void conv_pixel_pair(const pmkd_node *n, const pmkd_conv *p, const int8_t *const rows[], uint32_t at,
                            int8_t *out)
{
    const uint32_t taps = (uint32_t)n->kw * n->in_c, filter = taps * n->kh, step = (uint32_t)n->sw * n->in_c;
    int8_t *second = out + n->out_c;
    uint32_t co = 0;
    for (; co + 2 <= n->out_c; co += 2) {
        int32_t acc[4] = {p->bias[co], p->bias[co + 1], p->bias[co], p->bias[co + 1]};
        const int8_t *w = p->weights + co * filter;
        for (uint32_t ky = 0; ky < n->kh; ++ky) {
            dot_2x2(rows[ky] + at, rows[ky] + at + step, w + ky * taps, w + filter + ky * taps, taps, acc);
        }
        out[co] = conv_output(n, p, co, acc[0]);
        out[co + 1] = conv_output(n, p, co + 1, acc[1]);
        second[co] = conv_output(n, p, co, acc[2]);
        second[co + 1] = conv_output(n, p, co + 1, acc[3]);
    }
    for (; co < n->out_c; ++co) {
        int32_t a = p->bias[co], b = p->bias[co];
        for (uint32_t ky = 0; ky < n->kh; ++ky) {
            const int8_t *w = p->weights + co * filter + ky * taps;
            a = dot(rows[ky] + at, w, taps, a);
            b = dot(rows[ky] + at + step, w, taps, b);
        }
        out[co] = conv_output(n, p, co, a);
        second[co] = conv_output(n, p, co, b);
    }
}

static void conv_row(pmkd_stream *s, const pmkd_node *n, uint32_t o, const int8_t *image, int8_t *out)
{
    const pmkd_conv *p = (const pmkd_conv *)n->params;
    /* Zeroed once per row so that GCC's -Wmaybe-uninitialized accepts a model of 1x1 convs only
     * (PMKD_MAX_WINDOW 1), where it cannot prove kh <= 1. */
    const int8_t *rows[PMKD_MAX_WINDOW] = {0};
    int complete = 1;
    for (uint32_t ky = 0; ky < n->kh; ++ky) {
        const int32_t y = (int32_t)(o * n->sh + ky) - (int32_t)n->pad_top;
        rows[ky] = y >= 0 && y < (int32_t)n->in_h ? input_row(s, n->in[0], (uint32_t)y, image) : NULL;
        complete &= rows[ky] != NULL;
    }
    for (uint32_t ox = 0; ox < n->out_w;) {
        const int32_t x0 = (int32_t)(ox * n->sw) - (int32_t)n->pad_left;
        int8_t *pixel = out + ox * n->out_c;
        if (!complete || x0 < 0 || x0 + n->kw > n->in_w) {
            conv_edge_pixel(n, p, rows, x0, pixel);
            ox += 1;
        } else if (ox + 1 < n->out_w && x0 + n->sw + n->kw <= n->in_w) {
            conv_pixel_pair(n, p, rows, (uint32_t)x0 * n->in_c, pixel);
            ox += 2;
        } else {
            conv_pixel(n, p, rows, (uint32_t)x0 * n->in_c, pixel);
            ox += 1;
        }
    }
}

/* A pool's window ends at the input's edge, as in TFLite's pools: padding is skipped, not read. The
 * rows of output row o inside the input (returns how many), and the columns [lo, hi) of output column
 * ox inside it. */
static uint32_t pool_rows(pmkd_stream *s, const pmkd_node *n, uint32_t o, const int8_t *image, const int8_t *rows[])
{
    const int32_t y0 = (int32_t)(o * n->sh) - (int32_t)n->pad_top;
    const int32_t end = y0 + n->kh < (int32_t)n->in_h ? y0 + n->kh : (int32_t)n->in_h;
    uint32_t count = 0;
    for (int32_t y = y0 > 0 ? y0 : 0; y < end; ++y) {
        rows[count++] = input_row(s, n->in[0], (uint32_t)y, image);
    }
    return count;
}

static void pool_columns(const pmkd_node *n, uint32_t ox, uint32_t *lo, uint32_t *hi)
{
    const int32_t x0 = (int32_t)(ox * n->sw) - (int32_t)n->pad_left;
    const int32_t end = x0 + n->kw < (int32_t)n->in_w ? x0 + n->kw : (int32_t)n->in_w;
    *lo = x0 > 0 ? (uint32_t)x0 : 0u;
    *hi = (uint32_t)end;
}

static void max_pool_row(pmkd_stream *s, const pmkd_node *n, uint32_t o, const int8_t *image, int8_t *out)
{
    const int8_t *rows[PMKD_MAX_WINDOW];
    const uint32_t height = pool_rows(s, n, o, image, rows);
    for (uint32_t ox = 0; ox < n->out_w; ++ox, out += n->out_c) {
        uint32_t lo, hi;
        pool_columns(n, ox, &lo, &hi);
        for (uint32_t c = 0; c < n->out_c; ++c) {
            int32_t best = INT8_MIN;
            for (uint32_t ky = 0; ky < height; ++ky) {
                const int8_t *x = rows[ky] + lo * n->in_c + c;
                for (uint32_t kx = lo; kx < hi; ++kx, x += n->in_c) {
                    best = *x > best ? *x : best;
                }
            }
            out[c] = clamp(best, n);
        }
    }
}

/* The sum of the window's pixels over their count, rounded half away from zero (TFLite's int8
 * average; input and output share one quantisation, so there is nothing to rescale). */
static void average_pool_row(pmkd_stream *s, const pmkd_node *n, uint32_t o, const int8_t *image, int8_t *out)
{
    const int8_t *rows[PMKD_MAX_WINDOW];
    const uint32_t height = pool_rows(s, n, o, image, rows);
    for (uint32_t ox = 0; ox < n->out_w; ++ox, out += n->out_c) {
        uint32_t lo, hi;
        pool_columns(n, ox, &lo, &hi);
        const int32_t count = (int32_t)(height * (hi - lo));
        for (uint32_t c = 0; c < n->out_c; ++c) {
            int32_t sum = 0;
            for (uint32_t ky = 0; ky < height; ++ky) {
                const int8_t *x = rows[ky] + lo * n->in_c + c;
                for (uint32_t kx = lo; kx < hi; ++kx, x += n->in_c) {
                    sum += *x;
                }
            }
            out[c] = clamp((sum > 0 ? sum + count / 2 : sum - count / 2) / count, n);
        }
    }
}

/* The two operands of an ADD or MUL and their pixel strides (0 for a per-channel constant). */
static void operands(pmkd_stream *s, const pmkd_node *n, uint32_t o, const int8_t *image, const int8_t *x[2],
                     uint32_t stride[2])
{
    const pmkd_elementwise *p = (const pmkd_elementwise *)n->params;
    uint32_t next = 0;
    for (uint32_t k = 0; k < 2; ++k) {
        if (p->constant != NULL && k == p->constant_slot) {
            x[k] = p->constant;
            stride[k] = 0;
        } else {
            x[k] = input_row(s, n->in[next++], o, image);
            stride[k] = n->out_c;
        }
    }
}

/* ADD and MUL write element by element after reading it, so the output may be one of the inputs. */
static void add_row(pmkd_stream *s, const pmkd_node *n, uint32_t o, const int8_t *image, int8_t *out)
{
    const pmkd_elementwise *p = (const pmkd_elementwise *)n->params;
    const int8_t *x[2];
    uint32_t stride[2];
    operands(s, n, o, image, x, stride);
    for (uint32_t px = 0; px < n->out_w; ++px) {
        for (uint32_t c = 0; c < n->out_c; ++c) {
            const int32_t a = (x[0][px * stride[0] + c] + p->offset[0]) * (INT32_C(1) << ADD_LEFT_SHIFT);
            const int32_t b = (x[1][px * stride[1] + c] + p->offset[1]) * (INT32_C(1) << ADD_LEFT_SHIFT);
            const int32_t sum = rescale(a, p->multiplier[0], p->shift[0]) + rescale(b, p->multiplier[1], p->shift[1]);
            out[px * n->out_c + c] =
                clamp(rescale(sum, p->output_multiplier, p->output_shift) + p->output_zero_point, n);
        }
    }
}

static void mul_row(pmkd_stream *s, const pmkd_node *n, uint32_t o, const int8_t *image, int8_t *out)
{
    const pmkd_elementwise *p = (const pmkd_elementwise *)n->params;
    const int8_t *x[2];
    uint32_t stride[2];
    operands(s, n, o, image, x, stride);
    for (uint32_t px = 0; px < n->out_w; ++px) {
        for (uint32_t c = 0; c < n->out_c; ++c) {
            const int32_t a = x[0][px * stride[0] + c] + p->offset[0];
            const int32_t b = x[1][px * stride[1] + c] + p->offset[1];
            out[px * n->out_c + c] =
                clamp(rescale(a * b, p->output_multiplier, p->output_shift) + p->output_zero_point, n);
        }
    }
}

/* Adds input row `o` to the sums; after the last row, writes the requantised means. */
static void mean_row(pmkd_stream *s, const pmkd_node *n, uint32_t o, const int8_t *image)
{
    const pmkd_mean *p = (const pmkd_mean *)n->params;
    int32_t *sums = (int32_t *)(void *)((int8_t *)s->arena + p->sums);
    const int8_t *x = input_row(s, n->in[0], o, image);
    if (o == 0) {
        memset(sums, 0, n->in_c * sizeof *sums);
    }
    for (uint32_t px = 0; px < n->in_w; ++px) {
        for (uint32_t c = 0; c < n->in_c; ++c) {
            sums[c] += *x++;
        }
    }
    if (o + 1 == n->in_h) {
        int8_t *out = slot(s, n, 0);
        for (uint32_t c = 0; c < n->out_c; ++c) {
            out[c] = clamp(rescale(sums[c] - p->input_sum_offset, p->multiplier, p->shift) + p->output_zero_point, n);
        }
    }
}

static void collect_row(pmkd_stream *s, const pmkd_node *n, const int8_t *image, int8_t *out)
{
    const uint32_t bytes = (uint32_t)n->in_w * n->in_c;
    for (uint32_t r = 0; r < n->in_h; ++r) {
        memcpy(out + r * bytes, input_row(s, n->in[0], r, image), bytes);
    }
}

/* ---- Scheduling ---- */

/* Whether node i can compute its next row: every input row its window reads has been produced. */
static int ready(const pmkd_stream *s, uint16_t i)
{
    const pmkd_node *n = &pmkd_nodes[i];
    const uint32_t o = s->next[i];
    if (n->kind == PMKD_MEAN) {
        return o < n->in_h && produced(s, n->in[0]) > o;
    }
    if (o >= n->out_h) {
        return 0;
    }
    uint32_t last = o * n->sh + n->kh - 1u - n->pad_top;
    if (last >= n->in_h) {
        last = n->in_h - 1u;
    }
    for (uint32_t k = 0; k < n->inputs; ++k) {
        if (produced(s, n->in[k]) <= last) {
            return 0;
        }
    }
    return 1;
}

static void fire(pmkd_stream *s, uint16_t i, const int8_t *image)
{
    const pmkd_node *n = &pmkd_nodes[i];
    const uint32_t o = s->next[i];
    if (n->kind == PMKD_MEAN) {
        mean_row(s, n, o, image);
        s->next[i] = (pmkd_row)(o + 1);
        return;
    }
    int8_t *out = slot(s, n, o);
    switch (n->kind) {
    case PMKD_CONV:
        conv_row(s, n, o, image, out);
        break;
    case PMKD_MAX_POOL:
        max_pool_row(s, n, o, image, out);
        break;
    case PMKD_AVERAGE_POOL:
        average_pool_row(s, n, o, image, out);
        break;
    case PMKD_ADD:
        add_row(s, n, o, image, out);
        break;
    case PMKD_MUL:
        mul_row(s, n, o, image, out);
        break;
    default: /* PMKD_COLLECT */
        collect_row(s, n, image, out);
        break;
    }
    s->next[i] = next_live(n, o + 1);
}

/* Every node's cursor at the start of an image: its first live row (a MEAN counts input rows from 0). */
static void start_image(pmkd_stream *s)
{
    for (uint16_t i = 0; i < PMKD_NODE_COUNT; ++i) {
        const pmkd_node *n = &pmkd_nodes[i];
        s->next[i] = n->kind == PMKD_INPUT || n->kind == PMKD_MEAN ? 0 : next_live(n, 0);
    }
}

/* The image's row counter (node 0's) alone says where the stream is: 0 = before the first row, so a
 * zeroed stream is a reset one; the other nodes' cursors are set up when row 0 arrives. */
void pmkd_stream_reset(pmkd_stream *s)
{
    if (s != NULL) {
        s->next[0] = 0;
    }
}

/* The misuse checks are per call, a few compares against a row's worth of work; the kernels check
 * nothing. */
pmkd_status pmkd_stream_push_row(pmkd_stream *s, const int8_t *row)
{
    if (s == NULL || row == NULL) {
        return PMKD_ERROR_NULL;
    }
    const pmkd_node *image = &pmkd_nodes[0];
    const uint32_t r = s->next[0];
    if (r >= image->out_h) {
        return PMKD_ERROR_PAST_END; /* the logits stay the image's until pmkd_stream_reset */
    }
    if (r == 0) {
        start_image(s);
    }
    if (image->ring && is_live(image, r)) {
        memcpy(slot(s, image, r), row, row_bytes(image));
    }
    s->next[0] = (pmkd_row)(r + 1);
    for (;;) {
        uint16_t i = PMKD_NODE_COUNT - 1;
        while (i > 0 && !ready(s, i)) {
            --i;
        }
        if (i == 0) {
            break;
        }
        fire(s, i, row);
    }
    return r + 1 == image->out_h ? PMKD_IMAGE_COMPLETE : PMKD_OK;
}

/* The last node can finish before the last row (when no layer reads the rows after it); the logits
 * still wait for every row, so that a caller polling them mid-image never sees a result early. */
const int8_t *pmkd_stream_logits(const pmkd_stream *s)
{
    const uint16_t last = PMKD_NODE_COUNT - 1;
    if (s == NULL || s->next[0] < pmkd_nodes[0].out_h || !produced(s, last)) {
        return NULL;
    }
    return (const int8_t *)s->arena + pmkd_nodes[last].offset;
}
