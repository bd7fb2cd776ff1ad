"""A small synthetic action dataset whose classes differ only in motion.

Each class is a shape moving in one way on a textured, noisy background ("a circle moving
left"). Classes come in pairs that are each other's time reversal: a video of the second class
of a pair is drawn exactly like one of the first and played backwards. The frames of the two
classes therefore have the same distribution, and a model blind to frame order cannot do better
than chance within a pair; telling the pairs apart needs motion direction.

The videos are real H.264 mp4 files (PyAV, libx264, crf 10), so they exercise the same decoding
path as downloaded datasets.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["generate", "SyntheticData", "class_names", "render_video", "MOTION_PAIRS", "SHAPES"]

FORMAT_VERSION = 2
MOTION_PAIRS = (
    ("moving left", "moving right"),
    ("moving up", "moving down"),
    ("rotating clockwise", "rotating anticlockwise"),
    ("growing", "shrinking"),
)
SHAPES = ("circle", "square", "triangle", "cross", "diamond", "bar")
MAX_CLASSES = 2 * math.lcm(len(MOTION_PAIRS), len(SHAPES))

TRAIN_LIST, TEST_LIST, LABEL_FILE, META_FILE = "train.txt", "test.txt", "labels.txt", "synthetic.json"


@dataclass(frozen=True)
class SyntheticData:
    """Where :func:`generate` wrote a dataset: list files hold ``videos/00000.mp4 label`` lines
    relative to ``root``, the label file one class phrase per line."""

    root: Path
    train_list: Path
    test_list: Path
    label_file: Path
    classnames: list[str] = field(default_factory=list)
    reused: bool = False  # True when a complete dataset with the same arguments was already there


def _pair_spec(pair: int) -> tuple[str, int]:
    """(shape, motion pair index) of reversal pair ``pair``."""
    motion = pair % len(MOTION_PAIRS)
    shape = SHAPES[pair % len(SHAPES)]
    if shape == "circle" and MOTION_PAIRS[motion][0].startswith("rotating"):
        shape = "bar"  # a rotating circle looks still
    return shape, motion


def class_names(num_classes: int) -> list[str]:
    """The class phrases of a ``num_classes`` dataset; classes 2k and 2k+1 are time reversals.

    Example:
        >>> class_names(4)
        ['a circle moving left', 'a circle moving right', 'a square moving up', 'a square moving down']
    """
    if num_classes < 2 or num_classes % 2 or num_classes > MAX_CLASSES:
        raise ValueError(f"num_classes must be even and in [2, {MAX_CLASSES}], got {num_classes}")
    names = []
    for pair in range(num_classes // 2):
        shape, motion = _pair_spec(pair)
        names += [f"a {shape} {MOTION_PAIRS[motion][0]}", f"a {shape} {MOTION_PAIRS[motion][1]}"]
    return names


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in shape coordinates (unit radius, v pointing down)."""
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(au, av) <= 0.8
    if shape == "triangle":
        return (v <= 0.5) & (v >= -1.0 + math.sqrt(3) * au)
    if shape == "cross":
        return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    if shape == "diamond":
        return au + av <= 1.0
    if shape == "bar":
        return (au <= 1.0) & (av <= 0.3)
    raise ValueError(f"unknown shape {shape!r}; accepted: {', '.join(SHAPES)}")


def render_video(label: int, num_frames: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Frames of one video of class ``label`` as uint8 (T, H, W, 3).

    Example:
        >>> render_video(1, 8, 32, 32, np.random.default_rng(0)).shape
        (8, 32, 32, 3)
    """
    shape, motion = _pair_spec(label // 2)
    side = min(height, width)
    time = np.linspace(0.0, 1.0, num_frames)[:, None, None]
    radius = np.full_like(time, side * rng.uniform(0.14, 0.2))
    centre_x = np.full_like(time, width / 2 + rng.uniform(-0.08, 0.08) * width)
    centre_y = np.full_like(time, height / 2 + rng.uniform(-0.08, 0.08) * height)
    angle = np.full_like(time, rng.uniform(0, 2 * math.pi))
    travel = rng.uniform(0.8, 1.2)
    if motion == 0:  # left: x decreases over time
        centre_x = centre_x + (0.5 - time) * 0.45 * width * travel
    elif motion == 1:  # up: y decreases (image y points down)
        centre_y = centre_y + (0.5 - time) * 0.45 * height * travel
    elif motion == 2:  # clockwise on screen: the angle grows with y pointing down
        angle = angle + time * math.radians(120) * travel
    else:  # growing
        radius = radius * (0.55 + 0.9 * time * travel)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = x[None] - centre_x, y[None] - centre_y
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / radius
    v = (-dx * sin + dy * cos) / radius
    mask = _shape_mask(shape, u, v)[..., None]

    block = max(2, side // 8)
    coarse = rng.uniform(40, 200, size=(-(-height // block), -(-width // block), 3))
    background = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:height, :width]
    colour = rng.uniform(0, 255, size=3)
    colour[rng.integers(3)] = rng.choice([10.0, 245.0])  # keep the shape distinct from the texture
    frames = np.where(mask, colour, background[None])
    frames = frames + rng.normal(0.0, 10.0, size=frames.shape)
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    if label % 2:
        frames = frames[::-1]  # the second class of a pair is the first played backwards
    return np.ascontiguousarray(frames)


def _write_mp4(path: Path, frames: np.ndarray, fps: int, crf: int) -> None:
    import av

    height, width = frames.shape[1:3]
    temporary = path.with_name(path.name + ".part")
    with av.open(str(temporary), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # The same arguments give the same file: x264 runs on one thread, without the macroblock
        # tree and its lookahead (with them, the bitstream, and so the pixels, varied between runs).
        stream.codec_context.thread_count, stream.codec_context.thread_type = 1, "NONE"
        stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0:rc-lookahead=0:b-adapt=0"}
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = index
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    os.replace(temporary, path)


def _existing(root: Path, params: dict) -> SyntheticData | None:
    meta = root / META_FILE
    if not meta.is_file():
        return None
    try:
        stored = json.loads(meta.read_text())
    except json.JSONDecodeError:
        return None
    if stored.get("params") != params:
        return None
    videos = [root / name for name in stored.get("videos", [])]
    if not all(path.is_file() and path.stat().st_size > 0 for path in videos):
        return None
    if not all((root / name).is_file() for name in (TRAIN_LIST, TEST_LIST, LABEL_FILE)):
        return None
    return _result(root, params["num_classes"], reused=True)


def _result(root: Path, num_classes: int, reused: bool = False) -> SyntheticData:
    return SyntheticData(root, root / TRAIN_LIST, root / TEST_LIST, root / LABEL_FILE, class_names(num_classes), reused)


def generate(
    out_dir: str | os.PathLike,
    *,
    num_classes: int = 8,
    train_per_class: int = 20,
    test_per_class: int = 5,
    num_frames: int = 16,
    size: int | tuple[int, int] = 64,
    fps: int = 8,
    crf: int = 10,
    seed: int = 0,
) -> SyntheticData:
    """Write the synthetic dataset to ``out_dir`` and return where its files are.

    ``out_dir`` receives ``videos/00000.mp4 ...``, ``train.txt`` and ``test.txt`` (lines
    ``videos/00000.mp4 3``, paths relative to ``out_dir``), ``labels.txt`` (one class phrase
    per line) and ``synthetic.json`` (the parameters). ``size`` is a side or (height, width),
    even numbers. The same arguments give the same pixels; when ``out_dir`` already holds a
    complete dataset written with the same arguments nothing is rewritten.

    Example:
        >>> data = generate("/tmp/clipadapt-synthetic-doc", num_classes=2, train_per_class=2,
        ...                 test_per_class=1, num_frames=8, size=32)
        >>> data.classnames, data.train_list.name
        (['a circle moving left', 'a circle moving right'], 'train.txt')
    """
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height % 2 or width % 2 or min(height, width) < 16:
        raise ValueError(f"size must be even and at least 16 pixels, got {height}x{width}")
    if num_frames < 2 or train_per_class < 0 or test_per_class < 0 or fps < 1:
        raise ValueError(
            f"need num_frames >= 2, fps >= 1 and non-negative counts, got num_frames={num_frames}, "
            f"fps={fps}, train_per_class={train_per_class}, test_per_class={test_per_class}"
        )
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    names = class_names(num_classes)
    params = dict(
        num_classes=num_classes, train_per_class=train_per_class, test_per_class=test_per_class,
        num_frames=num_frames, size=[height, width], fps=fps, crf=crf, seed=seed, format=FORMAT_VERSION,
    )
    root = Path(out_dir)
    found = _existing(root, params)
    if found is not None:
        return found

    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / META_FILE).unlink(missing_ok=True)  # a crash mid-way must not look complete
    per_class = train_per_class + test_per_class
    lines = {TRAIN_LIST: [], TEST_LIST: []}
    videos = []
    for label in range(num_classes):
        for number in range(per_class):
            index = label * per_class + number
            name = f"videos/{index:05d}.mp4"
            rng = np.random.default_rng([seed, label, number])
            _write_mp4(root / name, render_video(label, num_frames, height, width, rng), fps, crf)
            videos.append(name)
            lines[TRAIN_LIST if number < train_per_class else TEST_LIST].append(f"{name} {label}\n")
    for list_name, list_lines in lines.items():
        (root / list_name).write_text("".join(list_lines))
    (root / LABEL_FILE).write_text("".join(f"{name}\n" for name in names))
    (root / META_FILE).write_text(json.dumps({"params": params, "videos": videos}, indent=1))
    return _result(root, num_classes)
