/* What the startup code and the linker script share with the test program on the Cortex-M4. */
#ifndef PMKD_TARGET_H
#define PMKD_TARGET_H

#include <stdint.h>

/* Word written over the whole stack before main(): a word that still holds it was never used. */
#define STACK_PAINT 0xC0FFEE5Au

/* Defined by mps2_an386.ld. The stack is [__stack_bottom, __stack_top) and grows down. */
extern uint32_t __stack_bottom[];
extern uint32_t __stack_top[];

/* Exit codes of the test program, read back by pmkd_tf/export/cstream/cortex_m4.py. */
enum {
    EXIT_OK = 0,
    EXIT_IO = 1,        /* a host file could not be opened, read or written, or has the wrong size */
    EXIT_NO_LOGITS = 2, /* pmkd_stream_logits returned NULL after the last row */
    EXIT_FAULT = 3,     /* a CPU fault (HardFault, BusFault, ...) */
    EXIT_STACK = 4,     /* the stack reached its lowest word: raise __stack_size */
    EXIT_STATUS = 5,    /* pmkd_stream_push_row did not return PMKD_OK, or PMKD_IMAGE_COMPLETE for the last row */
};

#endif /* PMKD_TARGET_H */
