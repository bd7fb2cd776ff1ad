"""Video data for clipadapt: readers, clip sampling, transforms, datasets, loaders and a
synthetic benchmark.

Example:
    >>> from clipadapt.data import VideoDataset, build_loader, synthetic
    >>> data = synthetic.generate("/tmp/clipadapt-synthetic-doc", num_classes=2, train_per_class=2,
    ...                           test_per_class=1, num_frames=8, size=32)
    >>> len(VideoDataset(data.test_list, root=data.root, size=32))
    2
"""

from . import synthetic
from .datasets import (
    Annotations,
    BadSampleError,
    Entry,
    ListFileError,
    TooManyBadSamples,
    VideoDataset,
    kinetics400_classes,
    prompt_name,
    read_label_map,
    read_list_file,
)
from .layouts import read_hmdb51, read_kinetics400, read_ssv2, read_ucf101
from .frame_store import FrameStoreReader, set_decode_device
from .loader import EpochSampler, VideoLoader, build_loader
from .prepare import PrepareSummary, prepare
from .sampling import FrameSampler, dense_indices, segment_indices
from .transforms import (
    CLIP_MEAN,
    CLIP_STD,
    CenterCrop,
    Compose,
    HorizontalFlip,
    Normalize,
    RandAugment,
    RandomCrop,
    RandomResizedCrop,
    ShortSideResize,
    ShortSideScaleJitter,
    SpatialCrops,
    eval_transform,
    normalize_video,
    train_transform,
)
from .video import (
    DecordReader,
    FrameFolderReader,
    PyAVReader,
    TorchCodecReader,
    VideoError,
    VideoProbe,
    available_backends,
    decord_available,
    open_video,
    probe_video,
    torchcodec_available,
)

__all__ = [
    "synthetic",
    "open_video", "probe_video", "VideoProbe", "VideoError", "DecordReader", "TorchCodecReader", "PyAVReader",
    "FrameFolderReader", "decord_available", "torchcodec_available", "available_backends",
    "FrameSampler", "dense_indices", "segment_indices",
    "Compose", "ShortSideScaleJitter", "ShortSideResize", "RandomCrop", "CenterCrop", "RandomResizedCrop",
    "HorizontalFlip", "RandAugment", "SpatialCrops", "Normalize", "CLIP_MEAN", "CLIP_STD",
    "train_transform", "eval_transform", "normalize_video",
    "prepare", "PrepareSummary", "FrameStoreReader", "set_decode_device",
    "VideoDataset", "Entry", "Annotations", "ListFileError", "BadSampleError", "TooManyBadSamples",
    "read_list_file", "read_label_map", "prompt_name", "kinetics400_classes",
    "read_kinetics400", "read_ssv2", "read_ucf101", "read_hmdb51",
    "build_loader", "VideoLoader", "EpochSampler",
]
