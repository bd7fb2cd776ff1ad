"""What ``clipadapt eval``, ``zeroshot`` and ``predict`` do with a trained checkpoint."""

from __future__ import annotations

import contextlib
import statistics
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from clipadapt.recipes import Recipe
from clipadapt.engine.checkpoint import CheckpointMismatchError, load_checkpoint, load_frozen, recipe_diff, seed_everything
from clipadapt.engine.evaluate import eval_batch_videos, eval_options, evaluate


def trained_file(path: str | Path) -> Path:
    """The file a trained run is loaded from: `path` itself, or in a run directory its
    ``checkpoints/best.pt`` (else ``checkpoints/last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise FileNotFoundError(f"{path} is a directory without checkpoints/best.pt or checkpoints/last.pt")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (accepted: a run directory, a checkpoint, or an exported adapter file)")
    return path


def load_exported(path: str | Path, classnames: Sequence[str] | None = None):
    """The `VideoCLIP` of an adapter file written by ``clipadapt export``: the backbone is built
    from the recipe stored in the file, the adapters, pooling and heads loaded onto it."""
    from clipadapt.data.recipe import recipe_preprocess
    from clipadapt.models import VideoCLIP, build_clip
    from clipadapt.saving import read_metadata

    meta = read_metadata(path)
    recipe = meta["recipe"]
    if recipe is None:
        raise ValueError(f"{path} stores no recipe to build its backbone from; build the CLIP yourself and "
                         "call clipadapt.VideoCLIP.from_adapters(clip, path)")
    if not recipe["model"].get("weights"):
        raise ValueError(f"{path} was trained on a backbone with random weights (model.weights: null), which an "
                         "adapter file does not hold; load the training checkpoint instead")
    clip = build_clip(recipe["model"])
    if meta["stacked_on"] and recipe["model"].get("init_adapters"):  # one set of a run that started from others
        from clipadapt.models.init_adapters import init_adapter_sets

        init_adapter_sets(clip, recipe["model"]["init_adapters"])
    model = VideoCLIP.from_adapters(clip, path, classnames, tokenizer=recipe["model"].get("tokenizer"))
    model.recipe = recipe  # how its clips were made: `predict` samples as training did
    model.preprocess = recipe_preprocess(recipe)
    return model


def export_adapters(checkpoint: str | Path, out: str | Path, adapter_set: str | None = None) -> Path:
    """Write the adapters, pooling and heads of a trained run (a checkpoint or run directory) to
    the safetensors adapter file `out`, with the video model's spec and the run's recipe; with
    `adapter_set`, that set's adapters only (`clipadapt.save_adapters`).

    Example:
        >>> export_adapters("runs/quickstart/m2clip", "m2clip.safetensors")   # doctest: +SKIP
    """
    from clipadapt.saving import save_adapters

    checkpoint = trained_file(checkpoint)
    if checkpoint.suffix == ".safetensors":
        raise ValueError(f"{checkpoint} is already an adapter file; export takes a training checkpoint or a run directory")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"export writes safetensors: give an output path ending in .safetensors, not {str(out)!r}")
    if out.exists():  # as `clipadapt cp`: an export never replaces a file
        raise FileExistsError(f"{out} exists; choose another destination or remove it first")
    return save_adapters(load_trained(checkpoint), out, recipe=load_checkpoint(checkpoint)["recipe"], adapter_set=adapter_set)


def load_trained(checkpoint: str | Path, classnames: Sequence[str] | None = None):
    """The `VideoCLIP` of a trained run, for inference (``clipadapt.load_trained``).

    `checkpoint` is a run directory (its ``checkpoints/best.pt``, else ``last.pt``), a training
    checkpoint, or an adapter file written by ``clipadapt export`` (``.safetensors``). For a
    checkpoint:

    The model is rebuilt from the recipe stored in the checkpoint (seeded as training was), with
    the class names it was trained on; a random ``weights: null`` backbone gets the frozen tensors
    the checkpoint stored, and every frozen tensor is checked against the checkpoint's digests
    (:class:`~clipadapt.engine.checkpoint.CheckpointMismatchError` says what differs), then the
    trainable weights are loaded.

    The model keeps the recipe it was trained with as ``model.recipe`` (a mapping), from which
    `predict` takes frames, sampling and size.

    Example:
        >>> model = load_trained("runs/m2clip_k400/checkpoints/best.pt")   # doctest: +SKIP
    """
    from clipadapt.models import build_from_recipe

    checkpoint = trained_file(checkpoint)
    if checkpoint.suffix == ".safetensors":
        return load_exported(checkpoint, classnames)
    state = load_checkpoint(checkpoint)
    names = classnames or state.get("extra", {}).get("classnames") or None
    seed_everything(int(state["identity"].get("seed") or 0))
    model = build_from_recipe(state["recipe"], names)
    load_frozen(state, model, checkpoint)
    try:
        model.load_trainable_state_dict(state["model"])
    except (RuntimeError, KeyError) as error:
        first = (error.args[0] if error.args else str(error)).strip().splitlines()[0]
        raise CheckpointMismatchError(f"{checkpoint}: its trainable tensors do not fit the model its recipe builds ({first})") from None
    model.recipe = state["recipe"]  # how its clips were made: `predict` samples as training did
    return model.eval()


def check_model_matches(recipe: Recipe, checkpoint: str | Path) -> None:
    """Refuse to evaluate `checkpoint` with a recipe whose model sections (model, adapters, video,
    heads) differ from those it was trained with, printing the differences.

    Example:
        >>> check_model_matches(load_recipe("quickstart"), "runs/quickstart/m2clip/checkpoints/best.pt")  # doctest: +SKIP
    """
    stored = load_checkpoint(checkpoint)["recipe"]
    changes = recipe_diff(stored, recipe.to_dict(), keys=("model", "adapters", "video", "heads"),
                          free=("model.grad_checkpointing",))
    if changes:
        raise CheckpointMismatchError(f"{checkpoint} was trained with another model than recipe {recipe.name!r} describes: "
                                      f"{'; '.join(changes)} (give the recipe it was trained with, or matching overrides)")


class ZeroShot(nn.Module):
    """Wraps a `VideoCLIP` so that evaluation scores videos against its current class names only."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> dict:
        return {"zeroshot": self.model.zero_shot_logits(video)}


def _loader(recipe: Recipe, dataset):
    from clipadapt.data import build_loader

    return build_loader(dataset, eval_batch_videos(recipe.data.batch_size, dataset.num_views), num_workers=recipe.data.num_workers,
                        seed=recipe.seed)


def evaluate_checkpoint(recipe: Recipe, checkpoint: str | Path, split: str = "test") -> dict:
    """Top-1/top-5 per head and fused of a checkpoint on the recipe's `split`, with its views.

    The recipe's model sections must be those the checkpoint was trained with (:func:`check_model_matches`).
    """
    from clipadapt.data.recipe import build_dataset

    check_model_matches(recipe, checkpoint)
    dataset = build_dataset(recipe, split)
    model = load_trained(checkpoint)
    if model.classnames and dataset.classnames and len(model.classnames) != len(dataset.classnames):
        raise ValueError(f"{checkpoint} was trained on {len(model.classnames)} classes, the {split} set has {len(dataset.classnames)}")
    return evaluate(model, _loader(recipe, dataset), **eval_options(recipe), clips_per_forward=recipe.data.batch_size)


def evaluate_adapter_sets(recipe: Recipe, checkpoint: str | Path, adapter_sets: Sequence[str], split: str = "test") -> dict:
    """:func:`evaluate_checkpoint` with each of `adapter_sets` active in turn (one model load):
    ``{set: metrics}``. An entry ``"a+b"`` stacks sets ``a`` and ``b``.

    Example:
        >>> evaluate_adapter_sets(recipe, "runs/ssv2/checkpoints/best.pt", ["k400", "k400+default"])  # doctest: +SKIP
    """
    from clipadapt.data.recipe import build_dataset
    from clipadapt.sets import activate

    check_model_matches(recipe, checkpoint)
    dataset = build_dataset(recipe, split)
    model = load_trained(checkpoint)
    results = {}
    for entry in adapter_sets:
        activate(model, *entry.split("+"))
        results[entry] = evaluate(model, _loader(recipe, dataset), **eval_options(recipe), clips_per_forward=recipe.data.batch_size)
    return results


def frozen_clip(recipe: Recipe, classnames: Sequence[str]):
    """The recipe's CLIP (`clipadapt.models.builders.recipe_clip`: random weights drawn from the
    recipe's seed) with no adapter and no head, its video embedding the mean of the frame
    embeddings: zero-shot logits are then plain CLIP's, ``scale·cos(mean frame, prompt)``.

    Example:
        >>> frozen_clip(recipe, ["surf", "ride a horse"]).zero_shot_logits(video)   # doctest: +SKIP
    """
    from clipadapt.data.recipe import recipe_preprocess
    from clipadapt.models import build_video_clip
    from clipadapt.models.builders import recipe_clip

    model = build_video_clip(recipe_clip(recipe), classnames, pooling="mean", templates=recipe.video.templates or ["a video of {}"],
                             tokenizer=recipe.model.tokenizer).eval()
    model.preprocess = recipe_preprocess(recipe)
    return model


def zero_shot(recipe: Recipe, checkpoint: str | Path | None, splits: Sequence[int] = (1,), frozen: bool = False) -> dict:
    """Zero-shot top-1/top-5 on the recipe's test set for each split, and their mean ± population std.

    With `frozen`, the checkpoint's model is scored with its adapters disabled and the mean of
    the frame embeddings as the video embedding (`VideoCLIP.frozen`): the frozen-CLIP baseline
    of that very run, on the backbone weights it was trained on. Without a checkpoint the
    recipe's own CLIP is scored (`frozen_clip`), with or without `frozen`: the paper's "frozen
    zero-shot" baseline.

    Example:
        >>> zero_shot(load_recipe("m2clip_zeroshot_ucf101", ["data.root=/data/ucf101/videos"]), None)  # doctest: +SKIP
        >>> zero_shot(recipe, "runs/m2clip_k400/checkpoints/best.pt", frozen=True)  # doctest: +SKIP
    """
    from clipadapt.data.recipe import build_dataset

    model = load_trained(checkpoint) if checkpoint else None
    per_split = {}
    for split in splits:
        recipe.data.split = split
        dataset = build_dataset(recipe, "test", zero_shot=True)
        if model is None:
            model = frozen_clip(recipe, dataset.classnames)
        model.set_classnames(dataset.classnames)
        options = eval_options(recipe)
        with model.frozen() if frozen and checkpoint else contextlib.nullcontext():
            metrics = evaluate(ZeroShot(model), _loader(recipe, dataset), precision=options["precision"],
                               view_fusion=options["view_fusion"], clips_per_forward=recipe.data.batch_size)
        per_split[split] = metrics
    top1 = [m["zeroshot/top1"] for m in per_split.values()]
    return {
        "splits": per_split,
        "top1_mean": statistics.fmean(top1),
        "top1_std": statistics.pstdev(top1),
        "top5_mean": statistics.fmean(m["zeroshot/top5"] for m in per_split.values()),
    }


def predict(
    model,
    videos: Sequence[str | Path],
    *,
    num_frames: int | None = None,
    size: int | None = None,
    sampling: str | None = None,
    stride: int | None = None,
    top_k: int = 5,
    classnames: Sequence[str] | None = None,
) -> list[list[tuple[str, float]]]:
    """Top-k classes and probabilities for each video file.

    Clips are sampled as the model's training recipe says (``model.recipe``, which
    `load_trained` sets: ``data.frames``, ``data.sampling``, ``data.stride``) and resized and
    normalised as it says (``data.size``, ``data.interpolation``, ``data.mean``, ``data.std``, or
    the model's own: `clipadapt.data.recipe.recipe_preprocess`); an argument given here overrides
    it. A model without a recipe needs `num_frames` (``segments`` sampling unless told) and is
    resized and normalised as it carries (``model.preprocess``). With `classnames` the videos are
    classified zero-shot among those names; otherwise by the model's trained heads (fused).

    Example:
        >>> model = load_trained("runs/quickstart/m2clip")                       # doctest: +SKIP
        >>> predict(model, ["clip.mp4"], classnames=["surf", "ride a horse"])   # doctest: +SKIP
        [[('surf', 0.91), ('ride a horse', 0.09)]]
    """
    from clipadapt.backbones.preprocess import carried_preprocess
    from clipadapt.data import open_video
    from clipadapt.data.recipe import recipe_preprocess
    from clipadapt.data.sampling import dense_indices, segment_indices
    from clipadapt.data.transforms import eval_transform, normalize_video

    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    recipe = getattr(model, "recipe", None) or {}
    data = recipe.get("data") or {}
    preprocess = recipe_preprocess(recipe) if recipe else carried_preprocess(model)
    num_frames = num_frames or data.get("frames")
    size = size or preprocess.size
    sampling = sampling or data.get("sampling") or "segments"
    stride = stride or data.get("stride") or 16
    if num_frames is None or size is None:
        raise ValueError("this model carries no training recipe (model.recipe): give predict num_frames= and size= "
                         "(or load it with clipadapt.load_trained, which keeps the recipe)")
    transform = eval_transform(size, interpolation=preprocess.interpolation)
    if classnames:
        model.set_classnames(classnames)
    names = list(model.classnames)
    results = []
    for path in videos:
        reader = open_video(path)
        if sampling == "segments":
            indices = segment_indices(len(reader), num_frames, train=False)[0]
        else:
            indices = dense_indices(len(reader), num_frames, stride, train=False)[0]
        frames = reader.get(indices.tolist()).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
        clip = normalize_video(transform(frames).unsqueeze(0), None, preprocess.mean, preprocess.std)
        with torch.no_grad():
            if classnames:
                probs = model.zero_shot_logits(clip).softmax(-1)[0]
            else:
                probs = model(clip)["fused"][0]
        values, order = probs.topk(min(top_k, len(names)))
        results.append([(names[i], float(v)) for v, i in zip(values.tolist(), order.tolist())])
    return results
