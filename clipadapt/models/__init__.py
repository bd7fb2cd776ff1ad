"""Video models built from an adapted CLIP: `VideoCLIP`, and the M2-CLIP builder."""

from clipadapt.models.m2clip import M2CLIP_HEADS, build_m2clip, build_video_clip
from clipadapt.models.text import TextPath, TokenizedPrompts
from clipadapt.models.video_clip import VideoCLIP, VideoFeatures

__all__ = ["M2CLIP_HEADS", "TextPath", "TokenizedPrompts", "VideoCLIP", "VideoFeatures", "build_m2clip", "build_video_clip"]
