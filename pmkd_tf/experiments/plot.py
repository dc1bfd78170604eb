"""Plot a results folder: per-method accuracy (seeds as points) and training curves.

    python -m pmkd_tf.experiments.plot --results=experiments/results/cifar10/resnet18

Writes `accuracy.png` (mean per method as a bar, each seed as a point, the
baseline as a line) and `curves_seed<S>.png` (the training accuracy per epoch
of every phase of each method for one seed).
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from pmkd_tf import plots, results
from pmkd_tf.experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("results", None, "Folder holding the results table (<out_dir>/<dataset>/<net>).")
flags.DEFINE_integer("seed", 0, "Seed whose training curves are drawn.")
flags.DEFINE_string("table", results.DEFAULT_TABLE, "Results table to plot (<table>.json in --results).")
flags.mark_flag_as_required("results")


def main() -> None:
    for path in plots.plot(Path(FLAGS.results), FLAGS.seed, FLAGS.table):
        print(path)


if __name__ == "__main__":
    cli.main(main)
