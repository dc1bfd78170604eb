"""The full-image issue's embedded figures: each table's seed-0 students exported as a user would.

    .venv/bin/python experiments/downsampling_embedded.py [--results=experiments/results] \
        [--exports=/tmp/pmkd_downsampling_exports] [--seed=0] [--out=experiments/results/cifar10]

For ResNet18, VGG16 and WRN-16-8, and the `downsampling_stride` and
`downsampling_average` tables (experiments/downsampling_tables.sh), takes the
baseline and PMKD students of `--seed` that the table names and runs
`python -m pmkd_tf.export` on each (int8 top-1 on the full CIFAR-10 test set,
TFLite Micro's arena, the C engine on the host and on the emulated
Cortex-M4). An export whose report.json exists is reused, so an interrupted
run resumes. Writes `<out>/downsampling_embedded.{json,md}`:
per student, int8 and float top-1, the C engine's state + peak stack and
flash (engine code + const) on the Cortex-M4, its instructions per
inference, the input rows it reads, and the TFLite Micro arena.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

NETS = ("resnet18", "vgg16", "wrn_16_8")
DOWNSAMPLINGS = ("stride", "average")
METHODS = ("baseline", "pmkd")


def export(model: Path, out_dir: Path) -> dict:
    """`pmkd_tf.export` of one student (reused if its report exists); its report.json."""
    report = out_dir / "report.json"
    if not report.exists():
        command = [sys.executable, "-m", "pmkd_tf.export", f"--model={model}", "--dataset=cifar10",
                   "--data_dir=../shared/data", f"--out_dir={out_dir}", "--c_engine=on", "--noverbose"]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return json.loads(report.read_text())


def row(net: str, downsampling: str, method: str, report: dict) -> dict:
    m4 = report["c_stream"]["cortex_m4"]
    plan = report["c_stream"]["plan"]
    return {
        "net": net, "downsampling": downsampling, "method": method,
        "int8_top1": report["accuracy"]["tflite_int8"], "float_top1": report["accuracy"]["keras_float"],
        "test_images": report["accuracy"]["test_examples"],
        "state_bytes": m4["state_bytes"], "peak_stack_bytes": m4["peak_stack_bytes"],
        "flash_bytes": m4["engine_code_bytes"] + m4["engine_const_bytes"],
        "instructions": m4["instructions_per_inference"],
        "input_rows_read": f"{plan['input_rows_read']}/{plan['input_rows']}",
        "tflm_arena_bytes": report["arena_bytes"]["measured"],
        "bit_exact": f"host {report['c_stream']['host']['images'] - report['c_stream']['host']['mismatched']}"
                     f"/{report['c_stream']['host']['images']}, Cortex-M4 {m4['images'] - m4['mismatched']}"
                     f"/{m4['images']}",
    }


def markdown(rows: list[dict]) -> str:
    lines = ["# Students that see the whole image, on a microcontroller", "",
             "Seed-0 students of the `downsampling_stride` / `downsampling_average` tables (cpu preset, width "
             "x0.125), exported by `python -m pmkd_tf.export`; C engine figures on the emulated Cortex-M4.", "",
             "| Net | Down-sampling | Method | int8 top-1 | float top-1 | rows read | state + stack (B) | "
             "TFLM arena (B) | RAM vs arena | flash (B) | M4 instructions | bit-exact |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ram = r["state_bytes"] + r["peak_stack_bytes"]
        lines.append(f"| {r['net']} | {r['downsampling']} | {r['method']} | {100 * r['int8_top1']:.2f} | "
                     f"{100 * r['float_top1']:.2f} | {r['input_rows_read']} | {r['state_bytes']:,} + "
                     f"{r['peak_stack_bytes']:,} | {r['tflm_arena_bytes']:,} | 1/{r['tflm_arena_bytes'] / ram:.1f} | "
                     f"{r['flash_bytes']:,} | {r['instructions'] / 1e6:.2f} M | {r['bit_exact']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="experiments/results", help="The tables' --out_dir.")
    parser.add_argument("--exports", default="/tmp/pmkd_downsampling_exports", help="Where exports go.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="experiments/results/cifar10", help="Where the table goes.")
    args = parser.parse_args()
    root = Path(args.results) / "cifar10"
    rows, missing = [], []
    for net in NETS:
        for downsampling in DOWNSAMPLINGS:
            table = root / net / f"downsampling_{downsampling}.json"
            runs = json.loads(table.read_text())["runs"] if table.exists() else {}
            for method in METHODS:
                run = runs.get(f"{method}/seed{args.seed}")
                if not run or run.get("status") != "ok":
                    missing.append(f"{net} {downsampling} {method}")
                    continue
                model = root / net / run["folder"] / "model.keras"
                report = export(model, Path(args.exports) / f"{net}_{downsampling}_{method}_seed{args.seed}")
                rows.append(row(net, downsampling, method, report))
    out = Path(args.out)
    (out / "downsampling_embedded.json").write_text(json.dumps({"rows": rows, "missing": missing}, indent=2) + "\n")
    (out / "downsampling_embedded.md").write_text(markdown(rows) + (f"\nNot trained yet: {', '.join(missing)}.\n"
                                                                     if missing else ""))
    print(markdown(rows))


if __name__ == "__main__":
    main()
