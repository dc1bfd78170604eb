"""The generated C engine on a Cortex-M4: cross-compiled, run under QEMU, measured.

The host check proves the C is right; this one proves it is right *on the
target*: the same `c/` sources, built by Debian's `gcc-arm-none-eabi` for a
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

A missing tool is not an error: `check` returns `{"skipped": "..."}` naming
the Debian package, and `tools_missing()` lists what is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from pmkd_tf.export.cstream import host
from pmkd_tf.errors import ExportError

TARGET_DIR = Path(__file__).resolve().parent / "target"
TARGET_SOURCES = ("startup.c", "semihost.c", "m4_main.c")
LINKER_SCRIPT = "mps2_an386.ld"
PLUGIN_SOURCE = "insn_count.c"
MACHINE = "mps2-an386"

# Executable -> the Debian package that provides it.
TOOLS = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "arm-none-eabi-nm": "binutils-arm-none-eabi",
    "qemu-system-arm": "qemu-system-arm",
    "cc": "gcc",
}
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
COMPILE_TIMEOUT_S = 300.0


def _newlib_missing() -> bool:
    """Whether the cross compiler cannot find newlib-nano (gcc prints the bare name when it has no such file)."""
    found = subprocess.run(["arm-none-eabi-gcc", *CFLAGS[:3], "-print-file-name=libc_nano.a"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return not os.path.isabs(found)


def tools_missing() -> list[str]:
    """The tools this check needs and cannot find, each as "<tool> not found: apt-get install <package>"."""
    missing = [f"{tool} not found: apt-get install {package}" for tool, package in TOOLS.items()
               if shutil.which(tool) is None]
    if shutil.which("arm-none-eabi-gcc") is not None and _newlib_missing():
        missing.append(f"{NEWLIB[0]} not found: apt-get install {NEWLIB[1]}")
    return missing


def _run(command: list[str], what: str, timeout_s: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a tool; a failure or timeout becomes an ExportError that says which step and why, in one line."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
                                stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as error:
        raise ExportError(f"Cortex-M4 check: {what} did not finish within {timeout_s:.0f} s "
                          f"({Path(command[0]).name}); the machine may be overloaded, retry or check fewer "
                          "images.") from error
    if result.returncode != 0:
        output = " ".join((result.stderr + " " + result.stdout).split())[:400]
        raise ExportError(f"Cortex-M4 check: {what} failed (exit {result.returncode}): {output}")
    return result


def _first_line(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.splitlines()[0].strip()


def section_sizes(elf: Path) -> dict[str, int]:
    """Bytes of every allocated section of `elf`, from `arm-none-eabi-size -A`."""
    output = _run(["arm-none-eabi-size", "-A", str(elf)], "arm-none-eabi-size", COMPILE_TIMEOUT_S).stdout
    sizes = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].startswith(".") and fields[1].isdigit():
            sizes[fields[0]] = int(fields[1])
    return sizes


def symbol_addresses(elf: Path, names: tuple[str, ...]) -> dict[str, int]:
    """Addresses of the named symbols in `elf` (Thumb bit cleared, as nm prints them)."""
    output = _run(["arm-none-eabi-nm", str(elf)], "arm-none-eabi-nm", COMPILE_TIMEOUT_S).stdout
    addresses = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] in names:
            addresses[fields[2]] = int(fields[0], 16)
    absent = sorted(set(names) - set(addresses))
    if absent:
        raise ExportError(f"Cortex-M4 check: {', '.join(absent)} missing from the linked program.")
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


def _stats(text: str) -> dict[str, int]:
    """The target's `stats.txt`: one "name value" pair a line."""
    return {name: int(value) for name, value in (line.split() for line in text.splitlines() if line.strip())}


def _instructions(log: str) -> tuple[int, int]:
    """(windows, instructions) from the plugin's exit line."""
    found = re.search(r"insn_count windows=(\d+) instructions=(\d+)", log)
    if found is None:
        raise ExportError(f"Cortex-M4 check: the instruction-count plugin printed no total; its log: {log[:200]!r}")
    return int(found.group(1)), int(found.group(2))


def build(c_dir: Path, work: Path, stack_bytes: int = STACK_BYTES) -> tuple[Path, set[str]]:
    """Cross-compile `c_dir/*.c` with the target files into `work/app.elf`; also return the engine's objects.

    Each source becomes its own object so that the linker map attributes
    every kept section to the engine or to the harness.
    """
    engine_sources = sorted(Path(c_dir).glob("*.c"))
    if not engine_sources:
        raise ExportError(f"Cortex-M4 check: no .c files in {c_dir}; export the C engine first.")
    objects, engine_objects = [], set()
    for source, prefix in [(s, "engine_") for s in engine_sources] + [(TARGET_DIR / s, "target_")
                                                                      for s in TARGET_SOURCES]:
        obj = work / f"{prefix}{source.stem}.o"
        _run(["arm-none-eabi-gcc", *CFLAGS, f"-I{c_dir}", f"-I{TARGET_DIR}", "-c", str(source), "-o", str(obj)],
             f"compiling {source.name} for the Cortex-M4", COMPILE_TIMEOUT_S)
        objects.append(str(obj))
        if prefix == "engine_":
            engine_objects.add(obj.name)
    elf = work / "app.elf"
    _run(["arm-none-eabi-gcc", *CFLAGS, *LDFLAGS, "-T", str(TARGET_DIR / LINKER_SCRIPT),
          f"-Wl,--defsym=__stack_size={stack_bytes}", f"-Wl,-Map={work / 'app.map'}", *objects, "-o", str(elf)],
         "linking for the Cortex-M4", COMPILE_TIMEOUT_S)
    return elf, engine_objects


def _plugin(work: Path) -> Path:
    plugin = work / "insn_count.so"
    _run(["cc", "-shared", "-fPIC", "-O2", "-o", str(plugin), str(TARGET_DIR / PLUGIN_SOURCE)],
         "building the QEMU instruction-count plugin", COMPILE_TIMEOUT_S)
    return plugin


def emulate(elf: Path, work: Path, images: int, timeout_s: float) -> tuple[int, int]:
    """Run `elf` under QEMU in `work` (which holds images.bin) with the instruction-count plugin.

    Returns the plugin's (windows, instructions); the program leaves
    logits.bin and stats.txt in `work`. A non-zero exit says why, in one line.
    """
    markers = symbol_addresses(elf, ("m4_count_on", "m4_count_off"))
    plugin = _plugin(work)
    command = ["qemu-system-arm", "-M", MACHINE, "-nographic", "-monitor", "none",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(elf),
               "-plugin", f"{plugin},on={markers['m4_count_on']:#x},off={markers['m4_count_off']:#x}",
               "-d", "plugin", "-D", str(work / "plugin.log")]
    try:
        result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=timeout_s,
                                stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as error:
        raise ExportError(f"Cortex-M4 check: qemu-system-arm did not finish {images} images within {timeout_s:.0f} s; "
                          "pass a larger timeout or fewer images.") from error
    if result.returncode != 0:
        output = " ".join((result.stdout + " " + result.stderr).split())[:400]
        meaning = EXIT_CODES.get(result.returncode, "unexpected exit")
        raise ExportError(f"Cortex-M4 check: the program under qemu-system-arm exited with {result.returncode} "
                          f"({meaning}): {output}")
    return _instructions((work / "plugin.log").read_text())


def check(c_dir: Path, inputs: np.ndarray, expected: np.ndarray, timeout_s: float | None = None,
          stack_bytes: int = STACK_BYTES) -> dict:
    """Run the C engine in `c_dir` on a QEMU Cortex-M4 on every input; compare with `expected`; measure.

    inputs: int8 (N, H, W, C), quantised as model_int8.tflite's input.
    expected: int8 (N, classes), the logits of LiteRT's reference kernels.
    timeout_s: limit for the QEMU run (default 120 s + 2 s per image).
    Returns the report's "cortex_m4" section, or {"skipped": ...} if a tool is missing.
    """
    missing = tools_missing()
    if missing:
        return {"skipped": "; ".join(missing)}
    inputs, expected = host.check_arrays(inputs, expected, "Cortex-M4 check")
    count, rows = len(inputs), int(inputs.shape[1])
    with tempfile.TemporaryDirectory(prefix="pmkd_cortex_m4_") as directory:
        work = Path(directory)
        elf, engine_objects = build(Path(c_dir), work, stack_bytes)
        (work / "images.bin").write_bytes(np.ascontiguousarray(inputs).tobytes())
        windows, instructions = emulate(elf, work, count, 120.0 + 2.0 * count if timeout_s is None else timeout_s)
        stats = _stats((work / "stats.txt").read_text())
        logits = np.fromfile(work / "logits.bin", np.int8)
        sizes = section_sizes(elf)
        engine = objects_flash((work / "app.map").read_text(), engine_objects)
    if logits.size != expected.size or stats["images"] != count or windows != rows * count:
        raise ExportError(f"Cortex-M4 check: the program returned {logits.size} logits for {stats['images']} images "
                          f"in {windows} engine calls; expected {expected.size} for {count} in {rows * count} "
                          "(does c/ match the model?).")
    logits = logits.reshape(expected.shape)
    # Flash holds the code, the constants (with any unwind index libgcc brings) and .data's initial values.
    flash = sum(sizes.get(name, 0) for name in (".text", ".rodata", ".ARM.exidx", ".data"))
    return {
        "images": count,
        "mismatched": int(np.any(logits != expected, axis=1).sum()),
        "mismatched_values": int(np.sum(logits != expected)),
        "state_bytes": stats["state_bytes"],
        "peak_stack_bytes": stats["peak_stack_bytes"],
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
        "compiler": f"{_first_line(['arm-none-eabi-gcc', '--version'])} {' '.join(CFLAGS)} {' '.join(LDFLAGS)}",
        "qemu": f"{_first_line(['qemu-system-arm', '--version'])} -M {MACHINE}",
    }
