"""The full-image issue's small real dataset: scikit-learn's `load_digits`, teacher and baseline per down-sampling.

    .venv/bin/python experiments/digits.py [--folder=/tmp/pmkd_digits] [--out_dir=experiments/results]

`load_digits` (1,797 8x8 grayscale handwritten digits, 0..16, shipped inside
scikit-learn's wheel, which the project already depends on) is written once
as an image folder `<folder>/digits/train/<digit>/<index>.png` with no test/,
so the loader holds out 20% of each class as the test split, as it would for
a user's own folder. Then, for each down-sampling, `experiments.run` trains
the NxN teacher (shared by the three tables) and the 1xN baseline, 3 seeds,
30 epochs per phase at the cpu preset's width, no augmentation (a crop or
flip changes what a digit is), into tables `downsampling_<kind>` under
`<out_dir>/digits/resnet18/`. The folder's path is part of every phase's
identity, so resuming needs the same `--folder`. The images are never
committed: this script makes them again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

DOWNSAMPLINGS = ("stride", "average", "max")


def write_folder(root: Path) -> Path:
    """`load_digits` as `<root>/digits/train/<digit>/<index>.png`, 8-bit grayscale; kept if already complete."""
    digits = load_digits()
    train = root / "digits" / "train"
    if len(list(train.glob("*/*.png"))) == len(digits.target):
        return root
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        path = train / str(label) / f"{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0..16 ink levels to 0..255 pixels, exactly (16 * 255 / 16).
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8), mode="L").save(path)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="/tmp/pmkd_digits", help="Where the image folder is written.")
    parser.add_argument("--out_dir", default="experiments/results", help="experiments.run's --out_dir.")
    args = parser.parse_args()
    root = write_folder(Path(args.folder).resolve())
    for downsampling in DOWNSAMPLINGS:
        command = [sys.executable, "-m", "pmkd_tf.experiments.run", "--net=resnet18", "--dataset=digits",
                   f"--data_dir={root}", "--preset=cpu", "--epochs=30", "--augment=none",
                   f"--downsampling={downsampling}", f"--table=downsampling_{downsampling}",
                   "--methods=teacher,baseline", f"--out_dir={args.out_dir}"]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
