"""A deterministic corpus of realistic photos for benchmarks, built from the repo's test photos.

    python benchmarks/corpus.py OUT_DIR --n 200 [--seed 0] [--large-share 0.1] [--faces N]

Each photo is 1920x1080 (a share of them 4000x3000): a background made from a random crop of a
test photo, scaled, blurred and brightness-shifted, with 0-6 face tiles pasted at random sizes,
flips and brightness, saved as JPEG at a random quality (70-95). About 10% have no face. The
number of faces pasted into each photo is written to OUT_DIR/manifest.csv. The same seed gives the
same bytes.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "photos"
SIZES = {"1080p": (1920, 1080), "12mp": (4000, 3000)}


@dataclass(frozen=True)
class FaceTile:
    image: np.ndarray  # BGR crop around one face
    face_side: int  # the face box's side in the crop, in pixels


def face_tiles() -> list[FaceTile]:
    """One tile per face found by YuNet in the test photos, with some context around the face."""
    from ferbatch.config import ScoreSettings
    from ferbatch.scoring import DetectorSettings, YuNetDetector, default_detector_path

    settings = DetectorSettings.from_settings(ScoreSettings(detector_size=4000))
    detector = YuNetDetector(default_detector_path(), settings)
    tiles = []
    for path in sorted(PHOTOS.glob("*")):
        bgr = cv2.imread(str(path))
        if bgr is None:
            continue
        for face in detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)):
            side = max(face.w, face.h)
            cx, cy, half = face.x + face.w / 2, face.y + face.h / 2, side * 0.8  # 1.6x the face box
            x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
            x1, y1 = min(bgr.shape[1], round(cx + half)), min(bgr.shape[0], round(cy + half))
            tiles.append(FaceTile(bgr[y0:y1, x0:x1].copy(), round(side)))
    if not tiles:
        raise RuntimeError(f"no faces found in {PHOTOS}")
    return tiles


def backgrounds() -> list[np.ndarray]:
    return [img for p in sorted(PHOTOS.glob("*")) if (img := cv2.imread(str(p))) is not None]


def _background(rng: np.random.Generator, sources: list[np.ndarray], width: int, height: int) -> np.ndarray:
    source = sources[rng.integers(len(sources))]
    h, w = source.shape[:2]
    ch, cw = max(8, round(h * rng.uniform(0.1, 0.3))), max(8, round(w * rng.uniform(0.1, 0.3)))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    # A small crop, blurred and blown up: texture and colour without recognisable faces. Blurring at
    # 1/8 size keeps generation fast.
    small = cv2.resize(source[y : y + ch, x : x + cw], (width // 8, height // 8), interpolation=cv2.INTER_CUBIC)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=max(1.0, width / 1600))
    canvas = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    # Sensor-like grain, so JPEG sizes and decode times are those of real photos, not of flat colour.
    grain = rng.normal(0, 7, (height // 2, width // 2, 1)).astype(np.int16)
    grain = cv2.resize(grain, (width, height), interpolation=cv2.INTER_NEAREST)[..., None]
    canvas = np.clip(canvas.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    return cv2.convertScaleAbs(canvas, alpha=rng.uniform(0.7, 1.2))


def make_photo(index: int, seed: int, tiles: list[FaceTile], sources: list[np.ndarray],
               large_share: float = 0.1, faces: int | None = None) -> tuple[bytes, int, str]:
    """(JPEG bytes, faces pasted, size name) of photo `index`; depends only on (seed, index).

    faces: None for 0-6 faces (a tenth with none) on a 3x2 grid; N for N-1 to N+1 faces on a 4x3 grid, a
    crowd-like photo."""
    rng = np.random.default_rng([seed, index])
    size = "12mp" if rng.random() < large_share else "1080p"
    width, height = SIZES[size]
    canvas = _background(rng, sources, width, height)
    if faces is None:
        n_faces = 0 if rng.random() < 0.1 else int(rng.integers(1, 7))
        columns, rows = 3, 2  # one face per cell, so pasted faces never overlap
    else:
        columns, rows = 4, 3
        n_faces = int(np.clip(rng.integers(faces - 1, faces + 2), 0, columns * rows))
    cells = rng.permutation(columns * rows)[:n_faces]
    cell_w, cell_h = width // columns, height // rows
    for cell in cells:
        tile = tiles[rng.integers(len(tiles))]
        face_side = rng.uniform(0.12, 0.35) * cell_h  # 65-190 px faces in a 1080p photo
        scale = face_side / tile.face_side
        patch = cv2.resize(tile.image, None, fx=scale, fy=scale,
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        patch = patch[:cell_h, :cell_w]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        patch = np.clip(patch.astype(np.float32) * rng.uniform(0.75, 1.25), 0, 255).astype(np.uint8)
        ph, pw = patch.shape[:2]
        cx, cy = (cell % columns) * cell_w, (cell // columns) * cell_h
        x, y = cx + rng.integers(0, cell_w - pw + 1), cy + rng.integers(0, cell_h - ph + 1)
        canvas[y : y + ph, x : x + pw] = patch
    quality = int(rng.integers(70, 96))
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes(), n_faces, size


def _write_photo(job: tuple[Path, int, int, float, int | None]) -> tuple[str, int, str]:
    out_dir, index, seed, large_share, faces = job
    data, n_faces, size = make_photo(index, seed, _TILES, _SOURCES, large_share, faces)
    name = f"photo_{index:05d}.jpg"
    (out_dir / name).write_bytes(data)
    return name, n_faces, size


_TILES: list[FaceTile] = []
_SOURCES: list[np.ndarray] = []


def _init_worker() -> None:
    _TILES.extend(face_tiles())
    _SOURCES.extend(backgrounds())


def build_corpus(out_dir: str | Path, n: int, seed: int = 0, large_share: float = 0.1,
                 faces: int | None = None) -> Path:
    """Write n photos and manifest.csv into out_dir (kept if already complete for these settings)."""
    from concurrent.futures import ProcessPoolExecutor

    out_dir = Path(out_dir)
    manifest, settings = out_dir / "manifest.csv", out_dir / "SETTINGS"
    stamp = f"n={n} seed={seed} large_share={large_share}" + (f" faces={faces}" if faces is not None else "")
    if manifest.exists() and settings.exists() and settings.read_text() == stamp:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(out_dir, index, seed, large_share, faces) for index in range(n)]
    with ProcessPoolExecutor(initializer=_init_worker) as pool:
        rows = list(pool.map(_write_photo, jobs, chunksize=16))
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "faces_pasted", "size"])
        writer.writerows(rows)
    settings.write_text(stamp)
    return out_dir


def corpus_photos(description: str) -> list[bytes]:
    """The photos' bytes of the corpus a benchmark's arguments (--n, --faces, --large-share, --corpus-dir) ask for."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--faces", type=int, default=7)
    parser.add_argument("--large-share", type=float, default=0.1)
    parser.add_argument("--corpus-dir", default=None, help="Keep the corpus here (default: a temp folder).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        corpus = build_corpus(args.corpus_dir or scratch, args.n, faces=args.faces, large_share=args.large_share)
        return [path.read_bytes() for path in sorted(corpus.glob("*.jpg"))]


def first_photos(corpus: Path, n: int, out_dir: Path) -> Path:
    """A corpus of `corpus`'s first n photos (hard links), so two corpus sizes share their photos and the
    photos between them, whose cost a marginal rate measures, are the same for every run."""
    out_dir.mkdir(parents=True)
    for path in sorted(corpus.glob("photo_*.jpg"))[:n]:
        os.link(path, out_dir / path.name)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--large-share", type=float, default=0.1)
    parser.add_argument("--faces", type=int, default=None, help="About this many faces a photo (N-1 to N+1).")
    args = parser.parse_args()
    print(build_corpus(args.out_dir, args.n, args.seed, args.large_share, args.faces))


if __name__ == "__main__":
    main()
