"""Peak RSS of `ferbatch score` on folders with decompression bombs, hostile files and a crowd photo.

    python benchmarks/peak_rss.py [--work /tmp/ferbatch-rss] [--cases photos,bombs,under_limit,grey,hostile,crowd]

Each case is the 7 sample photos plus six generated PNGs, scored by the installed `ferbatch` CLI into a
fresh --out under `/usr/bin/time -v` (default 2 workers); prints the peak RSS and the status counts.
- photos: the sample photos alone (the baseline).
- bombs: six 8900x8900 16-bit RGBA PNGs of zeros (616 KB each, 634 MB of samples): refused from the header.
- under_limit: six 5790x5790 8-bit RGBA PNGs, just under the 128 MiB decoded-byte limit: decoded.
- grey: six 8940x8940 8-bit grey PNGs (80 MP, the --max-pixels default): decoded.
- hostile: links to /dev/zero and /dev/urandom (scored with --follow-links, so the links are allowed), a FIFO
  and a 6 GiB sparse file, all named .jpg: each refused from fstat, unread, one error row each.
- crowd: a 6000x4000 JPEG of 60 px faces pasted from the sample photos: searched in tiles at full size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from imagefactory import PHOTOS, png_zlib_bomb  # noqa: E402

CASES = {
    "photos": None,
    "bombs": dict(width=8900, height=8900, bit_depth=16, colour_type=6),
    "under_limit": dict(width=5790, height=5790, bit_depth=8, colour_type=6),
    "grey": dict(width=8940, height=8940, bit_depth=8, colour_type=0),
    "hostile": "hostile",
    "crowd": "crowd",
}
CASE_OPTIONS = {"hostile": ["--follow-links"]}


def write_hostile(folder: Path) -> None:
    """What must never be read: endless devices behind links, a FIFO with no writer, a 6 GiB sparse file."""
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "urandom.jpg").symlink_to("/dev/urandom")
    os.mkfifo(folder / "fifo.jpg")
    with open(folder / "sparse.jpg", "wb") as handle:
        handle.truncate(6 * 2**30)


def write_crowd(folder: Path) -> int:
    """A 6000x4000 JPEG with the sample photos' faces pasted at 60 px (a crowd); returns how many."""
    import io

    import cv2
    import numpy as np
    from PIL import Image

    from ferbatch.scoring import DetectorSettings, ScoreSettings, YuNetDetector, decode, default_detector_path

    detector = YuNetDetector(default_detector_path(), DetectorSettings.from_settings(ScoreSettings()))
    patches = []
    for photo in sorted(PHOTOS.glob("fr_*.jpg")):
        rgb = decode(photo.read_bytes()).pixels
        for face in detector.detect(rgb):
            side = max(face.w, face.h) * 1.6
            top, left = int(max(0, face.y + face.h / 2 - side / 2)), int(max(0, face.x + face.w / 2 - side / 2))
            patches.append(cv2.resize(rgb[top : top + int(side), left : left + int(side)], None, fx=60 / face.h,
                                      fy=60 / face.h, interpolation=cv2.INTER_AREA))
    crowd = np.full((4000, 6000, 3), 128, np.uint8)
    spots = [(top, left) for top in range(50, 3850, 310) for left in range(50, 5850, 330)]
    for i, (top, left) in enumerate(spots):
        patch = patches[i % len(patches)]
        crowd[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    buffer = io.BytesIO()
    Image.fromarray(crowd).save(buffer, "JPEG", quality=90)
    (folder / "crowd.jpg").write_bytes(buffer.getvalue())
    return len(spots)


def measure(case: str, work: Path) -> dict:
    """Score the sample photos plus the case's files with the `ferbatch` CLI; its peak RSS and summary."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    ferbatch = shutil.which("ferbatch") or str(Path(sys.executable).parent / "ferbatch")
    folder, out = work / case, work / f"{case}-out"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    folder.mkdir(parents=True)
    for photo in PHOTOS.iterdir():
        if photo.suffix.lower() in (".jpg", ".png"):
            shutil.copy(photo, folder / photo.name)
    if CASES[case] == "hostile":
        write_hostile(folder)
    elif CASES[case] == "crowd":
        write_crowd(folder)
    elif CASES[case]:
        data = png_zlib_bomb(**CASES[case])
        for i in range(6):
            (folder / f"{case}{i}.png").write_bytes(data)
    command = [ferbatch, "score", str(folder), "--out", str(out), "--json", *CASE_OPTIONS.get(case, [])]
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env, cwd=work,
                            timeout=1800)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    summary = json.loads(result.stdout) if result.returncode == 0 else {}
    return {"case": case, "exit": result.returncode, "peak_kbytes": int(peak.group(1)) if peak else 0,
            "summary": summary, "stderr": result.stderr[-2000:], "out": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ferbatch-rss"))
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    for case in args.cases.split(","):
        result = measure(case, args.work)
        summary = result["summary"]
        counts = {k: summary.get(k) for k in ("ok", "no_face", "error", "faces")}
        kbytes = result["peak_kbytes"]  # as /usr/bin/time reports it; GB below = kbytes / 1e6
        print(f"{case:12s} exit {result['exit']}  peak RSS {kbytes} kB ({kbytes / 1e6:.2f} GB)"
              f"  {counts}  {summary.get('top_errors', {})}  {summary.get('seconds')} s")
        if result["exit"]:
            print(result["stderr"][-600:])

if __name__ == "__main__":
    main()
