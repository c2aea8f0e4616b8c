"""Scoring throughput and memory on a generated photo corpus, against a peer-style baseline.

    python benchmarks/score.py --n 200                    # real path, re-run, baseline, classifier
    python benchmarks/score.py --n 2000 --modes real      # memory flatness: compare peak RSS with N=200
    python benchmarks/score.py --n 500 --modes torture    # bad files mixed in, then a SIGKILLed run

Every measurement runs in a fresh child process, so each peak RSS is its own. Modes:
- real: ferbatch's scoring path (run_scoring with YuNet and the current model), then a re-run over
  the unchanged folder (its time as a fraction of the first, and whether the model was loaded).
- baseline: the way peer tools work: full-resolution decode, detection on the full-resolution
  image, one image at a time, one Keras `model.predict` call per face, stages never overlapping.
- classify: the classifier alone, faces/s at batch 256.
- torture: the corpus plus every kind of bad file, scored; then a run SIGKILLed at a random point
  and re-run; checks that every image is in the reports exactly once.
Prints a table and writes JSON (--json-out).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _settings(args: argparse.Namespace, detector_size: int | None = None):
    """The scoring settings this child measures, and the pipeline internals it varies."""
    from ferbatch.config import ScoreSettings
    from ferbatch.scoring import PipelineSettings

    settings = ScoreSettings(folders=[args.corpus], out=args.out, workers=args.workers,
                             detector_size=detector_size or args.detector_size, shard_size=args.shard_size,
                             precision=args.precision)
    return settings, PipelineSettings.from_settings(settings, decode_long_side=args.decode_long_side or None)


def _components(args: argparse.Namespace, detector_size: int | None = None):
    from ferbatch.scoring import Components

    return Components.for_run(_settings(args, detector_size)[0], args.model, models_dir=args.models_dir)


def child_real(args: argparse.Namespace) -> dict:
    from ferbatch.scoring import run_scoring

    components = _components(args)
    loads = []

    class Counting:  # the real components, counting classifier loads
        model_version = components.model_version
        detector = components.detector

        def classifier(self):
            loads.append(time.perf_counter())
            return components.classifier()

    settings, pipeline = _settings(args)
    started = time.perf_counter()
    first = run_scoring(settings, Counting(), pipeline=pipeline)
    first_s = time.perf_counter() - started
    load_s = 0.0
    if loads:  # the model load and first trace happen inside the run: measure them apart
        load_s = _time_model_load(components)
    loads_before_rerun = len(loads)
    started = time.perf_counter()
    second = run_scoring(settings, Counting(), pipeline=pipeline)
    rerun_s = time.perf_counter() - started
    return {
        "images": first.n_scored, "faces": first.n_faces, "errors": first.status_counts.get("error", 0),
        "seconds": first_s, "images_per_s": first.n_scored / first_s, "faces_per_s": first.n_faces / first_s,
        "model_load_s": load_s, "stage_seconds": dict(first.stage_seconds),
        "rerun_seconds": rerun_s, "rerun_fraction": rerun_s / first_s, "rerun_scored": second.n_scored,
        "rerun_loaded_model": len(loads) > loads_before_rerun, "peak_rss_mb": _peak_rss_mb(),
    }


def _time_model_load(components) -> float:
    """Seconds to load the model and trace it once, measured on a fresh load after the run."""
    import numpy as np

    from ferbatch.scoring import KerasClassifier

    started = time.perf_counter()
    classifier = KerasClassifier.from_registry(components.models_dir, components.model_version)
    classifier.predict(np.zeros((1, 48, 48), np.uint8))
    return time.perf_counter() - started


def child_baseline(args: argparse.Namespace) -> dict:
    """One image at a time: full decode, detect, crop, then one model call per face."""
    from datetime import datetime

    import cv2
    import numpy as np

    from ferbatch.reports import ReportStore
    from ferbatch.scoring import (
        ImageError,
        PreparedImage,
        RunContext,
        ScoredImage,
        SentimentMap,
        crop_face,
        decode,
        read_bytes,
        rows_for,
        scan,
    )

    # Default: no cap, detect on the full-resolution image; --baseline-detector-size caps it.
    components = _components(args, args.baseline_detector_size or 100_000)
    detector = components.detector()
    started = time.perf_counter()
    model = components.classifier().model
    stages = dict.fromkeys(("read", "decode", "detect", "crop", "classify", "write"), 0.0)
    now = datetime.now(UTC)
    run = RunContext("baseline", now.date(), now, components.model_version, detector.name, SentimentMap())
    writer = ReportStore(args.out).writer("20000101T000000Z-000000", now.date(), {})
    n_images = n_faces = 0
    for file in scan([args.corpus]):
        t = time.perf_counter()
        item = PreparedImage(file)
        try:
            data = read_bytes(file)
            t1 = time.perf_counter()
            decoded = decode(data)
            t2 = time.perf_counter()
            faces = detector.detect(decoded.pixels)
            t3 = time.perf_counter()
            grey = cv2.cvtColor(decoded.pixels, cv2.COLOR_RGB2GRAY)
            crops = [crop_face(grey, face) for face in faces]
            t4 = time.perf_counter()
            call = model.predict_on_batch if args.baseline_call == "predict_on_batch" else (
                lambda x: model.predict(x, verbose=0))
            probabilities = [np.asarray(call(c[None, :, :, None].astype("float32")))[0] for c in crops]
            t5 = time.perf_counter()
            item.image_id, item.width, item.height, item.faces = decoded.image_id, decoded.width, decoded.height, faces
            stages["read"] += t1 - t
            stages["decode"] += t2 - t1
            stages["detect"] += t3 - t2
            stages["crop"] += t4 - t3
            stages["classify"] += t5 - t4
        except ImageError as exc:
            item.error = str(exc)
            probabilities = []
        t6 = time.perf_counter()
        image_row, face_rows = rows_for(ScoredImage(item, np.array(probabilities).reshape(-1, 7)), run)
        writer.write("images", [image_row])
        writer.write("faces", face_rows)
        stages["write"] += time.perf_counter() - t6
        n_images += 1
        n_faces += len(item.faces)
    writer.close()
    seconds = time.perf_counter() - started
    return {"images": n_images, "faces": n_faces, "seconds": seconds, "images_per_s": n_images / seconds,
            "faces_per_s": n_faces / seconds, "stage_seconds": stages, "peak_rss_mb": _peak_rss_mb()}


def child_classify(args: argparse.Namespace) -> dict:
    import numpy as np

    components = _components(args)
    classifier = components.classifier()
    faces = np.random.default_rng(0).integers(0, 256, (8192, 48, 48), dtype=np.uint8)
    classifier.predict(faces[:256])
    started = time.perf_counter()
    classifier.predict(faces)
    seconds = time.perf_counter() - started
    return {"faces": len(faces), "batch_size": classifier.batch_size, "precision": classifier.precision,
            "faces_per_s": len(faces) / seconds,
            "peak_rss_mb": _peak_rss_mb()}


def child_score_once(args: argparse.Namespace) -> dict:
    """One plain run (the torture mode kills this one)."""
    from dataclasses import replace

    from ferbatch.scoring import run_scoring

    settings, pipeline = _settings(args)
    summary = run_scoring(settings, _components(args), pipeline=replace(pipeline, chunk_images=16))
    return {"scored": summary.n_scored, "status": dict(summary.status_counts),
            "errors": dict(summary.error_reasons), "peak_rss_mb": _peak_rss_mb()}


CHILDREN = {"real": child_real, "baseline": child_baseline, "classify": child_classify, "once": child_score_once}


def run_child(mode: str, corpus: Path, out: Path, args: argparse.Namespace, kill_after: float | None = None,
              tree: Path | None = None) -> dict:
    """One child process's figures; with `tree`, that source tree's score.py and ferbatch (first on the path)."""
    script = tree / "benchmarks" / "score.py" if tree else Path(__file__)
    command = [sys.executable, str(script), "--child", mode, "--corpus", str(corpus), "--out", str(out),
               "--workers", str(args.workers), "--detector-size", str(args.detector_size),
               "--shard-size", str(args.shard_size), "--decode-long-side", str(args.decode_long_side),
               "--precision", args.precision,
               "--baseline-detector-size", str(args.baseline_detector_size), "--baseline-call", args.baseline_call]
    if args.models_dir:
        command += ["--models-dir", args.models_dir]
    if args.model:
        command += ["--model", args.model]
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree else None
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tree, env=env)
    if kill_after is not None:
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return {"killed_after_s": kill_after}
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def torture(corpus: Path, work: Path, args: argparse.Namespace) -> dict:
    """The corpus plus one of every bad kind per 100 photos; each file checked; then SIGKILL and re-run."""
    import importlib.util

    import duckdb

    # The torture test's bad-file factory, loaded from its file rather than putting tests/ on sys.path.
    spec = importlib.util.spec_from_file_location("imagefactory", HERE.parent / "tests" / "imagefactory.py")
    imagefactory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(imagefactory)
    write_good_and_bad = imagefactory.write_good_and_bad

    from ferbatch.config import DEFAULT_MAX_PIXELS
    from ferbatch.scoring import as_text

    folder = work / "torture"
    shutil.copytree(corpus, folder, ignore=shutil.ignore_patterns("manifest.csv", "SETTINGS"))
    expected = {as_text(Path(p)): None for p in (f.path for f in _files(folder))}
    for copy in range(max(1, args.n // 100)):
        mixed = write_good_and_bad(folder / f"mixed_{copy:03d}", huge_limit=DEFAULT_MAX_PIXELS)
        expected.update({as_text(Path(f"mixed_{copy:03d}") / p): error for p, error in mixed.items()})
    first = run_child("once", folder, work / "out1", args)
    rows = duckdb.sql(f"select path, status, error from read_parquet('{work}/out1/images/*/*.parquet')").fetchall()
    by_path = {path: (status, error) for path, status, error in rows}
    wrong = [path for path, fragment in expected.items()
             if path not in by_path
             or (fragment is None and by_path[path][0] == "error")
             or (fragment is not None and (by_path[path][0] != "error" or fragment not in by_path[path][1]))]
    rng = random.Random(args.seed)
    kill_after = rng.uniform(3.0, 3.0 + len(expected) / 60)  # somewhere inside a ~len/50 s run
    killed = run_child("once", folder, work / "out2", args, kill_after=kill_after)
    rerun = run_child("once", folder, work / "out2", args)
    ((count, distinct),) = duckdb.sql(
        f"select count(*), count(distinct path) from read_parquet('{work}/out2/images/*/*.parquet')"
    ).fetchall()
    leftovers = [str(p) for p in (work / "out2").rglob("*.tmp")]
    return {"files": len(expected), "bad_files": sum(v is not None for v in expected.values()),
            "first_run": first, "rows": len(rows), "files_not_as_expected": wrong[:20],
            "killed": killed, "rerun": rerun, "rows_after_rerun": count, "distinct_paths_after_rerun": distinct,
            "tmp_files_left": leftovers,
            "every_image_once": count == distinct == len(expected) and len(rows) == len(expected)}


def _files(folder: Path):
    from ferbatch.scoring import scan

    return scan([folder])


def _table(results: dict) -> str:
    header = f"{'mode':10} {'images':>7} {'faces':>6} {'seconds':>8} {'images/s':>9} {'faces/s':>8} {'peak RSS MB':>11}"
    lines = [header]
    for mode in ("real", "baseline"):
        if mode in results:
            r = results[mode]
            lines.append(f"{mode:10} {r['images']:>7} {r['faces']:>6} {r['seconds']:>8.2f} {r['images_per_s']:>9.1f} "
                         f"{r['faces_per_s']:>8.1f} {r['peak_rss_mb']:>11.0f}")
    if "classify" in results:
        r = results["classify"]
        lines.append(f"{'classify':10} {'':>7} {r['faces']:>6} {'':>8} {'':>9} {r['faces_per_s']:>8.0f} "
                     f"{r['peak_rss_mb']:>11.0f}")
    for mode in ("real", "baseline"):
        if mode in results:
            stages = ", ".join(f"{k} {v:.2f}" for k, v in results[mode]["stage_seconds"].items())
            lines.append(f"{mode} seconds per stage (summed over threads): {stages}")
    if "real" in results and "baseline" in results:
        lines.append(f"real / baseline: {results['real']['images_per_s'] / results['baseline']['images_per_s']:.1f}x")
    if "real" in results:
        r = results["real"]
        lines.append(f"re-run over the unchanged folder: {r['rerun_seconds']:.2f} s = {r['rerun_fraction']:.1%} of "
                     f"the first run; scored {r['rerun_scored']}; model loaded: {r['rerun_loaded_model']}")
        lines.append(f"model load + first trace: {r['model_load_s']:.2f} s (inside the first run's time)")
    if "torture" in results:
        t = results["torture"]
        lines.append(f"torture: {t['files']} files ({t['bad_files']} bad), first run {t['first_run']['status']}, "
                     f"files not as expected: {len(t['files_not_as_expected'])}; peak RSS "
                     f"{t['first_run']['peak_rss_mb']:.0f} MB")
        lines.append(f"torture: killed after {t['killed'].get('killed_after_s', 'not killed (finished first)')} s, "
                     f"re-run scored {t['rerun']['scored']}; every image exactly once: {t['every_image_once']}; "
                     f"temp files left: {len(t['tmp_files_left'])}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from ferbatch.config import CLASSIFIER_PRECISIONS, ScoreSettings

    defaults = ScoreSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="Photos in the corpus.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--large-share", type=float, default=0.1, help="Share of 4000x3000 photos.")
    parser.add_argument("--modes", default="real,baseline,classify", help="Comma-separated: "
                        "real, baseline, classify, torture.")
    parser.add_argument("--corpus-dir", default=None, help="Keep the corpus here (default: a temp folder).")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--model", default=None, help="Model version (default: the current one).")
    parser.add_argument("--faces", type=int, default=None, help="About this many faces a photo (default 0-6).")
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--detector-size", type=int, default=defaults.detector_size)
    parser.add_argument("--shard-size", type=int, default=defaults.shard_size)
    parser.add_argument("--precision", choices=CLASSIFIER_PRECISIONS, default=defaults.precision,
                        help="The real path's classifier arithmetic.")
    parser.add_argument("--decode-long-side", type=int, default=None,
                        help="Reduced JPEG decode for the real path (default: the detector size; 0: full-size "
                        "decode, to measure that lever).")
    parser.add_argument("--baseline-detector-size", type=int, default=0,
                        help="Cap the baseline's detector input (0: full resolution, as peers do).")
    parser.add_argument("--baseline-call", choices=["predict", "predict_on_batch"], default="predict",
                        help="The baseline's per-face model call (peers call predict).")
    parser.add_argument("--json-out", default=None, help="Default: benchmarks/score-N.json.")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.decode_long_side is None:
        args.decode_long_side = args.detector_size
    return args


def main() -> None:
    args = parse_args()

    if args.child:
        print(json.dumps(CHILDREN[args.child](args), default=str))
        return

    from corpus import build_corpus

    with tempfile.TemporaryDirectory(prefix="ferbatch-bench-") as tmp:
        work = Path(tmp)
        corpus = build_corpus(args.corpus_dir or work / "corpus", args.n, args.seed, args.large_share, args.faces)
        results: dict = {"n": args.n, "seed": args.seed, "large_share": args.large_share, "cpu_count": os.cpu_count(),
                         "workers": args.workers, "detector_size": args.detector_size,
                         "decode_long_side": args.decode_long_side}
        modes = args.modes.split(",")
        for mode in ("classify", "real", "baseline"):
            if mode in modes:
                results[mode] = run_child(mode, corpus, work / f"out-{mode}", args)
        if "torture" in modes:
            results["torture"] = torture(corpus, work, args)
    print(_table(results))
    out = Path(args.json_out or HERE / f"score-{args.n}.json")
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"figures written to {out}")


if __name__ == "__main__":
    main()
