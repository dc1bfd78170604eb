/* Minimal application for an exported PMKD student on the row-streaming C engine: no TensorFlow Lite Micro.
 *
 * The same application as main.cc (camera rows in, class out), but each camera row goes into the model
 * as soon as the sensor delivers it, so no image is ever held: the RAM is sizeof(pmkd_stream) plus one
 * camera row, one input row and the stack.
 *
 * Copy into your board project next to the generated engine (`python -m pmkd_tf.export --out_dir=...`'s c/
 * folder, a CMake and Arduino library whose src/ holds pmkd_stream.h, pmkd_stream.c, pmkd_engine.h,
 * pmkd_model.c) and implement the three board functions declared below. Nothing here depends on the
 * model: sizes and quantisation come from pmkd_stream.h. C99; needs only <stdint.h> and <stdbool.h>.
 */
#include <stdbool.h>
#include <stdint.h>

#include "pmkd_stream.h"

/* Board-specific: fill `row` with camera row `y` (0 = top) as PMKD_INPUT_WIDTH pixels of
 * PMKD_INPUT_CHANNELS uint8 values (RGB888, left to right). Return false on a sensor error. Rows come
 * in order 0, 1, ..., PMKD_INPUT_HEIGHT - 1; resize/crop to PMKD_INPUT_HEIGHT x PMKD_INPUT_WIDTH upstream. */
bool CameraReadRow(int y, uint8_t *row);

/* Board-specific: wait `ms` milliseconds (e.g. HAL_Delay), to back off after a failed camera read. */
void BoardDelayMs(uint32_t ms);

/* Board-specific: write a NUL-terminated string to the debug console (e.g. a blocking UART transmit). */
void BoardLogWrite(const char *text);

#define ROW_BYTES (PMKD_INPUT_WIDTH * PMKD_INPUT_CHANNELS)

/* A sensor that fails this many frames in a row is treated as broken: the application stops instead of
 * spinning on it. Between failures it waits CAMERA_RETRY_DELAY_MS, doubling each time (10, 20, 40, 80 ms). */
#define MAX_CAMERA_FAILURES 5
#define CAMERA_RETRY_DELAY_MS 10u

static pmkd_stream stream; /* all of the model's mutable state */
static uint8_t camera_row[ROW_BYTES];
static int8_t input_row[ROW_BYTES];

/* Camera pixel -> the model's int8 input, for all 256 pixel values: round(p / scale) + zero point,
 * saturated, rounding half away from zero as the exporter's quantiser does. The float division runs
 * once, at start-up; with the exported scale 1 and zero point -128 the table is p - 128. */
static int8_t pixel_to_input[256];

static void build_pixel_table(void)
{
    for (int p = 0; p < 256; ++p) {
        const long q = (long)((float)p / PMKD_INPUT_SCALE + 0.5f) + PMKD_INPUT_ZERO_POINT;
        pixel_to_input[p] = (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
    }
}

/* Logs `text` followed by `value` in decimal and a newline (no printf needed). */
static void log_value(const char *text, long value)
{
    char digits[24];
    int at = (int)sizeof digits - 1;
    const bool negative = value < 0;
    unsigned long magnitude = negative ? 0ul - (unsigned long)value : (unsigned long)value;
    digits[at--] = '\0';
    digits[at--] = '\n';
    do {
        digits[at--] = (char)('0' + magnitude % 10u);
        magnitude /= 10u;
    } while (magnitude != 0u);
    if (negative) {
        digits[at--] = '-';
    }
    BoardLogWrite(text);
    BoardLogWrite(&digits[at + 1]);
}

typedef enum { FRAME_DONE, FRAME_CAMERA_FAILED, FRAME_ENGINE_FAILED } frame_result;

/* Streams one camera image through the engine, row by row as the sensor delivers it. On a sensor error
 * the partly pushed image is dropped: the next frame starts with pmkd_stream_reset. The engine answers
 * PMKD_OK to every row but the last and PMKD_IMAGE_COMPLETE to the last; anything else means that other
 * code pushed into, reset or overwrote the stream, which no retry fixes. */
static frame_result stream_image(void)
{
    pmkd_stream_reset(&stream);
    for (int y = 0; y < PMKD_INPUT_HEIGHT; ++y) {
        if (!CameraReadRow(y, camera_row)) {
            return FRAME_CAMERA_FAILED;
        }
        for (int i = 0; i < ROW_BYTES; ++i) {
            input_row[i] = pixel_to_input[camera_row[i]];
        }
        const pmkd_status status = pmkd_stream_push_row(&stream, input_row);
        if (status != (y == PMKD_INPUT_HEIGHT - 1 ? PMKD_IMAGE_COMPLETE : PMKD_OK)) {
            log_value("Engine returned an unexpected status; stopping. pmkd_stream_push_row: ", status);
            return FRAME_ENGINE_FAILED;
        }
    }
    return FRAME_DONE;
}

/* The class with the largest int8 logit (dequantising is monotonic, so it is not needed). */
static int argmax(const int8_t *logits)
{
    int best = 0;
    for (int i = 1; i < PMKD_NUM_CLASSES; ++i) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    return best;
}

int main(void)
{
    build_pixel_table();
    log_value("pmkd_stream state bytes: ", (long)sizeof(pmkd_stream));
    int camera_failures = 0;
    for (;;) {
        const frame_result frame = stream_image();
        if (frame == FRAME_ENGINE_FAILED) {
            return 2;
        }
        if (frame == FRAME_CAMERA_FAILED) {
            ++camera_failures;
            if (camera_failures >= MAX_CAMERA_FAILURES) {
                log_value("Camera read failed too often in a row; stopping: check the sensor. Failures: ",
                          camera_failures);
                return 1;
            }
            const uint32_t delay_ms = CAMERA_RETRY_DELAY_MS << (camera_failures - 1);
            log_value("Camera read failed; retrying in ms: ", (long)delay_ms);
            BoardDelayMs(delay_ms);
            continue;
        }
        camera_failures = 0;
        const int8_t *logits = pmkd_stream_logits(&stream); /* not NULL: the last push was IMAGE_COMPLETE */
        const int label = argmax(logits);
        /* logit = (q - PMKD_OUTPUT_ZERO_POINT) * PMKD_OUTPUT_SCALE, if the value itself is wanted. */
        log_value("class ", label);
    }
}
