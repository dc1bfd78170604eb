"""Print the parameter table of every net in every filter shape (markdown).

    python -m pmkd_tf.experiments.params [--num_classes=10] [--width_multiplier=1.0]
"""

from __future__ import annotations

from absl import app, flags

from pmkd_tf import models

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_classes", 10, "Classifier outputs.")
flags.DEFINE_float("width_multiplier", 1.0, "Channel multiplier.")


def table(num_classes: int, width_multiplier: float) -> str:
    """Trainable parameters per net and filter shape, and the 1xN/NxN ratios."""
    lines = ["| Net | NxN (teacher) | 1xN (student) | Nx1 (column) | student/teacher total | "
             "student/teacher intermediate convs | student on-the-fly |", "|---|---|---|---|---|---|---|"]
    for net in models.NETS:
        r = {shape: models.on_the_fly_report(models.get_model(net, shape, num_classes, width_multiplier))
             for shape in models.FILTER_SHAPES}
        lines.append(
            f"| {net} | {r['NxN'].trainable_params:,} | {r['1xN'].trainable_params:,} | "
            f"{r['Nx1'].trainable_params:,} | {r['1xN'].trainable_params / r['NxN'].trainable_params:.3f} | "
            f"{r['1xN'].intermediate_conv_params / r['NxN'].intermediate_conv_params:.3f} | {r['1xN'].on_the_fly} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    print(table(FLAGS.num_classes, FLAGS.width_multiplier))


if __name__ == "__main__":
    app.run(main)
