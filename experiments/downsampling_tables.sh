#!/usr/bin/env bash
# The full-image issue's CIFAR-10 tables (BENCHMARKS.md, "Students that see the whole image"):
# for ResNet18, VGG16 and WRN-16-8 at --preset=cpu, 3 seeds, one table per down-sampling
# (downsampling_stride, downsampling_average; ResNet18 also downsampling_max).
#
# Ordered so that what decides the defaults comes first: every baseline, then each net's teacher
# and PMKD, then ResNet18's conventional distillation and compute-matched controls. Every step
# resumes (finished phases are reused, an interrupted one continues from its last epoch), so
# re-running this script after a stop picks up where it was. Run it from the repository root:
#
#     nohup experiments/downsampling_tables.sh > downsampling.log 2>&1 &
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}

run() {
  "$PYTHON" -m pmkd_tf.experiments.run --preset=cpu --data_dir=../shared/data --out_dir=experiments/results "$@"
}

for net in resnet18 vgg16 wrn_16_8; do
  for downsampling in stride average; do
    run --net="$net" --downsampling="$downsampling" --table="downsampling_$downsampling" --methods=baseline
  done
done
run --net=resnet18 --downsampling=max --table=downsampling_max --methods=baseline

for net in resnet18 vgg16 wrn_16_8; do
  for downsampling in stride average; do
    run --net="$net" --downsampling="$downsampling" --table="downsampling_$downsampling" \
      --methods=teacher,baseline,pmkd
  done
done

for downsampling in stride average; do
  run --net=resnet18 --downsampling="$downsampling" --table="downsampling_$downsampling" \
    --methods=teacher,baseline,kd,kd_fitnet,pmkd,baseline_long,kd_fitnet_long
done
