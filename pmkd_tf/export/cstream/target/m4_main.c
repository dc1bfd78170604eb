/* The Cortex-M4 check of a generated C engine: images in, logits out, over semihosting.
 *
 * Run by pmkd_tf/export/cstream/cortex_m4.py under
 * `qemu-system-arm -M mps2-an386 -semihosting-config enable=on,target=native`, in a directory
 * holding `images.bin` (N images of PMKD_INPUT_HEIGHT x PMKD_INPUT_WIDTH x PMKD_INPUT_CHANNELS
 * int8, rows top to bottom, channels interleaved, quantised as model_int8.tflite's input). For each
 * image it reads one row at a time, as a camera delivers them, pushes it through the engine and
 * appends the PMKD_NUM_CLASSES int8 logits to `logits.bin`. At the end it writes `stats.txt`
 * (one "name value" pair a line: images, state_bytes, stack_bytes, peak_stack_bytes,
 * program_stack_bytes) and exits with 0, or prints why and exits with a code from target.h: among
 * them, a push status other than PMKD_OK for every row but the last and PMKD_IMAGE_COMPLETE for the
 * last, or NULL logits after it.
 *
 * Only the engine's calls run between m4_count_on() and m4_count_off(): the instruction-counting
 * QEMU plugin (insn_count.c) counts only there, so its total excludes startup and file I/O.
 */
#include <stddef.h>
#include <stdint.h>

#include "pmkd_stream.h"
#include "semihost.h"
#include "target.h"

#define ROW_BYTES (PMKD_INPUT_WIDTH * PMKD_INPUT_CHANNELS)
#define IMAGE_BYTES ((long)PMKD_INPUT_HEIGHT * ROW_BYTES)

static pmkd_stream stream;
static int8_t row[ROW_BYTES];

/* Whether the engine is running; written by the two markers so that they differ (identical
 * functions could be folded into one address) and a debugger can watch the window. */
volatile int m4_counting;

void m4_count_on(void) __attribute__((noinline, used));
void m4_count_off(void) __attribute__((noinline, used));

void m4_count_on(void) { m4_counting = 1; }
void m4_count_off(void) { m4_counting = 0; }

static int fail(const char *message, int code)
{
    semihost_print("m4_main: ");
    semihost_print(message);
    semihost_print("\n");
    return code;
}

/* Appends "name value\n" to `line`, which must hold at least 64 bytes. */
static size_t format_stat(char *line, const char *name, unsigned long value)
{
    size_t at = 0;
    while (*name != '\0') {
        line[at++] = *name++;
    }
    line[at++] = ' ';
    char digits[12];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    while (count > 0) {
        line[at++] = digits[--count];
    }
    line[at++] = '\n';
    return at;
}

/* The lowest stack word that lost its paint: everything from there up has been used. */
static const uint32_t *lowest_used_stack_word(void)
{
    const uint32_t *word = __stack_bottom;
    while (word < __stack_top && *word == STACK_PAINT) {
        ++word;
    }
    return word;
}

int main(void)
{
    const int images = semihost_open("images.bin", SEMIHOST_MODE_READ_BINARY);
    if (images < 0) {
        return fail("cannot open images.bin", EXIT_IO);
    }
    const long length = semihost_flen(images);
    if (length <= 0 || length % IMAGE_BYTES != 0) {
        return fail("images.bin is empty or not a whole number of images of this model's input shape", EXIT_IO);
    }
    const long count = length / IMAGE_BYTES;
    const int logits_file = semihost_open("logits.bin", SEMIHOST_MODE_WRITE_BINARY);
    if (logits_file < 0) {
        return fail("cannot create logits.bin", EXIT_IO);
    }

    /* main's stack pointer while it calls the engine: the stack below it is the engine's. */
    uintptr_t main_sp;
    __asm__ volatile("mov %0, sp" : "=r"(main_sp));

    for (long image = 0; image < count; ++image) {
        const int8_t *logits = NULL;
        for (int r = 0; r < PMKD_INPUT_HEIGHT; ++r) {
            if (semihost_read(images, row, ROW_BYTES) != ROW_BYTES) {
                return fail("short read from images.bin", EXIT_IO);
            }
            m4_count_on();
            if (r == 0) {
                pmkd_stream_reset(&stream);
            }
            const pmkd_status status = pmkd_stream_push_row(&stream, row);
            if (r == PMKD_INPUT_HEIGHT - 1) {
                logits = pmkd_stream_logits(&stream);
            }
            m4_count_off();
            if (status != (r == PMKD_INPUT_HEIGHT - 1 ? PMKD_IMAGE_COMPLETE : PMKD_OK)) {
                return fail("pmkd_stream_push_row returned an unexpected status", EXIT_STATUS);
            }
        }
        if (logits == NULL) {
            return fail("pmkd_stream_logits returned NULL after the last row", EXIT_NO_LOGITS);
        }
        if (semihost_write(logits_file, logits, PMKD_NUM_CLASSES) != PMKD_NUM_CLASSES) {
            return fail("cannot write logits.bin", EXIT_IO);
        }
    }
    semihost_close(images);
    semihost_close(logits_file);

    const uint32_t *lowest = lowest_used_stack_word();
    if (lowest == __stack_bottom) {
        return fail("the stack overflowed its lowest word: link with a larger -Wl,--defsym=__stack_size", EXIT_STACK);
    }
    char text[5 * 64];
    size_t at = 0;
    at += format_stat(text + at, "images", (unsigned long)count);
    at += format_stat(text + at, "state_bytes", (unsigned long)sizeof(pmkd_stream));
    at += format_stat(text + at, "stack_bytes", (unsigned long)((uintptr_t)__stack_top - (uintptr_t)__stack_bottom));
    at += format_stat(text + at, "peak_stack_bytes", (unsigned long)(main_sp - (uintptr_t)lowest));
    at += format_stat(text + at, "program_stack_bytes", (unsigned long)((uintptr_t)__stack_top - (uintptr_t)lowest));
    const int stats = semihost_open("stats.txt", SEMIHOST_MODE_WRITE_BINARY);
    if (stats < 0 || semihost_write(stats, text, at) != at) {
        return fail("cannot write stats.txt", EXIT_IO);
    }
    semihost_close(stats);
    return EXIT_OK;
}
