/* Arm semihosting for the Cortex-M check: the host's files and exit code, reached through `bkpt 0xAB`.
 *
 * Under `qemu-system-arm -semihosting-config enable=on,target=native` QEMU
 * itself services these calls, so the test program reads its images from, and
 * writes its logits to, ordinary files in QEMU's working directory and hands
 * its exit code back to the process that launched QEMU. Only the handful of
 * operations the check needs are wrapped (Arm "Semihosting for AArch32 and
 * AArch64", version 2.0).
 */
#ifndef PMKD_SEMIHOST_H
#define PMKD_SEMIHOST_H

#include <stddef.h>

/* SYS_OPEN modes (the fopen() mode strings they stand for). */
#define SEMIHOST_MODE_READ_BINARY 1  /* "rb" */
#define SEMIHOST_MODE_WRITE_BINARY 5 /* "wb" */

/* A host file handle, or -1 if the host could not open `path`. */
int semihost_open(const char *path, int mode);
/* 0 on success, -1 on failure. */
int semihost_close(int handle);
/* The file's length in bytes, or -1. */
long semihost_flen(int handle);
/* Reads up to `length` bytes; returns how many were read (fewer at end of file or on error). */
size_t semihost_read(int handle, void *buffer, size_t length);
/* Writes `length` bytes; returns how many were written. */
size_t semihost_write(int handle, const void *buffer, size_t length);
/* Prints a NUL-terminated string on the host's console (QEMU's stderr/stdout). */
void semihost_print(const char *text);
/* Ends the emulation with `code` as QEMU's exit status (SYS_EXIT_EXTENDED). */
void semihost_exit(int code) __attribute__((noreturn));

#endif /* PMKD_SEMIHOST_H */
