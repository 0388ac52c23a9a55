"""Training data: MS-COCO (pycocotools) or any image folder as random SxS crops, plus fixed preview photos."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from fststyle.errors import UserError
from fststyle.io.convert import pil_to_tensor
from fststyle.io.decode import ImageReadError, open_image, read_rgb_uint8
from fststyle.io.files import atomic_write, resolved_path
from fststyle.io.listing import IMAGE_SUFFIXES, image_files, list_images

_README_HINT = "see data/README.md for the COCO download links and the expected layout"
#: the largest random up-scaling of a training image before its crop: at 2 a 256 px crop shows a quarter of
#: what it shows unscaled, already closer than any preview photo is framed
MAX_SCALE_JITTER = 2.0


class UnreadableImageWarning(UserWarning):
    """A training image could not be decoded and was skipped."""


class _RandomCropImages(Dataset):
    """Images resized (shorter side = image_size) and randomly cropped to Tensor[3,S,S] float in [0,1].

    ``scale_jitter`` > 1 first scales each resized image by a random factor in [1, scale_jitter], so the crops
    see objects at several sizes; ``flip`` mirrors half of the crops left to right.
    """

    def __init__(
        self, paths: Sequence[str | os.PathLike], image_size: int, cache_dir: str | os.PathLike | None = None,
        scale_jitter: float = 1.0, flip: bool = False,
    ) -> None:
        if image_size <= 0:
            raise UserError(f"data.image_size must be positive, got {image_size}")
        if not 1.0 <= scale_jitter <= MAX_SCALE_JITTER:
            raise UserError(f"data.scale_jitter must be from 1 (off) to {MAX_SCALE_JITTER:g}, got {scale_jitter}")
        self.scale_jitter = float(scale_jitter)
        self.flip = bool(flip)
        # One numpy string array instead of a list of Python objects: DataLoader workers read it
        # without touching refcounts, so the forked copies stay shared (no per-worker memory growth).
        self._paths = np.array([str(p) for p in paths])
        self.image_size = image_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._warned: set[str] = set()
        self._cache_write_failed = False

    @property
    def paths(self) -> list[Path]:
        """The image files, in dataset order."""
        return [Path(p) for p in self._paths]

    def __len__(self) -> int:
        return len(self._paths)

    def _cache_file(self, path: str) -> Path:
        """Where the resized copy of `path` lives; the key changes when the file's size or mtime does."""
        stat = os.stat(path)
        key = hashlib.sha1(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        return self.cache_dir / f"short{self.image_size}" / key[:2] / f"{key}.npy"

    def _resized_uint8(self, path: str) -> torch.Tensor:
        """Decoded image with shorter side = image_size, uint8 Tensor[3,h,w]; via the cache when enabled.

        The cache holds uncompressed uint8 arrays (about 260 kB per 4:3 image at 256), written once,
        atomically; an unreadable cache entry is simply rebuilt.
        """
        if self.cache_dir is not None:
            cached = self._cache_file(path)
            with contextlib.suppress(OSError, ValueError):
                return torch.from_numpy(np.load(cached, allow_pickle=False))
        # shorter side -> image_size (bilinear, antialiased)
        image = TF.resize(read_rgb_uint8(path), [self.image_size], antialias=True)
        if self.cache_dir is not None:
            try:
                with atomic_write(cached) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, image.numpy())
            except OSError as err:  # e.g. a full disk: train on, uncached, and say so once
                if not self._cache_write_failed:
                    self._cache_write_failed = True
                    warnings.warn(f"decode cache: cannot write {cached} ({err}); continuing without it",
                                  stacklevel=3)
        return image

    def __getitem__(self, index: int) -> torch.Tensor | None:
        """Tensor[3,S,S] float32 in [0,1], or None (with a warning, once per file) if it cannot be read."""
        path = str(self._paths[index])
        try:
            image = self._resized_uint8(path)
        except (ImageReadError, OSError) as err:
            if path not in self._warned:
                self._warned.add(path)
                warnings.warn(f"skipping unreadable training image {path}: {err}", UnreadableImageWarning,
                              stacklevel=2)
            return None
        size = self.image_size
        if self.scale_jitter > 1:
            factor = 1 + float(torch.rand(())) * (self.scale_jitter - 1)
            image = TF.resize(image, [round(min(image.shape[-2:]) * factor)], antialias=True)
        height, width = image.shape[-2:]
        top = int(torch.randint(0, height - size + 1, ()))
        left = int(torch.randint(0, width - size + 1, ()))
        image = TF.crop(image, top, left, size, size)
        if self.flip and bool(torch.rand(()) < 0.5):
            image = TF.horizontal_flip(image)
        return TF.to_dtype(image, torch.float32, scale=True)


class CocoImages(_RandomCropImages):
    """MS-COCO images listed by the annotation file (sorted by image id) as random crops Tensor[3,S,S]."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train2017",
        image_size: int = 256,
        ann_file: str | os.PathLike | None = None,
        max_images: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        scale_jitter: float = 1.0,
        flip: bool = False,
    ) -> None:
        from pycocotools.coco import COCO

        root = Path(root)
        ann_path = Path(ann_file) if ann_file is not None else root / "annotations" / f"instances_{split}.json"
        if not ann_path.is_file():
            raise FileNotFoundError(
                f"COCO annotation file not found: {ann_path}. Expected {root}/annotations/instances_{split}.json "
                f"next to the images in {root}/{split}/ (a plain folder of images: data.kind=folder); {_README_HINT}."
            )
        image_dir = root / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder not found: {image_dir}; {_README_HINT}.")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(ann_path))
        ids = sorted(coco.getImgIds())[:max_images]
        files = [image_dir / info["file_name"] for info in coco.loadImgs(ids)]
        if not files:
            raise UserError(f"{ann_path} lists no images (or data.max_images=0); {_README_HINT}")
        super().__init__(files, image_size, cache_dir, scale_jitter, flip)
        self.image_ids = ids


class ImageFolderImages(_RandomCropImages):
    """Every image under a folder (recursive, sorted) as random crops Tensor[3,S,S]."""

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int = 256,
        max_images: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        scale_jitter: float = 1.0,
        flip: bool = False,
    ) -> None:
        files = list_images(root)[:max_images]
        if not files:
            raise UserError(f"no images found under {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}; "
                            "data.max_images=0 keeps none): point data.root at a folder of photos")
        super().__init__(files, image_size, cache_dir, scale_jitter, flip)


def collate_skipping_bad(
    batch: Sequence[torch.Tensor | None], image_size: int | None = None
) -> tuple[torch.Tensor, int]:
    """Stack the readable items into Tensor[N,3,S,S] and count the unreadable (None) ones.

    A batch with no readable item gives an empty Tensor[0,3,S,S] (S = image_size, or 0 if unknown).
    """
    images = [item for item in batch if item is not None]
    skipped = len(batch) - len(images)
    if not images:
        size = image_size or 0
        return torch.empty(0, 3, size, size), skipped
    return torch.stack(images), skipped


class PreviewImages(Dataset):
    """Fixed preview photos: shorter side resized to `size`, centre-cropped to Tensor[3,S,S] in [0,1]."""

    def __init__(self, paths: Sequence[str | os.PathLike], size: int = 256) -> None:
        self.paths = [Path(p) for p in paths]
        self.size = size
        # Decoded once, up front: a bad preview path fails at start-up, not at the first validation.
        self._images = [self._prepare(path) for path in self.paths]

    def _prepare(self, path: Path) -> torch.Tensor:
        """Read, resize (shorter side = size, bicubic) and centre-crop one photo -> Tensor[3,S,S]."""
        rgb, _ = open_image(path)
        scale = self.size / min(rgb.size)
        width, height = max(self.size, round(rgb.width * scale)), max(self.size, round(rgb.height * scale))
        rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
        left, top = (width - self.size) // 2, (height - self.size) // 2
        return pil_to_tensor(rgb.crop((left, top, left + self.size, top + self.size)))

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self._images[index]


class StyleDataModule(pl.LightningDataModule):
    """Content images for training (batches of (Tensor[N,3,S,S], skipped)) and preview photos for validation.

    `cache_dir` enables the decode-once cache: each image is decoded and resized once, then read back as
    raw uint8 (about 10x faster than decoding; about 31 GB for COCO train2017 at image_size=256).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        kind: str = "coco",
        split: str = "train2017",
        image_size: int = 256,
        batch_size: int = 4,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        preview: Sequence[str | os.PathLike] = (),
        preview_size: int = 256,
        max_images: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        scale_jitter: float = 1.0,
        flip: bool = False,
    ) -> None:
        super().__init__()
        if kind not in ("coco", "folder"):
            raise UserError(f"data.kind must be coco (annotations/ + train2017/) or folder (every image under "
                            f"data.root), got {kind!r}")
        self.save_hyperparameters()
        self.train_set: _RandomCropImages | None = None
        self.preview_set: PreviewImages | None = None

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> StyleDataModule:
        """From the ``data`` config group, its paths resolved; ``preview`` may be a folder or a list of files."""
        data = dict(data)
        # str, not Path: the data module's hyper-parameters go into checkpoints read with weights_only=True
        data["root"] = str(resolved_path(data["root"], "training images (data.root)"))
        preview = data.get("preview") or []
        data["preview"] = ([str(p.resolve()) for p in image_files(preview, "preview folder (data.preview)")]
                           if preview else [])
        if data.get("cache_dir") is not None:
            data["cache_dir"] = str(resolved_path(data["cache_dir"], "cache_dir", must_exist=False))
        return cls(**data)

    def setup(self, stage: str | None = None) -> None:
        """Index the training images and decode the preview photos (once)."""
        hp = self.hparams
        if self.train_set is None:
            if hp.kind == "coco":
                self.train_set = CocoImages(
                    hp.root, hp.split, hp.image_size, max_images=hp.max_images, cache_dir=hp.cache_dir,
                    scale_jitter=hp.scale_jitter, flip=hp.flip,
                )
            else:
                self.train_set = ImageFolderImages(
                    hp.root, hp.image_size, max_images=hp.max_images, cache_dir=hp.cache_dir,
                    scale_jitter=hp.scale_jitter, flip=hp.flip,
                )
        if self.preview_set is None:
            self.preview_set = PreviewImages(list(hp.preview), hp.preview_size)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of (Tensor[N,3,S,S], skipped) with N <= batch_size; the last partial batch is dropped."""
        self.setup("fit")
        hp = self.hparams
        return DataLoader(
            self.train_set,
            batch_size=hp.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=hp.num_workers,
            collate_fn=functools.partial(collate_skipping_bad, image_size=hp.image_size),
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        """All preview photos as one Tensor[N,3,S,S] batch; an empty list (no validation) if there are none."""
        self.setup("validate")
        if len(self.preview_set) == 0:
            return []
        return DataLoader(self.preview_set, batch_size=len(self.preview_set), shuffle=False)
