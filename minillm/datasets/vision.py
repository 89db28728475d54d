"""Images for the vision-language models: real handwritten digits and generated shapes.

* ``digits``: the UCI "Optical Recognition of Handwritten Digits" test set (1,797 images of
  8x8 pixels, grey levels 0..16, CC BY 4.0) as shipped inside the scikit-learn package
  (``sklearn/datasets/data/digits.csv.gz``), read directly with gzip and NumPy, without
  importing scikit-learn. Split ours: a seeded shuffle (``seed=0``), 80/10/10.
* ``shapes``: generated 18x18 RGB images of one coloured shape (circle, square, triangle;
  red, green, blue, yellow) in one cell of a 3x3 grid, with captions in English and Chinese
  ("a red circle at the top left" / "左上角的红色圆形"). Three shape-colour combinations
  (:data:`HELD_OUT`) never occur in train/validation/test: they form the ``heldout`` split,
  for testing compositional generalisation zero-shot.

Both return a :class:`Dataset` of dicts with an ``"image"`` float32 array in [0, 1]
(``(8, 8)`` for digits, ``(18, 18, 3)`` for shapes).
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np

from .base import Dataset, DatasetError, seeded_split
from .registry import register

__all__ = ["sklearn_dir", "digits", "shapes", "shape_caption", "parse_caption", "all_captions",
           "SHAPES", "COLOURS", "POSITIONS", "HELD_OUT", "DIGIT_WORDS"]

# sha256 of digits.csv.gz in scikit-learn 1.9.1 (the counts in the card are for this file)
DIGITS_FILE = "datasets/data/digits.csv.gz"
DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def sklearn_dir():
    """The folder of the installed scikit-learn package, found without importing it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the digits dataset is read from the scikit-learn package, which is "
                           "not installed: pip install scikit-learn (or minillm[vision])")
    return Path(list(spec.submodule_search_locations)[0])


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    """``(images (1797, 8, 8) float32 in [0, 1], labels (1797,) int64)`` from the CSV."""
    path = sklearn_dir().joinpath(*DIGITS_FILE.split("/"))
    if not path.is_file():
        raise DatasetError(f"scikit-learn is installed but has no {DIGITS_FILE} ({path}); "
                           "reinstall it: pip install --force-reinstall scikit-learn")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != DIGITS_SHA256:
        warnings.warn(f"{path} differs from the file of scikit-learn 1.9.1 that the dataset "
                      "card describes; counts may differ from the documented ones", stacklevel=3)
    text = gzip.decompress(data).decode("utf-8")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64)
    images = (table[:, :64] / 16.0).astype(np.float32).reshape(-1, 8, 8)
    return images, table[:, 64].astype(np.int64)


@register("digits", ("train", "validation", "test", "all"), "image classification, 10 digits",
          "scikit-learn", "UCI handwritten digits, 1,797 images of 8x8 (inside scikit-learn)")
def digits(split="train", seed=0):
    """``{"image": (8, 8) float32 in [0, 1], "label": 0..9}``; ``label_names`` "0".."9".
    Splits: a shuffle seeded by ``seed``, 1,439 / 179 / 179 (each kept in file order)."""
    images, labels = _digits_arrays()
    order = range(len(labels)) if split == "all" else seeded_split(len(labels), seed)[split]
    examples = [{"image": images[i].copy(), "label": int(labels[i])} for i in order]
    return Dataset(examples, [str(d) for d in range(10)], "digits", split)


# -- shapes -------------------------------------------------------------------------------
SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
POSITIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left",
             "bottom", "bottom right")                   # row by row on a 3x3 grid
HELD_OUT = (("circle", "yellow"), ("square", "blue"), ("triangle", "green"))
SHAPES_ZH = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
COLOURS_ZH = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"}
POSITIONS_ZH = dict(zip(POSITIONS, ("左上角", "上方", "右上角", "左侧", "中间", "右侧",
                                    "左下角", "下方", "右下角")))
POSITIONS_EN = dict(zip(POSITIONS, ("at the top left", "at the top", "at the top right",
                                    "on the left", "in the centre", "on the right",
                                    "at the bottom left", "at the bottom",
                                    "at the bottom right")))
RGB = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.15), "blue": (0.15, 0.25, 0.95),
       "yellow": (0.95, 0.9, 0.1)}
SHAPE_SPLITS = {"train": 3000, "validation": 300, "test": 600, "heldout": 600}
IMAGE_SIZE, CELL = 18, 6


def shape_caption(shape, colour, position, lang="en"):
    """``("circle", "red", "top left")`` -> "a red circle at the top left" (``lang="en"``) or
    "左上角的红色圆形" (``lang="zh"``)."""
    if lang == "en":
        return f"a {colour} {shape} {POSITIONS_EN[position]}"
    if lang == "zh":
        return f"{POSITIONS_ZH[position]}的{COLOURS_ZH[colour]}{SHAPES_ZH[shape]}"
    raise DatasetError(f"lang must be 'en' or 'zh', got {lang!r}")


def all_captions(lang="en", combos=None):
    """``{caption: (shape, colour, position)}`` for every combination (or those whose
    (shape, colour) is in ``combos``), in a fixed order."""
    return {shape_caption(s, c, p, lang): (s, c, p) for s in SHAPES for c in COLOURS
            for p in POSITIONS if combos is None or (s, c) in combos}


def parse_caption(text, lang="en"):
    """The attributes a caption names: ``{"shape", "colour", "position"}``, each the longest
    known phrase found in ``text`` (None when none is)."""
    names = {"shape": (SHAPES, SHAPES_ZH), "colour": (COLOURS, COLOURS_ZH),
             "position": (POSITIONS, POSITIONS_ZH)}
    out = {}
    for attr, (values, zh) in names.items():
        phrase = {v: (zh[v] if lang == "zh" else POSITIONS_EN.get(v, v)) for v in values}
        found = [v for v in values if phrase[v] in text]
        out[attr] = max(found, key=lambda v: len(phrase[v])) if found else None
    return out


def _draw(rng, shape, colour, position):
    """One (18, 18, 3) float32 image: a dark noisy background, the shape near the centre of
    its grid cell (jittered by up to 1 pixel, size varied), colour jittered."""
    row, col = divmod(POSITIONS.index(position), 3)
    cy, cx = (row + 0.5) * CELL + rng.uniform(-1, 1), (col + 0.5) * CELL + rng.uniform(-1, 1)
    r = CELL * 0.42 * rng.uniform(0.8, 1.0)
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r ** 2
    elif shape == "square":
        inside = (np.abs(x - cx) <= 0.8 * r) & (np.abs(y - cy) <= 0.8 * r)
    else:                                   # triangle pointing up: width grows downwards
        top, bottom = cy - r, cy + 0.8 * r
        inside = (y >= top) & (y <= bottom) & (np.abs(x - cx) <= (y - top) / (bottom - top) * r)
    image = 0.1 + rng.normal(0, 0.03, (IMAGE_SIZE, IMAGE_SIZE, 3))
    rgb = np.clip(np.array(RGB[colour]) + rng.uniform(-0.05, 0.05, 3), 0, 1)
    image[inside] = rgb
    return np.clip(image, 0, 1).astype(np.float32)


@register("shapes", tuple(SHAPE_SPLITS), "image captioning / retrieval, compositional",
          "generated", "generated 18x18 coloured shapes on a 3x3 grid with English and Chinese "
          "captions; 3 shape-colour pairs held out")
def shapes(split="train", n=None, seed=0):
    """``{"image", "shape", "colour", "position", "caption_en", "caption_zh"}``: ``n``
    images (default 3,000 / 300 / 600 / 600), each attribute drawn uniformly; train,
    validation and test draw only the seen shape-colour pairs, ``heldout`` only
    :data:`HELD_OUT`. Each split has its own seeded stream (``default_rng([seed, k])``)."""
    n = SHAPE_SPLITS[split] if n is None else n
    if not isinstance(n, int) or n < 1:
        raise DatasetError(f"shapes: n must be a positive int, got {n!r}")
    held = split == "heldout"
    pairs = [(s, c) for s in SHAPES for c in COLOURS if ((s, c) in HELD_OUT) == held]
    rng = np.random.default_rng([seed, list(SHAPE_SPLITS).index(split)])
    examples = []
    for _ in range(n):
        shape, colour = pairs[rng.integers(len(pairs))]
        position = POSITIONS[rng.integers(len(POSITIONS))]
        examples.append({"image": _draw(rng, shape, colour, position), "shape": shape,
                         "colour": colour, "position": position,
                         "caption_en": shape_caption(shape, colour, position, "en"),
                         "caption_zh": shape_caption(shape, colour, position, "zh")})
    return Dataset(examples, None, "shapes", split,
                   {"held_out": [list(p) for p in HELD_OUT]})
