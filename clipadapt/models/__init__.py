"""Video models built from an adapted CLIP: `VideoCLIP`, and the M2-CLIP builder."""

from clipadapt.models.builders import build_clip, build_from_recipe
from clipadapt.models.m2clip import M2CLIP_HEADS, build_m2clip, build_video_clip
from clipadapt.models.text import TextPath, TokenizedPrompts
from clipadapt.models.video_clip import VideoCLIP, VideoFeatures

__all__ = ["build_clip", "build_from_recipe", "M2CLIP_HEADS", "TextPath", "TokenizedPrompts", "VideoCLIP", "VideoFeatures", "build_m2clip", "build_video_clip"]
