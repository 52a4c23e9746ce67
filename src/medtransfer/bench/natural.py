"""Natural-image sources (2D): Fashion-MNIST classification, pasted-item segmentation, photo crops.

* classification: Fashion-MNIST images ``(N, 28, 28)`` uint8 with labels 0-9 (:data:`FASHION_MNIST_CLASSES`);
* segmentation: ``(N, S, S)`` float32 scenes, a scikit-image photo/texture crop as background with 1-4
  Fashion-MNIST items pasted at random scale, position and contrast; per-pixel labels 0 = background,
  ``1 + class`` = item (later items occlude earlier ones);
* self-supervised: ``(N, S, S)`` float32 random crops (scale, flip, rotation) of the photos, for restoration
  pretraining (the corruption is applied by the pretraining task, not stored).
"""

from __future__ import annotations

import numpy as np

from .sources import load_fashion_mnist, load_photo_gray, skimage_photo_paths

SEGMENTATION_CLASSES = ("background", *(f"item_{i}" for i in range(10)))


def load_photos() -> list[np.ndarray]:
    """The wheel's photos as grey-level float32 arrays in [0, 1]."""
    return [load_photo_gray(p) for p in skimage_photo_paths()]


def random_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size x size`` crop at a random scale (0.5-1.5 of the crop), flipped/rotated at random."""
    from skimage.transform import resize

    side = int(np.clip(size * rng.uniform(0.5, 1.5), 8, min(photo.shape)))
    y = int(rng.integers(0, photo.shape[0] - side + 1))
    x = int(rng.integers(0, photo.shape[1] - side + 1))
    crop = resize(photo[y : y + side, x : x + side], (size, size), order=1, anti_aliasing=side > size)
    crop = np.rot90(crop, int(rng.integers(4)))
    return np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop, dtype=np.float32)


def photo_crops(count: int, size: int, seed: int) -> np.ndarray:
    """Self-supervised source: ``(count, size, size)`` photo crops."""
    rng = np.random.default_rng([seed, 101])
    photos = load_photos()
    return np.stack([random_crop(photos[int(rng.integers(len(photos)))], size, rng) for _ in range(count)])


def paste_items(background: np.ndarray, items, classes, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paste Fashion-MNIST ``items`` (uint8 28x28) into ``background``; returns ``(image, labels)``.

    Each item keeps its own texture (its pixel values, rescaled to a random brightness and contrast, possibly
    inverted) inside its silhouette (item pixels above 10 % of white, softened at the edge), as an object in
    a photo does; the label is the silhouette.  Later items occlude earlier ones.
    """
    from scipy import ndimage
    from skimage.transform import resize

    image = background.copy()
    labels = np.zeros(image.shape, dtype=np.uint8)
    size = image.shape[0]
    for item, cls in zip(items, classes, strict=True):
        side = int(rng.integers(size // 4, size // 2 + 1))
        texture = resize(item.astype(np.float32) / 255.0, (side, side), order=1, anti_aliasing=True)
        silhouette = ndimage.binary_fill_holes(texture > 0.1)
        alpha = np.clip(ndimage.gaussian_filter(silhouette.astype(np.float32), 0.5) * 1.5, 0, 1) * silhouette
        low, contrast = rng.uniform(0.0, 0.5), rng.uniform(0.4, 1.0)
        appearance = np.clip(low + contrast * (texture if rng.random() < 0.7 else 1 - texture), 0, 1)
        y, x = (int(rng.integers(0, size - side + 1)) for _ in range(2))
        region = image[y : y + side, x : x + side]
        image[y : y + side, x : x + side] = region * (1 - alpha) + appearance * alpha
        labels[y : y + side, x : x + side][silhouette] = cls + 1
    return image.astype(np.float32), labels


def pasted_segmentation(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Natural segmentation source: ``(count, size, size)`` images and per-pixel labels (11 classes)."""
    rng = np.random.default_rng([seed, 202])
    photos = load_photos()
    fm_images, fm_labels = load_fashion_mnist("train")
    images, labels = [], []
    for _ in range(count):
        background = random_crop(photos[int(rng.integers(len(photos)))], size, rng)
        picks = rng.integers(0, len(fm_labels), int(rng.integers(1, 5)))
        image, label = paste_items(background, fm_images[picks], fm_labels[picks], rng)
        images.append(image)
        labels.append(label)
    return np.stack(images), np.stack(labels)


def fashion_classification(count: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded subset of Fashion-MNIST train (``count`` images) plus the full test split."""
    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("t10k")
    pick = np.sort(np.random.default_rng([seed, 303]).permutation(len(train_y))[: min(count, len(train_y))])
    return {"images": train_x[pick], "labels": train_y[pick], "test_images": test_x, "test_labels": test_y}
