/* Reset and fault handling for the Cortex-M4 of `qemu-system-arm -M mps2-an386`.
 *
 * The project's own startup instead of CMSIS or newlib's crt0, so the check
 * depends only on the compiler: the vector table, a reset handler that
 * copies .data from flash, zeroes .bss and paints the stack (for the
 * high-water mark m4_main.c reads back), and a fault handler that reports
 * the faulting PC over semihosting and exits, so a crash ends QEMU with an
 * error instead of hanging it.
 */
#include <stdint.h>

#include "semihost.h"
#include "target.h"

/* Defined by mps2_an386.ld. */
extern uint32_t __data_load[];
extern uint32_t __data_start[];
extern uint32_t __data_end[];
extern uint32_t __bss_start[];
extern uint32_t __bss_end[];

int main(void);
void reset_handler(void) __attribute__((noreturn));
void fault_handler(void) __attribute__((naked));
void fault_report(const uint32_t *frame, uint32_t exception) __attribute__((noreturn, used));

static void copy_words(uint32_t *to, const uint32_t *from, const uint32_t *end)
    __attribute__((optimize("no-tree-loop-distribute-patterns")));
static void fill_words(uint32_t *to, const uint32_t *end, uint32_t value)
    __attribute__((optimize("no-tree-loop-distribute-patterns")));

/* Plain loops, never turned into memcpy/memset calls: the C library is not set up yet. */
static void copy_words(uint32_t *to, const uint32_t *from, const uint32_t *end)
{
    while (to < end) {
        *to++ = *from++;
    }
}

static void fill_words(uint32_t *to, const uint32_t *end, uint32_t value)
{
    while (to < end) {
        *to++ = value;
    }
}

/* The 16 system exception vectors; no peripheral interrupt is enabled, so no IRQ vectors follow. */
__attribute__((section(".vectors"), used)) static const uintptr_t vectors[16] = {
    (uintptr_t)__stack_top,    /* initial main stack pointer */
    (uintptr_t)reset_handler,  /* Reset */
    (uintptr_t)fault_handler,  /* NMI */
    (uintptr_t)fault_handler,  /* HardFault */
    (uintptr_t)fault_handler,  /* MemManage */
    (uintptr_t)fault_handler,  /* BusFault */
    (uintptr_t)fault_handler,  /* UsageFault */
    0, 0, 0, 0,                /* reserved */
    (uintptr_t)fault_handler,  /* SVCall */
    (uintptr_t)fault_handler,  /* DebugMonitor */
    0,                         /* reserved */
    (uintptr_t)fault_handler,  /* PendSV */
    (uintptr_t)fault_handler,  /* SysTick */
};

void reset_handler(void)
{
    copy_words(__data_start, __data_load, __data_end);
    fill_words(__bss_start, __bss_end, 0u);
    /* Paint the stack below this function's frame, 64 bytes clear of it (fill_words's own frame, if
     * it has one, lies there); whatever main() and the model use overwrites the paint. */
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    fill_words(__stack_bottom, sp - 16, STACK_PAINT);
    semihost_exit(main());
}

/* Hand the exception frame the CPU pushed (on the main stack: nothing here uses the process stack)
 * and the exception number to fault_report. */
void fault_handler(void)
{
    __asm__ volatile(
        "mrs r0, msp\n"
        "mrs r1, ipsr\n"
        "b fault_report\n");
}

static void print_hex(const char *label, uint32_t value)
{
    char text[20];
    int at = 0;
    while (*label != '\0') {
        text[at++] = *label++;
    }
    for (int shift = 28; shift >= 0; shift -= 4) {
        text[at++] = "0123456789abcdef"[(value >> shift) & 0xFu];
    }
    text[at] = '\0';
    semihost_print(text);
}

void fault_report(const uint32_t *frame, uint32_t exception)
{
    semihost_print("FAULT: exception ");
    print_hex("0x", exception);
    print_hex(" at pc 0x", frame[6]);
    semihost_print("\n");
    semihost_exit(EXIT_FAULT);
}
