/* Host check of a generated C engine's API contract under misuse, as pmkd_stream.h states it.
 *
 *     api_check
 *
 * Feeds two made-up images (the logits' values are the bit-exact check's business, not this one's)
 * through the three calls, correctly and not: NULL arguments, logits asked for too early, rows past
 * the end, resets before, during and after an image, a zeroed stream never reset. Prints a "FAIL ..."
 * line on stderr for every broken promise, then "checks N failed M" on stdout; exits with 0 only if
 * M is 0. Each row is copied into one buffer that is scribbled over after every push, as host_main.c
 * does, so a row the engine kept a pointer to would show.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "pmkd_stream.h"

#define ROW_BYTES ((size_t)PMKD_INPUT_WIDTH * PMKD_INPUT_CHANNELS)
#define SCRIBBLE 0x5A
#define NO_NULL_ROW PMKD_INPUT_HEIGHT /* push_image's null_at: no NULL row */

static unsigned checks, failures;

static void check(int holds, const char *promise)
{
    ++checks;
    if (!holds) {
        ++failures;
        fprintf(stderr, "FAIL %s\n", promise);
    }
}

static int8_t image_a[PMKD_INPUT_HEIGHT][ROW_BYTES], image_b[PMKD_INPUT_HEIGHT][ROW_BYTES];
static int8_t row[ROW_BYTES];

/* Pseudo-random int8 pixels (a 32-bit LCG's high byte): different for each seed. */
static void make_image(int8_t image[][ROW_BYTES], uint32_t seed)
{
    for (size_t r = 0; r < PMKD_INPUT_HEIGHT; ++r) {
        for (size_t i = 0; i < ROW_BYTES; ++i) {
            seed = seed * 1664525u + 1013904223u;
            image[r][i] = (int8_t)((int32_t)(seed >> 24) - 128);
        }
    }
}

static pmkd_status push(pmkd_stream *s, const int8_t *source)
{
    memcpy(row, source, ROW_BYTES);
    const pmkd_status status = pmkd_stream_push_row(s, row);
    memset(row, SCRIBBLE, ROW_BYTES);
    return status;
}

/* Pushes every row of `image`, checking the status of each and that the logits stay NULL until the
 * last; with `null_at` below PMKD_INPUT_HEIGHT, a NULL row is pushed before row `null_at` and must be
 * refused without counting as a row. Returns the logits after the last row. */
static const int8_t *push_image(pmkd_stream *s, int8_t image[][ROW_BYTES], size_t null_at)
{
    unsigned early_complete = 0, missed_ok = 0, early_logits = 0;
    for (size_t r = 0; r < PMKD_INPUT_HEIGHT; ++r) {
        if (r == null_at) {
            check(pmkd_stream_push_row(s, NULL) == PMKD_ERROR_NULL, "a NULL row mid-image is PMKD_ERROR_NULL");
        }
        const pmkd_status status = push(s, image[r]);
        if (r + 1 < PMKD_INPUT_HEIGHT) {
            early_complete += status == PMKD_IMAGE_COMPLETE;
            missed_ok += status != PMKD_OK;
            early_logits += pmkd_stream_logits(s) != NULL;
        } else {
            check(status == PMKD_IMAGE_COMPLETE, "the last row is PMKD_IMAGE_COMPLETE");
        }
    }
    check(early_complete == 0, "no row before the last is PMKD_IMAGE_COMPLETE");
    check(missed_ok == 0, "every row before the last is PMKD_OK");
    check(early_logits == 0, "the logits are NULL mid-image");
    return pmkd_stream_logits(s);
}

static int same_logits(const int8_t *logits, const int8_t *expected)
{
    return logits != NULL && memcmp(logits, expected, PMKD_NUM_CLASSES) == 0;
}

static pmkd_stream zeroed; /* a static: all zero bytes, never reset */
static pmkd_stream stream;

int main(void)
{
    int8_t logits_a[PMKD_NUM_CLASSES], logits_b[PMKD_NUM_CLASSES];
    make_image(image_a, 1u);
    make_image(image_b, 2u);

    /* NULL stream: every call refuses it without touching memory. */
    pmkd_stream_reset(NULL);
    check(pmkd_stream_push_row(NULL, image_a[0]) == PMKD_ERROR_NULL, "a NULL stream is PMKD_ERROR_NULL");
    check(pmkd_stream_push_row(NULL, NULL) == PMKD_ERROR_NULL, "a NULL stream and row are PMKD_ERROR_NULL");
    check(pmkd_stream_logits(NULL) == NULL, "the logits of a NULL stream are NULL");

    /* A zeroed stream is a reset one: nothing before the first row, then a whole image. */
    check(pmkd_stream_logits(&zeroed) == NULL, "the logits are NULL before the first row (zeroed stream)");
    check(pmkd_stream_push_row(&zeroed, NULL) == PMKD_ERROR_NULL, "a NULL first row is PMKD_ERROR_NULL");
    const int8_t *logits = push_image(&zeroed, image_a, NO_NULL_ROW);
    check(logits != NULL, "the logits are there after the last row");
    if (logits == NULL) {
        printf("checks %u failed %u\n", checks, failures);
        return 1; /* nothing below can be checked without image A's logits */
    }
    memcpy(logits_a, logits, PMKD_NUM_CLASSES);

    /* Past the end: refused, the image's logits untouched, however many rows come. */
    check(push(&zeroed, image_b[0]) == PMKD_ERROR_PAST_END, "a row past the end is PMKD_ERROR_PAST_END");
    check(push(&zeroed, image_b[1]) == PMKD_ERROR_PAST_END, "a second row past the end is PMKD_ERROR_PAST_END");
    check(pmkd_stream_push_row(&zeroed, NULL) == PMKD_ERROR_NULL, "a NULL row past the end is PMKD_ERROR_NULL");
    check(pmkd_stream_logits(&zeroed) == logits, "rows past the end leave the logits where they were");
    check(same_logits(pmkd_stream_logits(&zeroed), logits_a), "rows past the end leave the logits unchanged");

    /* Reset: no logits until the next image's last row; the same rows give the same logits. */
    pmkd_stream_reset(&zeroed);
    check(pmkd_stream_logits(&zeroed) == NULL, "the logits are NULL after a reset");
    logits = push_image(&zeroed, image_b, NO_NULL_ROW);
    check(logits != NULL, "a second image has logits after its last row");
    if (logits != NULL) {
        memcpy(logits_b, logits, PMKD_NUM_CLASSES);
    }
    /* Otherwise "the same logits" below would prove nothing. */
    check(memcmp(logits_a, logits_b, PMKD_NUM_CLASSES) != 0, "the two images have different logits");
    pmkd_stream_reset(&zeroed);
    check(same_logits(push_image(&zeroed, image_a, NO_NULL_ROW), logits_a),
          "image A again gives image A's logits");

    /* A reset mid-image drops the partial image. */
    pmkd_stream_reset(&zeroed);
    unsigned missed_ok = 0;
    for (size_t r = 0; r < PMKD_INPUT_HEIGHT / 2; ++r) {
        missed_ok += push(&zeroed, image_b[r]) != PMKD_OK;
    }
    check(missed_ok == 0, "the first half of an image after a reset is PMKD_OK");
    pmkd_stream_reset(&zeroed);
    check(pmkd_stream_logits(&zeroed) == NULL, "the logits are NULL after a reset mid-image");
    check(same_logits(push_image(&zeroed, image_a, NO_NULL_ROW), logits_a),
          "after a reset mid-image, image A's logits");

    /* A NULL row mid-image changes nothing: the image goes on and completes on its own last row. */
    pmkd_stream_reset(&zeroed);
    check(same_logits(push_image(&zeroed, image_a, PMKD_INPUT_HEIGHT / 2), logits_a),
          "a NULL row mid-image leaves image A's logits");

    /* A stream full of garbage, once reset, is as good as a zeroed one. */
    memset(&stream, 0xA5, sizeof stream);
    pmkd_stream_reset(&stream);
    check(pmkd_stream_logits(&stream) == NULL, "the logits are NULL after resetting a garbage stream");
    check(same_logits(push_image(&stream, image_b, NO_NULL_ROW), logits_b),
          "a reset garbage stream gives image B's logits");

    printf("checks %u failed %u\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
