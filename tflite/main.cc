// Minimal TensorFlow Lite Micro application for an exported PMKD student.
//
// Copy into your board project, next to the generated model_data.cc,
// model_data.h and model_ops.h (from `python -m pmkd_tf.export --out_dir=...`),
// and implement the board functions declared below for your sensor and board.
// Nothing here depends on the model: sizes, quantisation and ops all come
// from the generated files.
//
// Build with TFLite Micro (tensorflow/lite/micro), C++17.
//
// Logging: MicroPrintf goes to TFLM's DebugLog(). With TARGET=cortex_m_generic
// DebugLog() prints nothing until a callback is registered, so when that
// target's debug_log_callback.h is in the TFLM tree this file registers one
// that forwards every message to BoardLogWrite(). Other targets bring their
// own DebugLog() (e.g. stderr on the host) and need no BoardLogWrite().

#include <cmath>
#include <cstdint>

#include "model_data.h"
#include "model_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

#if __has_include("tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h")
#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#define PMKD_REGISTER_DEBUG_LOG 1
#endif

// Board-specific: fill `row` with camera row `y` (0 = top) as kInputWidth
// pixels of kInputChannels uint8 values (RGB888, left to right). Return false
// on a sensor error. Resize/crop to kInputHeight x kInputWidth upstream.
bool CameraReadRow(int y, uint8_t* row);

// Board-specific: wait `ms` milliseconds (e.g. HAL_Delay), used to back off
// after a failed camera read.
void BoardDelayMs(uint32_t ms);

#ifdef PMKD_REGISTER_DEBUG_LOG
// Board-specific (cortex_m_generic only): write a NUL-terminated string to
// the debug console, e.g. a blocking UART transmit.
extern "C" void BoardLogWrite(const char* text);
#endif

namespace {

// A sensor that fails this many frames in a row is treated as broken: the
// application stops instead of spinning on it. Between failures it waits
// kCameraRetryDelayMs, doubling after each one (10, 20, 40, 80 ms).
constexpr int kMaxCameraFailures = 5;
constexpr uint32_t kCameraRetryDelayMs = 10;

// TFLM keeps every tensor of the model in this one buffer.
alignas(16) uint8_t tensor_arena[kTensorArenaSize];

// A camera pixel as the model's int8 input: round(p / scale) + zero point,
// saturated. With the exported scale 1 and zero point -128 this is p - 128.
int8_t QuantizePixel(uint8_t pixel) {
  const long q = std::lround(pixel / kInputScale) + kInputZeroPoint;
  return static_cast<int8_t>(q < -128 ? -128 : (q > 127 ? 127 : q));
}

// Copies the camera image into the input tensor one row at a time, as the
// sensor delivers it: only one row of uint8 pixels is ever buffered here.
bool ReadImage(int8_t* input) {
  uint8_t row[kInputWidth * kInputChannels];
  for (int y = 0; y < kInputHeight; ++y) {
    if (!CameraReadRow(y, row)) return false;
    int8_t* dst = input + y * kInputWidth * kInputChannels;
    for (int i = 0; i < kInputWidth * kInputChannels; ++i) dst[i] = QuantizePixel(row[i]);
  }
  return true;
}

// The class with the largest int8 logit (dequantising is monotonic, so it is not needed).
int Argmax(const int8_t* logits) {
  int best = 0;
  for (int i = 1; i < kNumClasses; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

}  // namespace

int main() {
#ifdef PMKD_REGISTER_DEBUG_LOG
  RegisterDebugLogCallback(BoardLogWrite);  // before the first MicroPrintf
#endif
  tflite::InitializeTarget();

  const tflite::Model* model = tflite::GetModel(g_model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("Model schema %d, TFLM expects %d.", static_cast<int>(model->version()), TFLITE_SCHEMA_VERSION);
    return 1;
  }

  static ModelOpResolver resolver;
  if (RegisterModelOps(resolver) != kTfLiteOk) {
    MicroPrintf("Registering the model's ops failed.");
    return 1;
  }

  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kTensorArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("AllocateTensors failed: raise kTensorArenaSize in model_data.h.");
    return 1;
  }
  MicroPrintf("Arena: %d of %d bytes used.", static_cast<int>(interpreter.arena_used_bytes()), kTensorArenaSize);

  TfLiteTensor* input = interpreter.input(0);
  TfLiteTensor* output = interpreter.output(0);
  if (input->type != kTfLiteInt8 || output->type != kTfLiteInt8) {
    MicroPrintf("Expected an int8 model; export with python -m pmkd_tf.export.");
    return 1;
  }

  int camera_failures = 0;
  while (true) {
    if (!ReadImage(input->data.int8)) {
      ++camera_failures;
      if (camera_failures >= kMaxCameraFailures) {
        MicroPrintf("Camera read failed %d times in a row; stopping: check the sensor.", camera_failures);
        return 1;
      }
      const uint32_t delay_ms = kCameraRetryDelayMs << (camera_failures - 1);
      MicroPrintf("Camera read failed (%d in a row); retrying in %d ms.", camera_failures,
                  static_cast<int>(delay_ms));
      BoardDelayMs(delay_ms);
      continue;
    }
    camera_failures = 0;
    if (interpreter.Invoke() != kTfLiteOk) {
      MicroPrintf("Invoke failed.");
      return 1;
    }
    const int label = Argmax(output->data.int8);
    const float logit = (output->data.int8[label] - kOutputZeroPoint) * kOutputScale;
    MicroPrintf("%s (logit %d/1000)", kClassNames[label], static_cast<int>(logit * 1000));
  }
}
