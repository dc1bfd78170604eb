/* Host test driver of a generated C engine: int8 images in, int8 logits out, RAM and stack measured.
 *
 *     host_main IMAGES LOGITS
 *
 * IMAGES holds N images of PMKD_INPUT_HEIGHT x PMKD_INPUT_WIDTH x PMKD_INPUT_CHANNELS int8 (rows top to
 * bottom, channels interleaved, quantised as model_int8.tflite's input); LOGITS receives N x
 * PMKD_NUM_CLASSES int8. On success it prints "images N", "state_bytes N" (sizeof(pmkd_stream)) and
 * "peak_stack_bytes N" lines and exits with 0; otherwise it prints why on stderr and exits with 1. A
 * status other than the API's (PMKD_OK for every row but the last, PMKD_IMAGE_COMPLETE for the last)
 * or NULL logits after the last row is such a failure.
 *
 * Each row is copied into one buffer that is scribbled over after every push, as a camera driver
 * would reuse it, so an engine that kept a pointer to a row would fail here. The inferences run on a
 * thread whose stack this driver allocated and painted: afterwards, the deepest byte that lost its
 * paint, measured from the thread function's frame, is the engine's peak stack. (POSIX threads are
 * used by this driver only; the engine itself is plain C99.)
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pmkd_stream.h"

#define ROW_BYTES ((size_t)PMKD_INPUT_WIDTH * PMKD_INPUT_CHANNELS)
#define IMAGE_BYTES (ROW_BYTES * PMKD_INPUT_HEIGHT)
#define STACK_BYTES ((size_t)256 * 1024)
#define PAINT 0xA5u
#define SCRIBBLE 0x5A

typedef struct {
    const int8_t *images;
    int8_t *logits;
    size_t count;
    uintptr_t frame; /* an address in the thread function's frame: the engine's stack starts below it */
    char error[160]; /* why the inferences stopped early; empty if they all ran */
} job;

static pmkd_stream stream;
static int8_t row[ROW_BYTES];

static void *stop(job *work, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(work->error, sizeof work->error, format, arguments);
    va_end(arguments);
    return NULL;
}

static void *infer(void *argument)
{
    job *work = argument;
    volatile char marker = 0;
    work->frame = (uintptr_t)&marker;
    for (size_t i = 0; i < work->count; ++i) {
        pmkd_stream_reset(&stream);
        for (size_t r = 0; r < PMKD_INPUT_HEIGHT; ++r) {
            memcpy(row, work->images + i * IMAGE_BYTES + r * ROW_BYTES, ROW_BYTES);
            const pmkd_status status = pmkd_stream_push_row(&stream, row);
            memset(row, SCRIBBLE, ROW_BYTES);
            const pmkd_status expected = r + 1 == PMKD_INPUT_HEIGHT ? PMKD_IMAGE_COMPLETE : PMKD_OK;
            if (status != expected) {
                return stop(work, "pmkd_stream_push_row returned status %d, not %d, for row %zu of image %zu",
                            (int)status, (int)expected, r, i);
            }
        }
        const int8_t *logits = pmkd_stream_logits(&stream);
        if (logits == NULL) {
            return stop(work, "pmkd_stream_logits returned NULL after the last row of image %zu", i);
        }
        memcpy(work->logits + i * PMKD_NUM_CLASSES, logits, PMKD_NUM_CLASSES);
    }
    return NULL;
}

static int fail(const char *what, const char *path)
{
    fprintf(stderr, "host_main: %s%s%s\n", what, path ? ": " : "", path ? path : "");
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        return fail("usage: host_main IMAGES LOGITS", NULL);
    }
    FILE *in = fopen(argv[1], "rb");
    if (in == NULL) {
        return fail("cannot open", argv[1]);
    }
    fseek(in, 0, SEEK_END);
    const long length = ftell(in);
    rewind(in);
    if (length <= 0 || (size_t)length % IMAGE_BYTES != 0) {
        fclose(in);
        return fail("not a whole number of images of this model's input shape", argv[1]);
    }
    job work = {NULL, NULL, (size_t)length / IMAGE_BYTES, 0, ""};
    int8_t *images = malloc((size_t)length);
    work.logits = malloc(work.count * PMKD_NUM_CLASSES);
    unsigned char *stack = NULL;
    if (images == NULL || work.logits == NULL || posix_memalign((void **)&stack, 4096, STACK_BYTES) != 0) {
        fclose(in);
        return fail("out of memory", NULL);
    }
    const size_t read = fread(images, 1, (size_t)length, in);
    fclose(in);
    if (read != (size_t)length) {
        return fail("short read", argv[1]);
    }
    work.images = images;

    memset(stack, PAINT, STACK_BYTES);
    pthread_attr_t attributes;
    pthread_t thread;
    if (pthread_attr_init(&attributes) != 0 || pthread_attr_setstack(&attributes, stack, STACK_BYTES) != 0 ||
        pthread_create(&thread, &attributes, infer, &work) != 0 || pthread_join(thread, NULL) != 0) {
        return fail("cannot run the inference thread", NULL);
    }
    if (work.error[0] != '\0') {
        return fail(work.error, NULL);
    }
    size_t lowest = 0;
    while (lowest < STACK_BYTES && stack[lowest] == PAINT) {
        ++lowest;
    }
    if (lowest == 0) {
        return fail("the inference overflowed its stack", NULL);
    }

    FILE *out = fopen(argv[2], "wb");
    if (out == NULL || fwrite(work.logits, 1, work.count * PMKD_NUM_CLASSES, out) != work.count * PMKD_NUM_CLASSES ||
        fclose(out) != 0) {
        return fail("cannot write", argv[2]);
    }
    printf("images %zu\nstate_bytes %zu\npeak_stack_bytes %lu\n", work.count, sizeof(pmkd_stream),
           (unsigned long)(work.frame - (uintptr_t)(stack + lowest)));
    free(stack);
    free(work.logits);
    free(images);
    return 0;
}
