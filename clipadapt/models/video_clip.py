"""VideoCLIP: an adapted CLIP that encodes videos and trains a multi-task decoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipadapt.adapters import temporal_pool  # noqa: F401  (registers the built-in poolings)
from clipadapt.attention import efficient_attention as use_efficient_attention
from clipadapt.backbones import detect, get_tower
from clipadapt.backbones.base import encoder, first_tensor
from clipadapt.heads.base import HeadInputs
from clipadapt.heads.decoder import MultiTaskDecoder, fuse
from clipadapt.inject import frames as frames_context
from clipadapt.models.text import text_path
from clipadapt.registry import HEADS, POOLINGS

DEFAULT_TEMPLATES = ("a video of {}",)


@dataclass
class VideoFeatures:
    """What `VideoCLIP.encode_video` returns.

    Attributes:
        frames: per-frame embeddings after temporal pooling's residual, ``(B, T, E)``.
        video: pooled, L2-normalised video embeddings, ``(B, E)``.
        cls: frame-mean raw class token of the last visual block (before ``ln_post``), ``(B, W)``.
    """

    frames: torch.Tensor
    video: torch.Tensor
    cls: torch.Tensor


class VideoCLIP(nn.Module):
    """An adapted CLIP (open_clip, OpenAI ``clip`` or Hugging Face ``CLIPModel``) turned into a
    video classifier.

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
        self.family = detect(clip).family
        if efficient_attention:
            use_efficient_attention(clip)
        self.visual_tower = get_tower(clip, "visual")
        self.text = text_path(clip)
        self.templates = list(templates)
        self.classnames = list(classnames or [])
        self.num_classes = len(self.classnames) or num_classes or 0
        self.embed_dim = self.text.embed_dim
        self.visual_width = self.visual_tower.width
        self.pooling = POOLINGS.get(pooling)(self.embed_dim, pooling_width)
        self.decoder = MultiTaskDecoder()
        self.lr_mults: dict[str, float] = {}
        self._class_tokens = None
        self._class_cache: torch.Tensor | None = None

    # ---- construction -----------------------------------------------------------------

    def add_head(self, name: str, weight: float = 1.0, lr_mult: float = 1.0, **options: Any):
        """Build the registered head `name` for this model and add it to the decoder.

        Example:
            >>> model.add_head("contrastive", weight=0.5, gather="local")
        """
        head = HEADS.get(name)(self, **options)
        self.decoder.add(name, head, weight)
        if lr_mult != 1.0:
            self.set_lr_mult(f"decoder.heads.{name}", lr_mult)
        for child, mult in head.lr_mults().items():
            self.set_lr_mult(f"decoder.heads.{name}.{child}", mult)
        return head

    def set_lr_mult(self, prefix: str, mult: float) -> None:
        """Scale the learning rate of every parameter whose name starts with `prefix`."""
        self.lr_mults[prefix] = float(mult)

    def visual_ln_post(self) -> nn.Module:
        """CLIP's own norm after the visual tower (``ln_post``; ``post_layernorm`` in transformers)."""
        if self.family == "hf":
            return self.clip.vision_model.post_layernorm
        return self.clip.visual.ln_post

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings ``(N, E)`` of images ``(N, 3, H, W)`` (inside `frames()` for T)."""
        return encoder(self.clip, "visual")(frames)

    def logit_scale(self) -> torch.Tensor:
        """CLIP's own temperature, ``exp(logit_scale)``, without gradient."""
        return self.clip.logit_scale.detach().exp()

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
        yield from self.text.frozen_inputs()
        for block in self.text.tower.blocks:
            yield from block.module.parameters()
        yield from self.text.ln_final.parameters()
        projection = self.text.projection
        yield from projection.parameters() if isinstance(projection, nn.Module) else [projection]

    def class_embeddings(self) -> torch.Tensor:
        """Normalised class-prompt embeddings ``(C, E)`` (templates averaged).

        Cached when nothing in the text path needs gradient; otherwise the frozen leading text
        blocks are cached and only the rest runs, on sequences cut at the longest prompt.
        """
        if not self.classnames:
            raise ValueError("this VideoCLIP has no class names; give classnames or call set_classnames")
        if self._class_cache is not None and not self._text_trains():
            return self._class_cache
        device = self.clip.logit_scale.device
        if self._class_tokens is None or self._class_tokens.ids.device != device:
            self._class_tokens = self.text.tokenize(self.prompts(self.classnames, self.templates), device)
        emb = self.text.encode(self._class_tokens, normalize=True, cache_prefix=True)
        emb = F.normalize(emb.reshape(len(self.classnames), len(self.templates), -1).mean(dim=1), dim=-1)
        if not self._text_trains():
            self._class_cache = emb
        return emb

    def encode_text(self, prompts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Embeddings ``(N, E)`` of free-form prompts through the adapted text tower."""
        tokens = self.text.tokenize(list(prompts), self.clip.logit_scale.device)
        return self.text.encode(tokens, normalize=normalize)

    # ---- video ------------------------------------------------------------------------

    def encode_video(self, video: torch.Tensor) -> VideoFeatures:
        """Encode ``(B, T, 3, H, W)`` videos; sets the frame count for temporal adapters itself."""
        if video.dim() != 5:
            raise ValueError(f"videos must be (B, T, 3, H, W), got shape {tuple(video.shape)}")
        batch, num_frames = video.shape[:2]
        captured = {}
        tower = self.visual_tower
        cls_index = tower.cls_index or 0

        def keep_cls(module, args, output):
            tokens = first_tensor(output)
            captured["cls"] = tokens[cls_index] if tower.seq_first else tokens[:, cls_index]

        handle = tower.blocks[-1].module.register_forward_hook(keep_cls)
        try:
            with frames_context(self.clip, num_frames):
                per_frame = self.encode_frames(video.flatten(0, 1))  # (B·T, E)
        finally:
            handle.remove()
        per_frame = per_frame.reshape(batch, num_frames, -1)
        per_frame, pooled = self.pooling(per_frame.to(self.pooling_dtype()))
        cls = captured["cls"].reshape(batch, num_frames, -1).mean(dim=1)
        return VideoFeatures(frames=per_frame, video=F.normalize(pooled, dim=-1), cls=cls)

    def pooling_dtype(self) -> torch.dtype:
        param = next(self.pooling.parameters(), None)
        return param.dtype if param is not None else self.clip.logit_scale.dtype

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
        classes = self.class_embeddings() if self.decoder.needs_class_embeddings else None
        out = self.decoder(HeadInputs(features, classes, labels, self, sample_ids))
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

    def train(self, mode: bool = True):
        self._class_cache = None
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
