#!/usr/bin/env bash
# The MCU issue's (26) full-scale runs and its Pareto table (BENCHMARKS.md, "The best student for a
# microcontroller"): `--preset=mcu`, whose every setting the proxy study (experiments/mcu_study.py) chose.
#
# In the order they run; each step resumes (finished phases are reused, an interrupted one continues
# from its last epoch), so re-running this script after a stop picks up where it was. Run it from the
# repository root:
#
#     nohup experiments/mcu_tables.sh > mcu_tables.log 2>&1 &
#
# A sitting here lasts 3 hours. Steps 1, 3 and 4 took 9.2 h on a Zen 3 AVX2 EPYC (9.0 h of training, 10 min of
# exports; step 2 trains two proxy trials if it does not find them), about 5.5 h on a Zen 4 AVX-512 one (estimated).
# The next sitting may get the same machine with its work tree laid anew, so run this from a clone outside the work
# tree: an interrupted phase then resumes from its checkpoint/. A new machine keeps only what is committed: each
# phase's config.json, history.csv and result.json, and the benchmark's reports under benchmarks/results/mcu_exports/
# (reused, so an exported model is not needed again). A checkpoint is never committed, so on a new machine an
# unfinished phase starts again; the preset's 30 epochs keep every phase within one sitting. A finished phase's
# model.keras (no optimizer state: 1.36 MB for the teacher, 0.58 MB for a student) is committed with `git add -f`,
# because the next phase starts from it: twice a new machine lost a finished teacher.
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data}

run() {
  "$PYTHON" -m pmkd_tf.experiments.run --preset=mcu --data_dir="$DATA" --out_dir=experiments/results "$@"
}

# 1. The NxN x2 teacher, on all 50,000 training images.
run --methods=teacher --table=mcu

# 2. rho, on a grid of 0.1, 1 and 10, scored on the proxy's 2,000 validation images: with the proxy's
#    data and 60 epochs these are exactly the study's phases, so its teacher and its rho-1 PMKD run are
#    found again and the search trains 0.1 and 10. --preset=mcu keeps the paper's rho 1 unless another
#    grid point beats it by the study's 1-point rule; the steps below take rho from the preset.
"$PYTHON" -m pmkd_tf.experiments.tune --preset=mcu --train_examples=8000 --validation_examples=2000 \
  --trial_epochs=60 --method=pmkd --tuner=grid --rho_range=0.1,10 --grid_points=3 \
  --data_dir="$DATA" --out_dir=experiments/results

# 3. The students, in the order named: PMKD (pacemaker, phase 2, phase 3), the longest chain and the
#    headline, then the baseline on labels alone; then MLPerf Tiny's ResNet-8 (NxN x1) with the same
#    recipe, in a table of its own.
run --methods=teacher,pmkd,baseline --table=mcu
run --methods=teacher --teacher_width_multiplier=1 --table=mcu_resnet8_x1

# 4. Every model of both tables exported as a user exports it: int8 top-1 on the full test set, the C
#    engine bit-exact on 1,000 images on the host and 100 on the emulated Cortex-M4, TFLite Micro's arena.
"$PYTHON" -m benchmarks.mcu --results=experiments/results --tables=resnet8/mcu,resnet8/mcu_resnet8_x1 \
  --data_dir="$DATA" --exports=benchmarks/results/mcu_exports
