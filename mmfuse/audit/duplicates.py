"""Exact and near-duplicate images, duplicate texts and duplicate examples within a split, and leakage of training
examples into the evaluation splits.

Exact image duplicates share a SHA-256 of their decoded RGB pixels (so two encodings of the same picture match).
Near duplicates are found with a perceptual hash (DCT hash, ``imagehash.phash``; Zauner, "Implementation and
benchmarking of perceptual image hash functions", 2010): two images whose hashes differ in at most
``max_distance`` bits are near duplicates. The default 16 x 16 hash (256 bits) keeps small synthetic images apart
that the common 8 x 8 hash confuses, and still matches re-encoded (JPEG), brightened or lightly noised copies.
Texts are compared after case folding and whitespace normalisation.

Data whose rows share images (several captions or questions per image) is compared image by image: each distinct
image is hashed once (:attr:`ImageHashes.image_of` maps rows to images), the duplicate-image fractions count
distinct images, and the captions of one image are neither near-duplicate images of each other nor duplicate
examples unless their texts are equal too. Image groups and matches are listed by the first row of each image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from mmfuse.errors import ConfigError
from mmfuse.stats import Check, Interval, wilson_interval

__all__ = [
    "ImageHashes",
    "DuplicateSet",
    "SplitDuplicates",
    "Leakage",
    "hash_images",
    "normalise_text",
    "hamming_pairs",
    "duplicate_set",
    "find_duplicates",
    "find_leakage",
]


@dataclass(frozen=True)
class ImageHashes:
    """Hashes of the images of one split.

    Attributes:
        content: per distinct image, the SHA-256 hex digest of its RGB pixels and size.
        perceptual: (I, W) uint64, the bits of each image's perceptual hash packed into W words.
        image_of: (n,) int64, each row's image (an index into ``content``); None = one image per row (n = I).
    """

    content: list[str]
    perceptual: np.ndarray
    image_of: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.content)

    @property
    def num_bits(self) -> int:
        return int(self.perceptual.shape[1]) * 64

    @property
    def num_rows(self) -> int:
        """Rows (examples) of the split, n."""
        return len(self.content) if self.image_of is None else len(self.image_of)

    def rows_image(self) -> np.ndarray:
        """(n,) int64: each row's image."""
        return np.arange(len(self.content), dtype=np.int64) if self.image_of is None else self.image_of

    def first_rows(self) -> np.ndarray:
        """(I,) int64: the first row of each image (images without a row get -1)."""
        first = np.full(len(self.content), -1, dtype=np.int64)
        image_of = self.rows_image()
        first[image_of[::-1]] = np.arange(len(image_of) - 1, -1, -1)  # the last write per image is its first row
        return first


@dataclass(frozen=True)
class DuplicateSet:
    """One kind of duplicate in one split.

    Attributes:
        kind: e.g. ``exact images``, ``near-duplicate images``, ``texts``, ``examples``.
        groups: groups of example indices that are duplicates of each other (largest first).
        redundant: examples beyond the first of each group (what removing duplicates would drop).
        fraction: ``redundant / n`` with a Wilson interval.
    """

    kind: str
    groups: list[list[int]]
    redundant: int
    fraction: Interval

    def as_dict(self, max_listed: int) -> dict[str, Any]:
        """JSON-ready fields, listing at most ``max_listed`` groups."""
        return {
            "kind": self.kind,
            "groups": len(self.groups),
            "redundant": self.redundant,
            "fraction": self.fraction.as_dict(),
            "listed_groups": self.groups[:max_listed],
        }


@dataclass(frozen=True)
class SplitDuplicates:
    """Duplicates within one split.

    Attributes:
        split: the split's name.
        n: examples in the split.
        sets: exact images, near-duplicate images (exact included), texts, and examples (near-duplicate image
            and the same text).
        checks: the graded fractions.
    """

    split: str
    n: int
    sets: dict[str, DuplicateSet]
    checks: list[Check] = field(default_factory=list)


@dataclass(frozen=True)
class Leakage:
    """Examples of an evaluation split whose image (exact or near) or whole example also occurs in training.

    Attributes:
        split: the evaluation split.
        n: its examples.
        image_matches: (P, 3) int rows ``(eval index, train index, Hamming distance)``, one row per matching pair
            of images (each named by its first row).
        leaked_images: eval indices whose image has an exact or near match in training.
        leaked_examples: eval indices whose image matches a training image that carries the same text.
        leaked_texts: eval indices whose (normalised) text occurs in training.
        checks: the graded fractions.
    """

    split: str
    n: int
    image_matches: np.ndarray
    leaked_images: list[int]
    leaked_examples: list[int]
    leaked_texts: list[int]
    checks: list[Check] = field(default_factory=list)

    def as_dict(self, max_listed: int) -> dict[str, Any]:
        """JSON-ready fields, listing at most ``max_listed`` matches."""
        return {
            "split": self.split,
            "n": self.n,
            "leaked_images": len(self.leaked_images),
            "leaked_examples": len(self.leaked_examples),
            "leaked_texts": len(self.leaked_texts),
            "listed_matches": [
                {"index": int(i), "train_index": int(j), "distance": int(d)}
                for i, j, d in self.image_matches[:max_listed]
            ],
            "checks": [c.as_dict() for c in self.checks],
        }


def hash_images(images: Iterable[Image.Image], hash_size: int = 16, image_of: np.ndarray | None = None) -> ImageHashes:
    """Content and perceptual hashes of images.

    Args:
        images: PIL images (any mode; converted to RGB), one per distinct image.
        hash_size: side of the DCT hash; the hash has ``hash_size ** 2`` bits (a multiple of 64 needs
            ``hash_size`` a multiple of 8).
        image_of: (n,) each row's image, an index into ``images``; None = one image per row.
    """
    import imagehash

    if hash_size < 8 or hash_size % 8:
        raise ConfigError(f"hash_size={hash_size}: use a multiple of 8 (8 -> 64 bits, 16 -> 256 bits)")
    content: list[str] = []
    bits: list[np.ndarray] = []
    for image in images:
        rgb = image.convert("RGB")
        digest = hashlib.sha256(f"{rgb.size}".encode())
        digest.update(rgb.tobytes())
        content.append(digest.hexdigest())
        bits.append(np.packbits(imagehash.phash(rgb, hash_size=hash_size).hash.reshape(-1)))
    words = hash_size * hash_size // 64
    packed = np.stack(bits).view(">u8").astype(np.uint64) if bits else np.zeros((0, words), np.uint64)
    if image_of is not None:
        image_of = np.asarray(image_of, dtype=np.int64)
        if len(image_of) and (image_of.min() < 0 or image_of.max() >= len(content)):
            raise ValueError(f"image_of points outside the {len(content)} images hashed")
    return ImageHashes(content, packed.reshape(-1, words), image_of)


def normalise_text(text: str) -> str:
    """Case-folded, with runs of whitespace collapsed: the key under which texts count as duplicates.

    Example:
        >>> normalise_text("  What colour is   the Circle ?")
        'what colour is the circle ?'
    """
    return " ".join(text.casefold().split())


def hamming_pairs(a: np.ndarray, b: np.ndarray | None = None, max_distance: int = 20, chunk: int = 256) -> np.ndarray:
    """Pairs of hashes at most ``max_distance`` bits apart.

    The first word of every pair is compared in bulk; only pairs within ``max_distance`` on it (few, for hashes of
    different images) have their other words compared.

    Args:
        a: (n, W) uint64 packed hashes.
        b: (m, W) uint64 packed hashes; None = pairs within ``a`` (each unordered pair once, no self pairs).
        max_distance: largest Hamming distance that counts as a match.
        chunk: rows of ``a`` compared at a time (bounds the memory at ``chunk x m`` words).

    Returns:
        (P, 3) int64 rows ``(index in a, index in b, distance)``, sorted by index in a, then in b.
    """
    other = a if b is None else b
    first_word = np.ascontiguousarray(other[:, 0])
    xor = np.empty((min(chunk, len(a)), len(other)), dtype=np.uint64)  # reused by every block
    count = np.empty(xor.shape, dtype=np.uint8)
    found = [np.zeros((0, 3), dtype=np.int64)]
    for start in range(0, len(a), chunk):
        block = a[start : start + chunk]
        offset = start if b is None else 0  # within one set, compare each row with the rows after it only
        c, m = len(block), len(other) - offset
        np.bitwise_xor(block[:, 0, None], first_word[None, offset:], out=xor[:c, :m])
        _bit_count(xor[:c, :m], out=count[:c, :m])  # (c, m) bits that differ in the first word
        if b is None:
            count[:c, :c][np.tril_indices(c)] = 255  # self pairs and pairs already seen
        rows, cols = np.nonzero(count[:c, :m] <= max_distance)
        distance = count[rows, cols].astype(np.int64)
        for word in range(1, a.shape[1]):
            distance += _bit_count(block[rows, word] ^ other[cols + offset, word])
        keep = distance <= max_distance
        found.append(np.stack([rows[keep] + start, cols[keep] + offset, distance[keep]], axis=1))
    return np.concatenate(found)


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _bit_count(words: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Set bits of each uint64 (``np.bitwise_count`` from numpy 2; a byte table before it)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words, out=out) if out is not None else np.bitwise_count(words)
    counts = _BYTE_BITS[words.view(np.uint8).reshape(*words.shape, 8)].sum(-1, dtype=np.uint8)
    if out is None:
        return counts
    out[...] = counts
    return out


def duplicate_set(kind: str, n: int, pairs: np.ndarray, level: float = 0.95) -> DuplicateSet:
    """Group examples linked by ``pairs`` ((P, 2+) index pairs) into connected components."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return DuplicateSet(kind, [], 0, wilson_interval(0, 0, level))
    links = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)) if len(pairs) else None
    if links is None:
        return DuplicateSet(kind, [], 0, wilson_interval(0, n, level))
    count, component = connected_components(links, directed=False)
    members: dict[int, list[int]] = {}
    for index, c in enumerate(component.tolist()):
        members.setdefault(c, []).append(index)
    groups = sorted((g for g in members.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
    redundant = n - int(count)
    return DuplicateSet(kind, groups, redundant, wilson_interval(redundant, n, level))


def _equal_key_pairs(keys: Sequence[str]) -> np.ndarray:
    """(P, 2) pairs linking each example to the first example with the same key."""
    first: dict[str, int] = {}
    pairs = [(first.setdefault(k, i), i) for i, k in enumerate(keys)]
    kept = [p for p in pairs if p[0] != p[1]]
    return np.array(kept, dtype=np.int64).reshape(-1, 2)


def _in_rows(found: DuplicateSet, first_rows: np.ndarray) -> DuplicateSet:
    """``found`` (groups of image indices) with each image named by its first row."""
    groups = [[int(first_rows[i]) for i in g] for g in found.groups]
    return DuplicateSet(found.kind, groups, found.redundant, found.fraction)


def _example_pairs(image_pairs: np.ndarray, image_of: np.ndarray, text_keys: Sequence[str]) -> np.ndarray:
    """(P, 2) row pairs with the same text whose images are the same or linked by ``image_pairs`` ((Q, 2))."""
    same_image = _equal_key_pairs([f"{image}\x00{key}" for image, key in zip(image_of.tolist(), text_keys)])
    rows_of: dict[int, list[int]] = {}
    for row, image in enumerate(image_of.tolist()):
        rows_of.setdefault(image, []).append(row)
    linked = [
        (i, j)
        for a, b in image_pairs[:, :2].tolist()
        for i in rows_of.get(a, [])
        for j in rows_of.get(b, [])
        if text_keys[i] == text_keys[j]
    ]
    return np.concatenate([same_image, np.array(linked, dtype=np.int64).reshape(-1, 2)])


def find_duplicates(
    split: str,
    hashes: ImageHashes,
    texts: Sequence[str],
    max_distance: int = 20,
    max_image_fraction: float | None = 0.01,
    max_text_fraction: float | None = None,
    max_example_fraction: float | None = 0.01,
    level: float = 0.95,
) -> SplitDuplicates:
    """Duplicates within one split.

    Args:
        split: the split's name (for the report).
        hashes: the split's image hashes (one per distinct image, mapped to rows by ``image_of``).
        texts: the split's texts, one per row.
        max_distance: Hamming distance (bits) at or below which two images are near duplicates.
        max_image_fraction: largest allowed fraction of redundant near-duplicate images (of the distinct images);
            None = reported only.
        max_text_fraction: the same for texts (templated questions repeat by design, so None by default).
        max_example_fraction: the same for examples (near-duplicate image and the same text).
        level: confidence level of the intervals.
    """
    n, num_images = hashes.num_rows, len(hashes)
    if len(texts) != n:
        raise ValueError(f"{split}: {len(texts)} texts for {n} rows")
    _check_distance(max_distance, hashes.num_bits)
    text_keys = [normalise_text(t) for t in texts]
    exact = _equal_key_pairs(hashes.content)  # (P, 2) image pairs
    near = np.concatenate([exact, hamming_pairs(hashes.perceptual, None, max_distance)[:, :2]])
    first = hashes.first_rows()
    examples = _example_pairs(near, hashes.rows_image(), text_keys)
    sets = {
        "exact_images": _in_rows(duplicate_set("exact images", num_images, exact, level), first),
        "near_images": _in_rows(
            duplicate_set("near-duplicate images (exact included)", num_images, near, level), first
        ),
        "texts": duplicate_set("texts", n, _equal_key_pairs(text_keys), level),
        "examples": duplicate_set("examples (near-duplicate image, same text)", n, examples, level),
    }
    checks = [
        Check(f"near-duplicate image fraction ({split})", sets["near_images"].fraction, max_image_fraction),
        Check(f"duplicate text fraction ({split})", sets["texts"].fraction, max_text_fraction),
        Check(f"duplicate example fraction ({split})", sets["examples"].fraction, max_example_fraction),
    ]
    return SplitDuplicates(split, n, sets, checks)


def find_leakage(
    split: str,
    train: tuple[ImageHashes, Sequence[str]],
    other: tuple[ImageHashes, Sequence[str]],
    max_distance: int = 20,
    max_image_fraction: float | None = 0.01,
    max_example_fraction: float | None = 0.0,
    max_text_fraction: float | None = None,
    level: float = 0.95,
) -> Leakage:
    """Evaluation examples whose image or whole example also occurs in the training split.

    Args:
        split: the evaluation split's name.
        train: the training split's hashes and texts (one text per row).
        other: the evaluation split's hashes and texts. Matches are found image by image and listed by the first
            row of each image; every row of a matched image counts as leaked.
        max_distance: Hamming distance (bits) at or below which two images match.
        max_image_fraction: largest allowed fraction of eval examples with a matching training image.
        max_example_fraction: largest allowed fraction of eval examples whose image and text occur in training.
        max_text_fraction: the same for texts alone; None = reported only.
        level: confidence level of the intervals.
    """
    (train_hashes, train_texts), (eval_hashes, eval_texts) = train, other
    _check_distance(max_distance, train_hashes.num_bits)
    n = eval_hashes.num_rows
    for hashes, texts, which in ((train_hashes, train_texts, "train"), (eval_hashes, eval_texts, split)):
        if len(texts) != hashes.num_rows:
            raise ValueError(f"{which}: {len(texts)} texts for {hashes.num_rows} rows")
    train_index: dict[str, int] = {}
    for i, key in enumerate(train_hashes.content):
        train_index.setdefault(key, i)
    exact = [(i, train_index[k], 0) for i, k in enumerate(eval_hashes.content) if k in train_index]
    near = hamming_pairs(eval_hashes.perceptual, train_hashes.perceptual, max_distance)
    matches = np.concatenate([np.array(exact, dtype=np.int64).reshape(-1, 3), near])
    matches = matches[np.lexsort((matches[:, 2], matches[:, 1], matches[:, 0]))]
    _, first = np.unique(matches[:, :2], axis=0, return_index=True)  # an exact match is also a near one: keep one
    matches = matches[np.sort(first)]
    matches = matches[np.lexsort((matches[:, 2], matches[:, 0]))]  # by eval image, closest first
    train_keys = [normalise_text(t) for t in train_texts]
    eval_keys = [normalise_text(t) for t in eval_texts]
    texts_of: dict[int, set[str]] = {}  # train image -> the texts of its rows
    for image, key in zip(train_hashes.rows_image().tolist(), train_keys):
        texts_of.setdefault(image, set()).add(key)
    matched_to: dict[int, list[int]] = {}  # eval image -> the train images it matches
    for i, j, _ in matches.tolist():
        matched_to.setdefault(i, []).append(j)
    eval_image = eval_hashes.rows_image().tolist()
    leaked_images = [row for row, image in enumerate(eval_image) if image in matched_to]
    leaked_examples = [
        row for row in leaked_images if any(eval_keys[row] in texts_of.get(j, ()) for j in matched_to[eval_image[row]])
    ]
    if len(matches):  # images named by their first rows
        matches = np.stack([eval_hashes.first_rows()[matches[:, 0]], train_hashes.first_rows()[matches[:, 1]],
                            matches[:, 2]], axis=1)  # fmt: skip
    known_texts = set(train_keys)
    leaked_texts = [i for i, key in enumerate(eval_keys) if key in known_texts]
    checks = [
        Check(f"leaked image fraction ({split} in train)", wilson_interval(len(leaked_images), n, level),
              max_image_fraction),
        Check(f"leaked example fraction ({split} in train)", wilson_interval(len(leaked_examples), n, level),
              max_example_fraction),
        Check(f"leaked text fraction ({split} in train)", wilson_interval(len(leaked_texts), n, level),
              max_text_fraction),
    ]  # fmt: skip
    return Leakage(split, n, matches, leaked_images, leaked_examples, leaked_texts, checks)


def _check_distance(max_distance: int, num_bits: int) -> None:
    if not 0 <= max_distance < num_bits:
        raise ConfigError(
            f"near_duplicate_distance={max_distance}: must lie in 0..{num_bits - 1} (bits of the {num_bits}-bit hash)"
        )
