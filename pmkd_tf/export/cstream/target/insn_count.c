/* QEMU TCG plugin: guest instructions executed between two marker functions.
 *
 * Load with `-plugin insn_count.so,on=<addr>,off=<addr> -d plugin -D <log>`, where the addresses
 * are those of m4_count_on() and m4_count_off() in the guest program (from arm-none-eabi-nm).
 * Every executed translation block adds its instruction count to a running total (one inline
 * add, so counting barely slows QEMU); reaching `on` snapshots the total, reaching `off` adds the
 * instructions since the snapshot to the windowed sum. At exit it prints
 * `insn_count windows=<n> instructions=<sum>`: the guest instructions executed inside the windows,
 * so startup, semihosting I/O and the harness's own loop are left out. The count is QEMU's: it
 * counts instructions, not cycles (a Cortex-M4 takes one cycle for most ALU and MAC instructions,
 * two or more for loads, stores and taken branches).
 *
 * Debian ships no qemu-plugin.h, so the few declarations used are written out below; they follow
 * QEMU's plugin API version 1 (QEMU 7.x), whose ABI the loader checks through qemu_plugin_version.
 * Build: cc -shared -fPIC -O2 -o insn_count.so insn_count.c
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- The subset of QEMU's include/qemu/qemu-plugin.h (API version 1) this plugin uses. ---- */
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
#define QEMU_PLUGIN_VERSION 1

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* only ever passed by pointer here */
struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);
/* ---- end of the API subset ---- */

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* The machine (mps2-an386) has one vCPU, so plain counters suffice. */
static uint64_t executed;     /* every instruction of every executed block */
static uint64_t window_start; /* `executed` when the current window opened */
static uint64_t windowed;     /* instructions inside closed windows */
static uint64_t windows;      /* windows closed */
static int window_open;
static uint64_t on_address;
static uint64_t off_address;

static void on_reached(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    (void)userdata;
    window_start = executed;
    window_open = 1;
}

static void off_reached(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    (void)userdata;
    if (window_open) {
        windowed += executed - window_start;
        ++windows;
        window_open = 0;
    }
}

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    const size_t count = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, count);
    for (size_t i = 0; i < count; ++i) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint64_t address = qemu_plugin_insn_vaddr(insn);
        if (address == on_address) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_reached, QEMU_PLUGIN_CB_NO_REGS, NULL);
        } else if (address == off_address) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, off_reached, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
    }
}

static void report(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    char line[96];
    snprintf(line, sizeof line, "insn_count windows=%" PRIu64 " instructions=%" PRIu64 "\n", windows, windowed);
    qemu_plugin_outs(line);
}

/* `on=`/`off=` take the marker functions' addresses (decimal or 0x hex; a Thumb bit is ignored). */
static int parse_address(const char *argument, const char *name, uint64_t *address)
{
    const size_t length = strlen(name);
    if (strncmp(argument, name, length) != 0 || argument[length] != '=') {
        return 0;
    }
    char *end;
    *address = strtoull(argument + length + 1, &end, 0) & ~(uint64_t)1;
    return *end == '\0';
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    int have_on = 0;
    int have_off = 0;
    for (int i = 0; i < argc; ++i) {
        if (parse_address(argv[i], "on", &on_address)) {
            have_on = 1;
        } else if (parse_address(argv[i], "off", &off_address)) {
            have_off = 1;
        } else {
            fprintf(stderr, "insn_count: unknown argument %s (expected on=<address>,off=<address>)\n", argv[i]);
            return -1;
        }
    }
    if (!have_on || !have_off || on_address == off_address) {
        fprintf(stderr, "insn_count: give two different marker addresses: on=<address>,off=<address>\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
    qemu_plugin_register_atexit_cb(id, report, NULL);
    return 0;
}
