"""VideoCLIP: an adapted CLIP that encodes videos and trains a multi-task decoder."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from einops import rearrange

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipadapt.adapters import temporal_pool  # noqa: F401  (registers the built-in poolings)
from clipadapt.attention import efficient_attention as use_efficient_attention
from clipadapt.backbones import UnsupportedModelError, detect
from clipadapt.heads.base import HeadContext, HeadInputs
from clipadapt.heads.decoder import MultiTaskDecoder, fuse
from clipadapt.inject import frames as frames_context
from clipadapt.sets import active_sets, disabled
from clipadapt.models.text import TextPath
from clipadapt.registry import HEADS, POOLINGS

DEFAULT_TEMPLATES = ("a video of {}",)


@dataclass
class VideoFeatures:
    """What `VideoCLIP.encode_video` returns.

    Attributes:
        frames: per-frame embeddings after temporal pooling's residual, ``(B, T, E)``.
        video: pooled, L2-normalised video embeddings, ``(B, E)``.
        cls: frame-mean pooled frame feature before the final norm, ``(B, W)``: the raw class
            token of the last visual block, or the model's own pooling where it does not pool by
            the class token (SigLIP's attention pool); ``None`` for a tower with neither.
    """

    frames: torch.Tensor
    video: torch.Tensor
    cls: torch.Tensor | None


class VideoCLIP(nn.Module):
    """An adapted CLIP of any registered family (open_clip, OpenAI ``clip``, Hugging Face,
    timm for visual-only models) turned into a video classifier.

    Args:
        clip: the CLIP, with adapters injected (or not).
        classnames: class names as words ("apply eye makeup"); prompts are built from `templates`.
        templates: prompt templates with one ``{}``; several are averaged.
        pooling: ``mean`` or ``conv`` (M2-CLIP's temporal pooling adapter).
        num_classes: the class count when class names are not at hand (counting only).
        efficient_attention: switch the CLIP's ``nn.MultiheadAttention`` modules to
            `clipadapt.attention.SelfAttention`, which computes the same attention faster under
            autograd (see `clipadapt.efficient_attention`).

    In training mode ``model(video, labels)`` returns ``{"loss", "losses"}``; in eval mode
    ``model(video)`` returns per-head logits ``(B, C)`` and ``"fused"`` (mean of their
    softmax probabilities).

    Example:
        >>> model = VideoCLIP(clip, ["archery", "abseiling"], pooling="conv")
        >>> model.add_head("cmc", weight=0.5); model.add_head("vc", weight=1.0)
        >>> loss = model(video, labels)["loss"]            # video: (B, T, 3, H, W)
    """

    def __init__(
        self,
        clip: nn.Module,
        classnames: Sequence[str] | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        pooling: str = "mean",
        num_classes: int | None = None,
        pooling_width: int | None = None,
        efficient_attention: bool = True,
    ):
        super().__init__()
        for template in templates:
            if template.count("{}") != 1:
                raise ValueError(f"prompt template {template!r} must contain exactly one '{{}}'")
        self.clip = clip
        spec = detect(clip)
        self.family = spec.family
        if efficient_attention:
            use_efficient_attention(clip)
        self.visual = spec.visual(clip)
        self.visual_tower = self.visual.tower
        self.text: TextPath | None = None
        self.no_text_reason = spec.why_not(clip, "text") or f"the {spec.family} model has no text tower"
        if "text" in spec.towers(clip):
            try:
                self.text = TextPath(clip, spec.text(clip))
            except UnsupportedModelError as error:
                self.no_text_reason = str(error)
        self._logit_scale = (spec.logit_scale(clip),)  # a tuple: not registered as this module's parameter
        self.templates = list(templates)
        self.classnames = list(classnames or [])
        self.num_classes = len(self.classnames) or num_classes or 0
        self.embed_dim = self.visual.embed_dim
        if self.text is not None and self.text.embed_dim != self.embed_dim:
            raise ValueError(f"the image embeddings have width {self.embed_dim}, the text embeddings {self.text.embed_dim}")
        self.visual_width = self.visual_tower.width
        self.pooling_kind, self.pooling_width = pooling, pooling_width
        self.pooling = POOLINGS.get(pooling)(self.embed_dim, pooling_width)
        self.decoder = MultiTaskDecoder()
        self.head_specs: list[dict] = []
        self.lr_mults: dict[str, float] = {}
        self._class_tokens = None
        self._class_cache: tuple | None = None  # (the CLIP's active adapter sets, embeddings (C, E))

    # ---- construction -----------------------------------------------------------------

    def add_head(self, name: str, weight: float = 1.0, lr_mult: float = 1.0, **options: Any):
        """Build the registered head `name` for this model and add it to the decoder.

        Example:
            >>> model.add_head("contrastive", weight=0.5, gather="local")
        """
        cls = HEADS.get(name)
        cls.check_options(name, options)
        head = cls(self.head_context(), **options)
        self.decoder.add(name, head, weight)
        self.head_specs.append({"name": name, "weight": float(weight), "lr_mult": float(lr_mult), "options": dict(options)})
        if lr_mult != 1.0:
            self.set_lr_mult(f"decoder.heads.{name}", lr_mult)
        for child, mult in head.lr_mults().items():
            self.set_lr_mult(f"decoder.heads.{name}.{child}", mult)
        return head

    def video_spec(self) -> dict:
        """What rebuilds this video model on a CLIP with the same adapters: pooling, templates,
        class names and the heads with their options (JSON-ready; stored by `save_adapters`)."""
        return {"pooling": self.pooling_kind, "pooling_width": self.pooling_width, "templates": self.templates,
                "classnames": self.classnames, "num_classes": self.num_classes, "heads": [dict(h) for h in self.head_specs]}

    @classmethod
    def from_adapters(cls, clip: nn.Module, path, classnames: Sequence[str] | None = None) -> "VideoCLIP":
        """The video model saved by ``save_adapters(video_clip, path)``, rebuilt on `clip` (a fresh
        CLIP of the same architecture, with its frozen weights) in eval mode.

        Example:
            >>> clipadapt.save_adapters(model, "m2clip.safetensors")
            >>> again = VideoCLIP.from_adapters(open_clip.create_model("ViT-B-16", pretrained="openai"), "m2clip.safetensors")
        """
        from clipadapt.saving import load_adapters, read_metadata

        video = read_metadata(path)["video"]
        if video is None:
            raise ValueError(f"{path} holds the adapters of a bare CLIP, not a video model; use clipadapt.load_adapters(clip, path)")
        model = cls(clip, classnames or video["classnames"] or None, templates=video["templates"], pooling=video["pooling"],
                    num_classes=video["num_classes"], pooling_width=video["pooling_width"])
        return load_adapters(model, path).eval()

    def init_adapters(self, entries: Sequence[dict]) -> list[str]:
        """Start from adapter files, each loaded into the CLIP as a frozen, active adapter set
        under the sets this model trains (`clipadapt.models.init_adapters.init_adapter_sets`).

        Example:
            >>> model.init_adapters([{"path": "k400.safetensors", "adapter_set": "k400", "trainable": False}])
            ['k400']
        """
        from clipadapt.models.init_adapters import init_adapter_sets

        return init_adapter_sets(self.clip, entries)

    @contextlib.contextmanager
    def frozen(self) -> Iterator["VideoCLIP"]:
        """The frozen CLIP's video model inside the block: no adapter set runs (`clipadapt.disabled`)
        and the video embedding is the mean of the frame embeddings, not the pooling adapter's;
        M2-CLIP's frozen zero-shot baseline. Everything is restored on exit.

        Example:
            >>> with model.frozen():
            ...     baseline = model.zero_shot_logits(video, ["surf", "ride a horse"])
        """
        pooling = self.pooling
        self.pooling = POOLINGS.get("mean")(self.embed_dim, None).to(self.device)
        try:
            with disabled(self.clip):
                yield self
        finally:
            self.pooling = pooling

    def set_lr_mult(self, prefix: str, mult: float) -> None:
        """Scale the learning rate of every parameter whose name starts with `prefix`."""
        self.lr_mults[prefix] = float(mult)

    def head_context(self) -> HeadContext:
        """What a head is built from: sizes, class names, the frozen visual norm, the text service."""
        return HeadContext(
            num_classes=self.num_classes,
            classnames=list(self.classnames),
            templates=list(self.templates),
            embed_dim=self.embed_dim,
            visual_width=self.visual_width,
            visual_norm=self.visual.final_norm,
            has_cls=self.visual.has_pooled,
            text=self.text,
            no_text_reason=self.no_text_reason if self.text is None else "",
        )

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings ``(N, E)`` of images ``(N, 3, H, W)`` (inside `frames()` for T)."""
        return self.visual.encode(frames)

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def logit_scale(self) -> torch.Tensor:
        """CLIP's own temperature, ``exp(logit_scale)``, without gradient."""
        if self._logit_scale[0] is None:
            raise ValueError(f"the {self.family} model has no logit scale (no text tower); heads that compare "
                             "video and text need one")
        return self._logit_scale[0].detach().exp()

    def _text_path(self) -> TextPath:
        if self.text is None:
            raise ValueError(f"this VideoCLIP encodes no text: {self.no_text_reason}")
        return self.text

    # ---- text -------------------------------------------------------------------------

    @staticmethod
    def prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
        """Every template filled with every class name, class-major."""
        return [template.format(name) for name in classnames for template in templates]

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Use new class names for the text-side classifiers (zero-shot on new classes)."""
        self.classnames = list(classnames)
        self._class_tokens = None
        self._class_cache = None

    def _text_trains(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.text_parameters())

    def text_parameters(self):
        """Every parameter of the text path (none without a text tower)."""
        return iter(()) if self.text is None else self.text.parameters()

    def class_embeddings(self) -> torch.Tensor:
        """Normalised class-prompt embeddings ``(C, E)`` (templates averaged).

        Cached when nothing in the text path needs gradient; otherwise the frozen leading text
        blocks are cached and only the rest runs, on sequences cut at the longest prompt.
        """
        if not self.classnames:
            raise ValueError("this VideoCLIP has no class names; give classnames or call set_classnames")
        text = self._text_path()
        sets = active_sets(self.clip)
        if self._class_cache is not None and self._class_cache[0] == sets and not self._text_trains():
            return self._class_cache[1]
        device = self.device
        if self._class_tokens is None or self._class_tokens.ids.device != device:
            self._class_tokens = text.tokenize(self.prompts(self.classnames, self.templates), device)
        emb = text.encode(self._class_tokens, normalize=True, cache_prefix=True)
        emb = F.normalize(emb.reshape(len(self.classnames), len(self.templates), -1).mean(dim=1), dim=-1)
        if not self._text_trains():
            self._class_cache = (sets, emb)
        return emb

    def encode_text(self, prompts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Embeddings ``(N, E)`` of free-form prompts through the adapted text tower."""
        text = self._text_path()
        return text.encode(text.tokenize(list(prompts), self.device), normalize=normalize)

    # ---- video ------------------------------------------------------------------------

    def encode_video(self, video: torch.Tensor) -> VideoFeatures:
        """Encode ``(B, T, 3, H, W)`` videos; sets the frame count for temporal adapters itself."""
        if video.dim() != 5:
            raise ValueError(f"videos must be (B, T, 3, H, W), got shape {tuple(video.shape)}")
        batch, num_frames = video.shape[:2]
        keep = self.visual.keep_pooled()  # the pooled frame feature (class token or the model's own pooling)
        try:
            with frames_context(self.clip, num_frames):
                per_frame = self.encode_frames(video.flatten(0, 1))  # (B·T, E)
        finally:
            if keep is not None:
                keep.remove()
        per_frame = rearrange(per_frame, "(b t) e -> b t e", b=batch)
        per_frame, pooled = self.pooling(per_frame.to(self.pooling_dtype()))
        cls = None if keep is None else rearrange(keep.value, "(b t) w -> b t w", b=batch).mean(dim=1)
        return VideoFeatures(frames=per_frame, video=F.normalize(pooled, dim=-1), cls=cls)

    def pooling_dtype(self) -> torch.dtype:
        param = next(self.pooling.parameters(), None)
        return param.dtype if param is not None else next(self.clip.parameters()).dtype

    def zero_shot_logits(self, video: torch.Tensor, classnames: Sequence[str] | None = None) -> torch.Tensor:
        """``s·cos(video, class prompt)`` over `classnames` (paper eq. 11), ``(B, C)``, with ``s``
        CLIP's own logit scale (`logit_scale`: 100 for OpenAI's weights).

        Example:
            >>> logits = model.zero_shot_logits(video, ["ride a horse", "surf"])
        """
        if classnames is not None and list(classnames) != self.classnames:
            self.set_classnames(classnames)
        features = self.encode_video(video)
        return self.logit_scale() * features.video @ self.class_embeddings().t()

    # ---- the decoder ------------------------------------------------------------------

    def forward(self, video: torch.Tensor, labels: torch.Tensor | None = None, sample_ids: torch.Tensor | None = None) -> dict:
        features = self.encode_video(video)
        out = self.decoder(self.head_inputs(features, labels, sample_ids))
        if self.training or labels is not None:
            if out.loss is None:
                raise RuntimeError("no head produced a loss; add heads with add_head()")
            result = {"loss": out.loss, "losses": out.losses}
            if not self.training:
                result["logits"] = out.logits
            return result
        logits = dict(out.logits)
        if logits:
            logits["fused"] = fuse(out.logits)
        return logits

    def head_inputs(self, features: VideoFeatures, labels: torch.Tensor | None = None,
                    sample_ids: torch.Tensor | None = None) -> HeadInputs:
        """The batch's `HeadInputs`, computing only what some head needs."""
        needs = self.decoder.needs
        prompts = None
        if "label_prompts" in needs and labels is not None:
            prompts = self.prompts([self.classnames[i] for i in labels.tolist()], self.templates[:1])
        return HeadInputs(
            video=features.video,
            frames=features.frames,
            cls=features.cls,
            class_embeddings=self.class_embeddings() if "class_embeddings" in needs else None,
            logit_scale=self.logit_scale() if "logit_scale" in needs else None,
            labels=labels,
            label_prompts=prompts,
            sample_ids=sample_ids,
        )

    def train(self, mode: bool = True):
        self._class_cache = None
        if self.text is not None:
            self.text.clear_cache()
        return super().train(mode)

    # ---- optimisation and checkpoints -------------------------------------------------

    def _lr_mult(self, name: str) -> float:
        matches = [(len(prefix), mult) for prefix, mult in self.lr_mults.items() if name.startswith(prefix)]
        return max(matches)[1] if matches else 1.0

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Trainable parameters grouped by lr multiplier and decay (none on biases and norms).

        Example:
            >>> torch.optim.AdamW([{**g, "lr": 1e-3 * g["lr_mult"]} for g in model.param_groups(0.01)])
        """
        groups: dict[tuple[float, bool], dict] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            decay = param.ndim > 1 and weight_decay > 0
            key = (self._lr_mult(name), decay)
            group = groups.setdefault(key, {"params": [], "names": [], "lr_mult": key[0], "weight_decay": weight_decay if decay else 0.0})
            group["params"].append(param)
            group["names"].append(name)
        for (mult, decay), group in groups.items():
            group["name"] = f"lr×{mult:g}{'' if decay else ', no decay'}"
        return list(groups.values())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable parameters and the heads' buffers (e.g. the masking step counter)."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        state = self.state_dict()
        keep = {name for name in state if name in trainable or (name.startswith("decoder.") and name.endswith(".calls"))}
        return {name: state[name] for name in state if name in keep}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise KeyError(f"trainable state mismatch: missing {missing[:4]}, unexpected {unexpected[:4]}")
        self.load_state_dict(state, strict=False)
