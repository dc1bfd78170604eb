"""The generated C engine on a Cortex-M4: cross-compiled, run under QEMU, measured.

The host check proves the C is right; this one proves it is right *on the
target*: the same `c/src/` sources, built by Debian's `gcc-arm-none-eabi` for a
Cortex-M4 (with its DSP instructions) and linked with the project's own
startup file and linker script (`target/`), run on the Cortex-M4F of
`qemu-system-arm -M mps2-an386`. The program reads the int8 images from a host
file over semihosting, one camera row at a time, and writes the logits back,
so every logit is compared with LiteRT's reference kernels. The same run
measures what a board must budget:

* flash and RAM: `.text`, `.rodata`, `.data`, `.bss` of the whole program
  (`arm-none-eabi-size -A`; it includes the ~2.5 KB test harness, startup and
  newlib's memcpy/memset), and the engine's own code and constant bytes (its
  objects' sections in the linker map); `sizeof(pmkd_stream)` as printed by
  the target;
* peak stack: the reset handler paints the stack, the program reports how
  deep the engine's calls reached below `main`'s stack pointer;
* instructions per inference: a small QEMU TCG plugin of the project's own
  (`target/insn_count.c`, built here with the host compiler) counts the
  instructions executed between the two marker calls around the engine, so
  startup and semihosting I/O are left out; the harness's own calls add
  about a dozen instructions per row.

A missing tool is not an error: `run_engine` returns `{"skipped": "..."}`
naming the Debian package, and `tools_missing()` lists what is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from pmkd_tf.errors import ExportError
from pmkd_tf.export.cstream.codegen import source_dir
from pmkd_tf.export.cstream.toolchain import Toolchain, read_stats

TARGET_DIR = Path(__file__).resolve().parent / "target"
TARGET_SOURCES = ("startup.c", "semihost.c", "m4_main.c")
LINKER_SCRIPT = "mps2_an386.ld"
PLUGIN_SOURCE = "insn_count.c"
MACHINE = "mps2-an386"

TOOLCHAIN = Toolchain("Cortex-M4 check", {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "arm-none-eabi-nm": "binutils-arm-none-eabi",
    "qemu-system-arm": "qemu-system-arm",
    "cc": "gcc",
})
NEWLIB = ("newlib (libc_nano.a)", "libnewlib-arm-none-eabi")

# Cortex-M4 with its DSP extension (GCC defines __ARM_FEATURE_DSP for -mcpu=cortex-m4, so the
# engine's arm_acle.h paths are taken). Soft-float ABI: the inference path has no float, and the
# program then runs on an M4 without the FPU too. newlib-nano supplies the few C library functions
# used (memcpy, memset, strlen); the full newlib gives the same instruction counts.
CFLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror",
          "-ffunction-sections", "-fdata-sections")
LDFLAGS = ("-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections")
STACK_BYTES = 16 * 1024
EXIT_CODES = {1: "a host file could not be read or written, or has the wrong size", 2: "no logits", 3: "CPU fault",
              4: "stack overflow: pass a larger stack_bytes", 5: "unexpected pmkd_stream_push_row status"}


def _newlib_missing() -> bool:
    """Whether the cross compiler cannot find newlib-nano (gcc prints the bare name when it has no such file)."""
    found = subprocess.run(["arm-none-eabi-gcc", *CFLAGS[:3], "-print-file-name=libc_nano.a"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return not os.path.isabs(found)


def tools_missing() -> list[str]:
    """The tools this run needs and cannot find, each as "<tool> not found: apt-get install <package>"."""
    missing = TOOLCHAIN.missing()
    if shutil.which("arm-none-eabi-gcc") is not None and _newlib_missing():
        missing.append(f"{NEWLIB[0]} not found: apt-get install {NEWLIB[1]}")
    return missing


def section_sizes(elf: Path) -> dict[str, int]:
    """Bytes of every allocated section of `elf`, from `arm-none-eabi-size -A`."""
    return dict(TOOLCHAIN.sections("arm-none-eabi-size", [elf]))


def symbol_addresses(elf: Path, names: tuple[str, ...]) -> dict[str, int]:
    """Addresses of the named symbols in `elf` (Thumb bit cleared, as nm prints them)."""
    output = TOOLCHAIN.run_tool(["arm-none-eabi-nm", str(elf)], "arm-none-eabi-nm")
    addresses = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] in names:
            addresses[fields[2]] = int(fields[0], 16)
    absent = sorted(set(names) - set(addresses))
    if absent:
        raise ExportError(f"{TOOLCHAIN.name}: {', '.join(absent)} missing from the linked program.")
    return addresses


# One input section in a GNU ld map: name (its address and size may wrap to the next line), object.
_MAP_ENTRY = re.compile(r"^ (\.[^\s*]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+) (\S+)$", re.M)


def objects_flash(map_text: str, objects: set[str]) -> dict[str, int]:
    """Code (.text) and constant (.rodata, .data initial values) bytes the linker kept from `objects` (file names)."""
    body = map_text.split("Linker script and memory map", 1)[-1]
    sizes = {"code_bytes": 0, "const_bytes": 0}
    for name, _, size, path in _MAP_ENTRY.findall(body):
        if Path(path).name in objects:
            if name.startswith(".text"):
                sizes["code_bytes"] += int(size, 16)
            elif name.startswith((".rodata", ".data")):
                sizes["const_bytes"] += int(size, 16)
    return sizes


def _instructions(log: str) -> tuple[int, int]:
    """(windows, instructions) from the plugin's exit line."""
    found = re.search(r"insn_count windows=(\d+) instructions=(\d+)", log)
    if found is None:
        raise ExportError(f"{TOOLCHAIN.name}: the instruction-count plugin printed no total; its log: {log[:200]!r}")
    return int(found.group(1)), int(found.group(2))


def compile_elf(c_dir: Path, work: Path, stack_bytes: int = STACK_BYTES) -> tuple[Path, set[str]]:
    """Cross-compile `c_dir/src/*.c` with the target files into `work/app.elf`; also return the engine's objects.

    Each source becomes its own object so that the linker map attributes
    every kept section to the engine or to the harness.
    """
    compiler = ["arm-none-eabi-gcc", *CFLAGS, f"-I{source_dir(c_dir)}", f"-I{TARGET_DIR}"]
    engine = TOOLCHAIN.compile_each(compiler, TOOLCHAIN.engine_sources(c_dir), work, "engine_")
    target = TOOLCHAIN.compile_each(compiler, [TARGET_DIR / s for s in TARGET_SOURCES], work, "target_")
    elf = work / "app.elf"
    TOOLCHAIN.run_tool(["arm-none-eabi-gcc", *CFLAGS, *LDFLAGS, "-T", str(TARGET_DIR / LINKER_SCRIPT),
                        f"-Wl,--defsym=__stack_size={stack_bytes}", f"-Wl,-Map={work / 'app.map'}",
                        *map(str, engine + target), "-o", str(elf)], "linking app.elf")
    return elf, {obj.name for obj in engine}


def emulate(elf: Path, work: Path, images: int, timeout_s: float) -> tuple[int, int]:
    """Run `elf` under QEMU in `work` (which holds images.bin) with the instruction-count plugin.

    Returns the plugin's (windows, instructions); the program leaves
    logits.bin and stats.txt in `work`. A non-zero exit says why, in one line.
    """
    markers = symbol_addresses(elf, ("m4_count_on", "m4_count_off"))
    plugin = work / "insn_count.so"
    TOOLCHAIN.run_tool(["cc", "-shared", "-fPIC", "-O2", "-o", str(plugin), str(TARGET_DIR / PLUGIN_SOURCE)],
                       "building the QEMU instruction-count plugin")
    TOOLCHAIN.run_tool(["qemu-system-arm", "-M", MACHINE, "-nographic", "-monitor", "none",
                        "-semihosting-config", "enable=on,target=native", "-kernel", str(elf),
                        "-plugin", f"{plugin},on={markers['m4_count_on']:#x},off={markers['m4_count_off']:#x}",
                        "-d", "plugin", "-D", str(work / "plugin.log")],
                       f"the program under qemu-system-arm ({images} images)", timeout_s, cwd=work,
                       exit_meanings=EXIT_CODES)
    return _instructions((work / "plugin.log").read_text())


def run_engine(c_dir: Path, inputs: np.ndarray, expected: np.ndarray, timeout_s: float | None = None,
               stack_bytes: int = STACK_BYTES) -> dict:
    """Run the C engine in `c_dir` on a QEMU Cortex-M4 on every input; compare with `expected`; measure.

    inputs: int8 (N, H, W, C), quantised as model_int8.tflite's input.
    expected: int8 (N, classes), the logits of LiteRT's reference kernels.
    timeout_s: limit for the QEMU run (default 120 s + 2 s per image).
    Returns the report's "cortex_m4" section, or {"skipped": ...} if a tool is missing.
    """

    def execute(work: Path, count: int) -> tuple[dict[str, int], dict]:
        elf, engine_objects = compile_elf(Path(c_dir), work, stack_bytes)
        windows, instructions = emulate(elf, work, count, 120.0 + 2.0 * count if timeout_s is None else timeout_s)
        rows = int(np.shape(inputs)[1])
        if windows != rows * count:
            raise ExportError(f"{TOOLCHAIN.name}: the program made {windows} engine calls for {count} images of "
                              f"{rows} rows (does c/ match the model?).")
        sizes = section_sizes(elf)
        engine = objects_flash((work / "app.map").read_text(), engine_objects)
        # Flash holds the code, the constants (with any unwind index libgcc brings) and .data's initial values.
        flash = sum(sizes.get(name, 0) for name in (".text", ".rodata", ".ARM.exidx", ".data"))
        stats = read_stats((work / "stats.txt").read_text())
        return stats, {
            "program_stack_bytes": stats["program_stack_bytes"],
            "stack_bytes": stats["stack_bytes"],
            "text": sizes.get(".text", 0),
            "rodata": sizes.get(".rodata", 0),
            "data": sizes.get(".data", 0),
            "bss": sizes.get(".bss", 0),
            "flash_bytes": flash,
            "engine_code_bytes": engine["code_bytes"],
            "engine_const_bytes": engine["const_bytes"],
            "instructions_per_inference": int(round(instructions / count)),
            "compiler": f"{TOOLCHAIN.version('arm-none-eabi-gcc')} {' '.join(CFLAGS)} {' '.join(LDFLAGS)}",
            "qemu": f"{TOOLCHAIN.version('qemu-system-arm')} -M {MACHINE}",
        }

    return TOOLCHAIN.run_engine(inputs, expected, execute)
