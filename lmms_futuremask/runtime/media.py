"""What a harness hands over as a visual, turned into what a processor takes: PIL images, or a video's frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tiff", ".webp")


def video_frames(path: str | Path, count: int) -> list[Any]:
    """``count`` frames sampled uniformly over a video file (decoded with PyAV), as RGB PIL images."""
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_image().convert("RGB") for frame in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: the video holds no frame")
    if len(frames) <= count:
        return frames
    return [frames[round(i * (len(frames) - 1) / (count - 1))] for i in range(count)] if count > 1 else frames[:1]


def visuals_of(visuals: Any, video_frame_count: int, videos: bool) -> tuple[list[Any], bool]:
    """``(images, is_video)`` from what a task's ``doc_to_visual`` returned: PIL images (nested lists flattened),
    image file paths, or one video file path (decoded to frames where ``videos`` is allowed)."""
    from PIL import Image

    flat = _flatten(visuals)
    images, video = [], False
    for item in flat:
        if isinstance(item, Image.Image):
            images.append(item.convert("RGB"))
        elif isinstance(item, (str, Path)) and Path(item).suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(item) as image:
                images.append(image.convert("RGB"))
        elif isinstance(item, (str, Path)):
            if not videos or len(flat) != 1:
                raise TypeError(f"{item}: a video, which this model does not take (use --model futuremask)")
            images, video = video_frames(item, video_frame_count), True
        else:
            raise TypeError(f"doc_to_visual returned a {type(item).__name__}; PIL images or file paths are taken")
    return images, video


def _flatten(visuals: Any) -> list[Any]:
    if visuals is None:
        return []
    if not isinstance(visuals, (list, tuple)):
        return [visuals]
    return [v for item in visuals for v in _flatten(item)]
