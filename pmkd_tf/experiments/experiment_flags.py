"""The flags `experiments.run`, `tune` and `experiments/convergence.py` share, and how they become an Experiment.

Choices are absl enums and ranges are absl validators, so a bad value is
refused while the command line is parsed (`cli.parse` prints the refusal as
one `error:` line). A flag named after a setting of the Experiment or its
Recipe is that setting, and every loss term's hyperparameters
(`terms.HYPERPARAMETERS`) are flags of their own name.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags, logging

from pmkd_tf import data, models, pipeline, terms
from pmkd_tf.experiments import cli
from pmkd_tf.recipe import LR_SCHEDULES, PRESETS, WEIGHT_DECAY_KINDS, Preset, Recipe

FLAGS = flags.FLAGS

flags.DEFINE_string("net", "resnet18", f"Network: {', '.join(models.NETS)} or any wrn_D_K.")
flags.DEFINE_string("dataset", "cifar10", f"Dataset: {data.DATASET_HELP}.")
flags.DEFINE_string("data_dir", None, f"Image-folder root (<data_dir>/<dataset>/{{train,test}}/<class>/*); "
                    f"default ${data.ENV_DATA_DIR}, else tensorflow-datasets.")
flags.DEFINE_string("image_size", None, "HxW every image is resized to, e.g. 24x96 (default: the dataset's native "
                    "size; for a folder its most common size).")
flags.DEFINE_enum("channels", None, ["1", "3"], "1 (grayscale) or 3 (colour); default 1 if every training image is "
                  "grayscale, else 3.")
flags.DEFINE_enum("augment", None, list(data.AUGMENTS), "Training augmentation (default: the paper's for "
                  "cifar10/cifar100/svhn, else crop_flip).")
flags.DEFINE_float("test_fraction", 0.2, "Share of each class held out as the test split of a folder without test/.")
flags.DEFINE_enum("preset", "cpu", list(PRESETS), "Scale of the run; explicit flags override it.")
flags.DEFINE_integer("batch_size", None, "Batch size (default: the preset's).", lower_bound=1)
flags.DEFINE_float("learning_rate", 0.1, "Initial SGD learning rate.", lower_bound=0)
flags.DEFINE_float("weight_decay", Recipe.weight_decay, "Weight decay coefficient (the paper's 1e-5).", lower_bound=0)
flags.DEFINE_enum("weight_decay_kind", None, list(WEIGHT_DECAY_KINDS), "coupled: L2 in the gradient before "
                  "momentum (the paper's, PyTorch's); decoupled: Keras'. Default: the preset's.")
flags.DEFINE_enum("lr_schedule", "step", list(LR_SCHEDULES), "step: the paper's drops at 30/60/80% of a phase; "
                  "cosine: a smooth decay to 0.")
flags.DEFINE_float("bn_momentum", 0.99, "Batch-norm moving-average momentum, Keras' way (PyTorch's 0.1, the "
                   "paper's, is 0.9 here).", lower_bound=0, upper_bound=0.999)
flags.DEFINE_float("width_multiplier", None, "Channel multiplier of every net (default: the preset's).")
flags.DEFINE_float("teacher_width_multiplier", None, "Channel multiplier of the NxN teacher alone (default: "
                  "--width_multiplier); a wider teacher's feature taps reach the student through a 1x1 regressor.")
flags.DEFINE_integer("n", 3, "N of the NxN / 1xN / Nx1 filters.")
for _h in terms.HYPERPARAMETERS.values():
    (flags.DEFINE_bool if isinstance(_h.default, bool) else flags.DEFINE_float)(_h.name, _h.default, _h.help)
    flags.register_validator(_h.name, _h.valid, f"{_h.name} {_h.rule}")
flags.DEFINE_enum("pacemaker_kind", "ensemble", list(models.PACEMAKER_KINDS),
                  "The pacemaker: ensemble (1xN & Nx1, the paper's), column (Nx1) or row (1xN).")
flags.DEFINE_enum("phase3_init", "student", list(pipeline.PHASE3_INITS), "Phase 3 starts from the phase-2 "
                  "student (sec. 3.2) or pacemaker_row (Fig. 2: the pacemaker's 1xN member).")
flags.DEFINE_enum("downsampling", "stride", list(models.DOWNSAMPLINGS), "How a 1xN (Nx1) model halves its "
                  "rows (columns): stride (the paper's; drops every other row) or average / max (pools each pair "
                  "of rows, then strides along the width only). NxN teachers are unchanged.")
flags.DEFINE_bool("teacher_per_seed", False, "Train one teacher per seed instead of one shared teacher.")
flags.DEFINE_integer("train_examples", None, "Subsample the training set (seeded).", lower_bound=1)
flags.DEFINE_integer("test_examples", None, "Subsample the test set (seeded).", lower_bound=1)
flags.DEFINE_integer("validation_examples", 0, "Hold out this many training images for validation.", lower_bound=0)
flags.DEFINE_string("out_dir", "runs", "Where phases and results go.")
flags.DEFINE_enum("precision", "float32", list(pipeline.PRECISIONS), "Keras dtype policy of every phase "
                  "(mixed_float16 scales the loss, as Keras does).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step.")
flags.DEFINE_integer("steps_per_execution", 1, "Batches per call of the compiled train function.", lower_bound=1)
for _name in ("width_multiplier", "teacher_width_multiplier"):
    flags.register_validator(_name, lambda value: value is None or value > 0, f"{_name} must be > 0")
cli.check("image_size", lambda text: text is None or data.parse_image_size(text))
flags.register_validator("data_dir", lambda path: path is None or os.path.isdir(os.path.expanduser(path)),
                         "--data_dir does not exist or is not a folder")


# The Experiment settings a preset decides (an explicit --preset counts as giving each of them); its seeds are the
# commands' own.
PRESET_SETTINGS = tuple(name for name in Preset.__dataclass_fields__ if name not in ("seeds", "others"))


def _given(setting: str) -> bool:
    """Whether the command line says `setting`: its own flag, or --preset for a setting the preset decides."""
    decided = (*PRESET_SETTINGS, *PRESETS[FLAGS.preset].others)
    return (setting in FLAGS and FLAGS[setting].present) or (setting in decided and FLAGS["preset"].present)


def experiment(epochs: int | None, saved: dict | None = None) -> pipeline.Experiment:
    """Resolve the flags into an Experiment, and log its scale.

    `epochs` is the command's own epochs flag (None: not given). `saved` is
    an experiment recorded by the tuner (`Experiment.flat`): a setting the
    command line does not give comes from it rather than from the preset.
    """
    preset = dataclasses.asdict(PRESETS[FLAGS.preset])
    names = (*pipeline.Experiment.__dataclass_fields__, *Recipe.__dataclass_fields__, *terms.HYPERPARAMETERS)
    flat = {name: FLAGS[name].value for name in names if name in FLAGS}
    flat["epochs"] = epochs
    flat.update({name: preset[name] for name in PRESET_SETTINGS if flat[name] is None})
    flat.update({name: value for name, value in preset["others"].items() if not FLAGS[name].present})
    flat["image_size"] = data.parse_image_size(flat["image_size"]) if flat["image_size"] else None
    flat["channels"] = int(flat["channels"]) if flat["channels"] else None
    if saved:
        given_epochs = epochs is not None or FLAGS["preset"].present
        flat.update({key: value for key, value in saved.items()
                     if not (given_epochs if key == "epochs" else _given(key))})
    exp = pipeline.Experiment.from_flat(flat)
    paper = dataclasses.asdict(PRESETS["paper"])
    is_paper = (all(flat[name] == paper[name] for name in PRESET_SETTINGS)
                and flat["learning_rate"] == Recipe().learning_rate)
    images = "all" if exp.train_examples is None else f"{exp.train_examples:,}"
    logging.info("Scale: preset %s -> width x%g, %d epochs per phase, %s training images, batch %d, %s weight "
                 "decay%s", FLAGS.preset, exp.width_multiplier, exp.recipe.epochs, images, exp.recipe.batch_size,
                 exp.recipe.weight_decay_kind,
                 " (the paper's recipe)" if is_paper else "; --preset=paper is the paper's recipe")
    return exp


def data_dir() -> str | None:
    return FLAGS.data_dir or data.default_data_dir()
