/* Arm semihosting calls over `bkpt 0xAB` (see semihost.h). */
#include "semihost.h"

#include <stdint.h>

enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITE0 = 0x04,
    SYS_WRITE = 0x05,
    SYS_READ = 0x06,
    SYS_FLEN = 0x0C,
    SYS_EXIT_EXTENDED = 0x20,
};

/* Reason code for SYS_EXIT_EXTENDED: the application exited normally, with a status. */
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

/* One semihosting call: operation in r0, pointer to its argument block in r1, result back in r0. */
static uintptr_t semihost_call(uintptr_t operation, const void *arguments)
{
    register uintptr_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = arguments;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static size_t text_length(const char *text)
{
    size_t length = 0;
    while (text[length] != '\0') {
        ++length;
    }
    return length;
}

int semihost_open(const char *path, int mode)
{
    const uintptr_t arguments[3] = {(uintptr_t)path, (uintptr_t)mode, text_length(path)};
    return (int)semihost_call(SYS_OPEN, arguments);
}

int semihost_close(int handle)
{
    const uintptr_t arguments[1] = {(uintptr_t)handle};
    return (int)semihost_call(SYS_CLOSE, arguments);
}

long semihost_flen(int handle)
{
    const uintptr_t arguments[1] = {(uintptr_t)handle};
    return (long)semihost_call(SYS_FLEN, arguments);
}

size_t semihost_read(int handle, void *buffer, size_t length)
{
    const uintptr_t arguments[3] = {(uintptr_t)handle, (uintptr_t)buffer, length};
    /* SYS_READ returns the number of bytes NOT read. */
    const uintptr_t left = semihost_call(SYS_READ, arguments);
    return left > length ? 0 : length - left;
}

size_t semihost_write(int handle, const void *buffer, size_t length)
{
    const uintptr_t arguments[3] = {(uintptr_t)handle, (uintptr_t)buffer, length};
    /* SYS_WRITE returns the number of bytes NOT written. */
    const uintptr_t left = semihost_call(SYS_WRITE, arguments);
    return left > length ? 0 : length - left;
}

void semihost_print(const char *text)
{
    semihost_call(SYS_WRITE0, text);
}

void semihost_exit(int code)
{
    const uintptr_t arguments[2] = {ADP_STOPPED_APPLICATION_EXIT, (uintptr_t)code};
    semihost_call(SYS_EXIT_EXTENDED, arguments);
    for (;;) {
        /* Not reached: QEMU exits. Spin if a debugger ignores the call. */
    }
}
