"""Peak RSS of `ferbatch score` on folders with decompression bombs (issue 12, case 6).

    python benchmarks/peak_rss.py [--work /tmp/ferbatch-rss] [--cases photos,bombs,under_limit,grey]

Each case is the 7 sample photos plus six generated PNGs, scored by the installed `ferbatch` CLI into a
fresh --out under `/usr/bin/time -v` (default 2 workers); prints the peak RSS and the status counts.
- photos: the sample photos alone (the baseline).
- bombs: six 8900x8900 16-bit RGBA PNGs of zeros (616 KB each, 634 MB of samples): refused from the header.
- under_limit: six 5790x5790 8-bit RGBA PNGs, just under the 128 MiB decoded-byte limit: decoded.
- grey: six 8940x8940 8-bit grey PNGs (80 MP, the --max-pixels default): decoded.
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
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ferbatch-rss"))
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    ferbatch = shutil.which("ferbatch") or str(Path(sys.executable).parent / "ferbatch")
    for case in args.cases.split(","):
        folder, out = args.work / case, args.work / f"{case}-out"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        folder.mkdir(parents=True)
        for photo in PHOTOS.iterdir():
            if photo.suffix.lower() in (".jpg", ".png"):
                shutil.copy(photo, folder / photo.name)
        if CASES[case]:
            data = png_zlib_bomb(**CASES[case])
            for i in range(6):
                (folder / f"{case}{i}.png").write_bytes(data)
        result = subprocess.run(["/usr/bin/time", "-v", ferbatch, "score", str(folder), "--out", str(out), "--json"],
                                capture_output=True, text=True, env=env, cwd=args.work)
        peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
        summary = json.loads(result.stdout) if result.returncode == 0 else {}
        counts = {k: summary.get(k) for k in ("ok", "no_face", "error")}
        kbytes = int(peak.group(1)) if peak else 0  # as /usr/bin/time reports it; GB below = kbytes / 1e6
        print(f"{case:12s} exit {result.returncode}  peak RSS {kbytes} kB ({kbytes / 1e6:.2f} GB)"
              f"  {counts}  {summary.get('top_errors', {})}")


if __name__ == "__main__":
    main()
