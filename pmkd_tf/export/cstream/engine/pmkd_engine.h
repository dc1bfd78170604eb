/* The C engine's private view of a model: the layout of the tables in pmkd_model.c.
 *
 * Fixed code, copied verbatim next to every generated model. pmkd_model.c (generated) fills these
 * tables; pmkd_stream.c (fixed) runs them. Nothing here is mutable: all of it lives in flash.
 */
#ifndef PMKD_ENGINE_H
#define PMKD_ENGINE_H

#include <stdint.h>

#include "pmkd_stream.h"

/* What a node does with its input rows (see pmkd_stream.c). */
enum pmkd_kind {
    PMKD_INPUT,        /* node 0: the camera rows */
    PMKD_CONV,         /* CONV_2D, per-channel int8 */
    PMKD_MAX_POOL,     /* MAX_POOL_2D, VALID or SAME (padding ignored) */
    PMKD_AVERAGE_POOL, /* AVERAGE_POOL_2D, likewise: the mean of the pixels inside the input */
    PMKD_ADD,          /* ADD of two maps, or of a map and a per-channel constant */
    PMKD_MUL,          /* MUL, likewise */
    PMKD_MEAN,         /* MEAN over H and W: running int32 sums per channel */
    PMKD_COLLECT       /* RESHAPE of a multi-row map into one row */
};

/* CONV_2D. weights: [out_c][kh][kw * in_c], TFLite's OHWI order, so that one kernel row of one output
 * channel is contiguous, as is the window it multiplies in an NHWC input row. bias: TFLite's bias minus
 * input_zero_point * (sum of the channel's weights), so that the inner loop multiplies raw int8 inputs
 * and a padding pixel is the input zero point. */
typedef struct {
    const int8_t *weights;
    const int32_t *bias;
    const int32_t *multiplier;   /* per output channel, Q31 */
    const int8_t *shift;         /* per output channel, TFLite's convention: > 0 is a left shift */
    int32_t input_zero_point;
    int32_t output_zero_point;
} pmkd_conv;

/* ADD and MUL. offset: -zero point of each input. ADD rescales each input (after << 20) by
 * multiplier/shift, MUL uses only the output multiplier. constant: NULL, or in_c values broadcast over
 * every pixel in place of input `constant_slot`. */
typedef struct {
    const int8_t *constant;
    int32_t offset[2];
    int32_t multiplier[2];
    int32_t output_multiplier;
    int32_t output_zero_point;
    int8_t shift[2];
    int8_t output_shift;
    uint8_t constant_slot;
} pmkd_elementwise;

/* MEAN: output = sum * multiplier (shift) - input_sum_offset (zero point * pixels) + output zero point. */
typedef struct {
    uint32_t sums;               /* arena byte offset of in_c int32 sums (4-aligned) */
    int32_t multiplier;
    int32_t input_sum_offset;
    int32_t output_zero_point;
    int8_t shift;
} pmkd_mean;

/* One node. Output row o reads input rows o * sh - pad_top + [0, kh) (outside the input: padding) and
 * input columns x * sw - pad_left + [0, kw) for output column x. Its output rows live in a ring of
 * `ring` rows at arena byte `offset` (row r in slot r % ring); ring 0 (the image only) means the
 * caller's row is read in place. live: bit r set = output row r is computed (rows nothing reads are
 * skipped). */
typedef struct {
    const uint8_t *live;
    const void *params;          /* pmkd_conv, pmkd_elementwise or pmkd_mean, by kind; NULL otherwise */
    uint32_t offset;
    uint16_t in[2];              /* producing nodes of the activation inputs */
    uint16_t in_h, in_w, in_c, out_h, out_w, out_c;
    uint16_t kh, kw, sh, sw, pad_top, pad_left;
    uint16_t ring;
    uint8_t kind;
    uint8_t inputs;              /* 1, or 2 for an ADD or MUL of two maps */
    int8_t act_min, act_max;     /* output clamp: the fused activation */
} pmkd_node;

extern const pmkd_node pmkd_nodes[PMKD_NODE_COUNT];

#endif /* PMKD_ENGINE_H */
