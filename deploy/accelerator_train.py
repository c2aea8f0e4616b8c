"""Train ensemble members on a borrowed accelerator machine, then finish them with `ferbatch train` here.

A GPU machine often has JAX but neither ferbatch's install nor the FER2013 CSV, and takes a small upload.
This script carries only what training needs and brings back what `ferbatch train` needs to go on:

    # here: the Training and PublicTest faces as lossless WebP mosaics (52 MB, checked by SHA-256 there;
    # PrivateTest stays here), and the wheels the machine lacks (keras, namex, optree for its Python)
    python deploy/accelerator_train.py pack --data ../shared/data/fer2013.csv.gz --out .devdata
    # there, with the wheels on PYTHONPATH: one process per member, all stopping at one deadline
    KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false python deploy/accelerator_train.py train \
        --arrays .devdata --ensemble crop_cnn_100_x4 --core 4 --minutes 6 --out "$OUT"
    # here: each member's run becomes an unfinished version; the ensemble preset then evaluates (or resumes)
    # each, registers it as a member, and assembles, evaluates, registers and promotes the whole
    python deploy/accelerator_train.py adopt --data ../shared/data/fer2013.csv.gz --preset crop_cnn_100_x4 \
        "$OUT"/member-*.tar
    ferbatch train --preset crop_cnn_100_x3 --data ../shared/data/fer2013.csv.gz

Measured on one H100 (16 cores): five 60-epoch crop_cnn members in 277 s, four 100-epoch crop_cnn_100
members in 337 s, about 3 s an epoch each with all of them training at once. The runs are the same
`ferbatch.training.train` with the preset's recipe and seed; their cards record the host, cores, backend and
GPU of every chunk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the device machine runs the checkout without installing it

from ferbatch.errors import FerbatchError  # noqa: E402 - after the path above

MOSAIC_SIDE = 64  # faces per mosaic row and column: 4096 faces, 3072x3072 pixels per WebP file
FACE = 48
SPLITS = ("Training", "PublicTest")
MAX_RETURN_BYTES = 60e6  # what comes back from the device machine: 64 MiB in all, 16 MiB a file


def _digest(images: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes() + np.asarray(labels, np.int64).tobytes()).hexdigest()


def pack(data: Path, out: Path) -> None:
    import cv2

    from ferbatch.training import load_training_data, source_digests

    faces = load_training_data(data)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"sources": source_digests(data), "splits": {}}
    per_mosaic = MOSAIC_SIDE * MOSAIC_SIDE
    for split in SPLITS:
        images, labels = faces.subset(split)
        files = []
        for start in range(0, len(images), per_mosaic):
            block = np.zeros((per_mosaic, FACE, FACE), np.uint8)
            chunk = images[start : start + per_mosaic]
            block[: len(chunk)] = chunk
            mosaic = block.reshape(MOSAIC_SIDE, MOSAIC_SIDE, FACE, FACE).transpose(0, 2, 1, 3)
            mosaic = mosaic.reshape(MOSAIC_SIDE * FACE, MOSAIC_SIDE * FACE)
            _, encoded = cv2.imencode(".webp", mosaic, [cv2.IMWRITE_WEBP_QUALITY, 101])  # 101: lossless
            name = f"{split}-{start // per_mosaic:02d}.webp"
            (out / name).write_bytes(encoded.tobytes())
            files.append(name)
        np.save(out / f"{split}-labels.npy", labels.astype(np.uint8))
        manifest["splits"][split] = {"count": len(images), "files": files, "sha256": _digest(images, labels)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    unpacked = unpack(out)  # proves the round trip before anything travels
    print(f"packed {', '.join(f'{s} {len(unpacked[s][0])}' for s in SPLITS)} faces into {out}: "
          f"{sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB")


def unpack(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (uint8 faces (N, 48, 48), int labels)}, checked against the packed SHA-256."""
    import cv2

    manifest = json.loads((folder / "manifest.json").read_text())
    arrays = {}
    for split, entry in manifest["splits"].items():
        blocks = []
        for name in entry["files"]:
            mosaic = cv2.imdecode(np.fromfile(folder / name, np.uint8), cv2.IMREAD_GRAYSCALE)
            faces = mosaic.reshape(MOSAIC_SIDE, FACE, MOSAIC_SIDE, FACE).transpose(0, 2, 1, 3)
            blocks.append(faces.reshape(-1, FACE, FACE))
        images = np.concatenate(blocks)[: entry["count"]]
        labels = np.load(folder / f"{split}-labels.npy").astype(np.int64)
        if _digest(images, labels) != entry["sha256"]:
            raise SystemExit(f"{folder}: {split} faces do not match their SHA-256; pack them again")
        arrays[split] = (images, labels)
    return arrays


def train_member(arrays: Path, ensemble: str, seed: int, stop_at: float, workdir: Path, smoke: int = 0) -> None:
    """One member's run to its end or the deadline; a finished run keeps a checkpoint without optimizer state.
    smoke: a quick check of the whole path (that many training faces, 2 epochs), never adopted."""
    from ferbatch.training import ENSEMBLES, train

    config = next(c for c in ENSEMBLES[ensemble].member_configs() if c.seed == seed)
    data = unpack(arrays)
    if smoke:
        config = config.with_overrides(epochs=2)
        data["Training"] = tuple(a[:smoke] for a in data["Training"])
    result = train(config, *data["Training"], *data["PublicTest"], workdir, resume=(workdir / "state.json").is_file(),
                   stop_at=stop_at)
    if result.finished:
        _slim_checkpoint(workdir)
    print(f"seed {seed}: {'finished' if result.finished else 'stopped'} after epoch {result.epochs_run}, "
          f"best PublicTest {result.best_public_accuracy:.4f} at epoch {result.best_epoch}", flush=True)


def _slim_checkpoint(workdir: Path) -> None:
    """A finished run is never trained further: its checkpoint only has to rebuild the network (no momentum)."""
    import keras

    trainer = keras.saving.load_model(workdir / "checkpoint.keras")
    bare = keras.Model.from_config(trainer.get_config())  # clone_model would keep the compiled optimizer
    bare.set_weights(trainer.get_weights())
    bare.save(workdir / "checkpoint.slim.keras")
    os.replace(workdir / "checkpoint.slim.keras", workdir / "checkpoint.keras")


def _state(workdir: Path) -> dict:
    try:
        return json.loads((workdir / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def train_ensemble(arrays: Path, ensemble: str, core: int, minutes: float, out: Path, smoke: int = 0) -> None:
    """The first `core` members start at once; the rest only if, at the speed the first ones show, all would
    still finish before the deadline."""
    from ferbatch.training import ENSEMBLES

    if not (arrays / "manifest.json").is_file():
        raise FerbatchError(f"{arrays}: no packed faces here (manifest.json); run `pack` and carry the folder")
    started = time.time()
    stop_at = started + minutes * 60
    configs = ENSEMBLES[ensemble].member_configs()
    epochs = configs[0].epochs
    work = Path("/tmp/ferbatch-members")
    procs: dict[int, subprocess.Popen] = {}

    def launch(seed: int) -> None:
        folder = work / str(seed)
        folder.mkdir(parents=True, exist_ok=True)
        log = open(work / f"{seed}.log", "w")  # noqa: SIM115 - the child writes it until it exits
        procs[seed] = subprocess.Popen(
            [sys.executable, __file__, "member", "--arrays", str(arrays), "--ensemble", ensemble, "--seed", str(seed),
             "--stop-at", str(stop_at), "--workdir", str(folder), "--smoke", str(smoke)],
            stdout=log, stderr=subprocess.STDOUT)

    waiting = [c.seed for c in configs]
    printed = 0.0
    for seed in waiting[:core]:
        launch(seed)
    waiting = waiting[core:]
    while any(p.poll() is None for p in procs.values()):
        time.sleep(5)
        states = {seed: _state(work / str(seed)) for seed in procs}
        if time.time() - printed < 30:
            continue  # a progress line every 30 s
        printed = time.time()
        print(f"{time.time() - started:5.0f}s " + "  ".join(
            f"{seed}: {s.get('epochs_done', 0)}/{epochs} best {s.get('best_val_accuracy', float('nan')):.3f}"
            for seed, s in states.items()), flush=True)
        recent = [s["history"]["epoch_s"][-1] for s in states.values() if s.get("epochs_done", 0) >= 3]
        if waiting and len(recent) == len(procs):
            epoch_s = float(np.mean(recent))
            slowdown = (len(procs) + len(waiting)) / len(procs)  # worst case: the accelerator is the limit
            core_left = max(epochs - s["epochs_done"] for s in states.values()) * epoch_s * slowdown
            extra = epochs * epoch_s * slowdown + 90  # + compiling
            left = stop_at - time.time()
            if max(core_left, extra) < 0.9 * left:
                print(f"starting seeds {waiting}: {epoch_s:.1f} s an epoch now, {left:.0f} s left", flush=True)
                for seed in waiting:
                    launch(seed)
            else:
                print(f"not starting seeds {waiting}: {epoch_s:.1f} s an epoch, {left:.0f} s left", flush=True)
            waiting = []
    returned = 0.0
    for seed, proc in procs.items():
        last_lines = (work / f"{seed}.log").read_text().splitlines(True)[-4:]
        print(f"--- seed {seed}, exit {proc.returncode}:\n" + "".join(last_lines))
        folder = work / str(seed)
        files = _member_files(folder)
        size = sum(f.stat().st_size for f in files)
        if proc.returncode != 0 or not files or returned + size > MAX_RETURN_BYTES:
            print(f"seed {seed}: exit {proc.returncode}, {size / 1e6:.1f} MB: not returned", flush=True)
            continue
        pack_member(folder, out / f"member-{seed}.tar")
        returned += size
        print(f"seed {seed}: epoch {_state(folder).get('epochs_done')} returned ({size / 1e6:.1f} MB)", flush=True)


def _member_files(folder: Path) -> list[Path]:
    return [folder / n for n in ("checkpoint.keras", "state.json", "best.weights.npz") if (folder / n).is_file()]


def pack_member(folder: Path, tar_path: Path) -> None:
    """What resuming a member's run needs, as one file (written aside, then renamed: never half a tar)."""
    part = tar_path.with_name(tar_path.name + ".part")
    with tarfile.open(part, "w") as tar:
        for f in _member_files(folder):
            tar.add(f, arcname=f.name)
    os.replace(part, tar_path)


def adopt(data: Path, tars: list[Path], models_dir: Path | None, preset_name: str | None = None) -> list[str]:
    """Each returned member's run becomes an unfinished version of this registry; returns their names."""
    import tempfile

    from ferbatch.models import ModelRegistry
    from ferbatch.training import source_digests, unfinished_card_for

    registry = ModelRegistry.at(models_dir)
    sources = source_digests(data)
    versions = []
    for tar_path in tars:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with tarfile.open(tar_path, "r:") as tar:  # `train` writes plain tars
                    tar.extractall(tmp, filter="data")
            except tarfile.TarError as error:
                raise FerbatchError(f"{tar_path}: not a member tar written by `train` ({error})") from None
            version = registry.register_unfinished(tmp, unfinished_card_for(Path(tmp), preset_name, sources=sources))
        card = registry.unfinished_card(version)
        print(f"{tar_path.name}: {version}, epoch {card['epochs_done']} of {card['training_config']['epochs']}")
        versions.append(version)
    return versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = commands.add_parser("train")
    p.add_argument("--arrays", type=Path, required=True)
    p.add_argument("--ensemble", required=True)
    p.add_argument("--core", type=int, default=3, help="members started at once; the rest only if they fit")
    p.add_argument("--minutes", type=float, required=True, help="the deadline for every member")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--smoke", type=int, default=0, help="check the path: this many faces, 2 epochs")
    p = commands.add_parser("member")
    p.add_argument("--arrays", type=Path, required=True)
    p.add_argument("--ensemble", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--stop-at", type=float, required=True)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--smoke", type=int, default=0)
    p = commands.add_parser("adopt")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--models-dir", type=Path, default=None)
    p.add_argument("--preset", default=None, help="the ensemble preset the members belong to (for the cards)")
    p.add_argument("tars", type=Path, nargs="+")
    args = parser.parse_args()
    try:
        _run(args)
    except (FerbatchError, OSError, tarfile.TarError) as error:  # one line, as the ferbatch command gives
        raise SystemExit("Error: " + " ".join(str(error).split())) from None


def _run(args: argparse.Namespace) -> None:
    if args.command == "pack":
        pack(args.data, args.out)
    elif args.command == "train":
        args.out.mkdir(parents=True, exist_ok=True)
        train_ensemble(args.arrays, args.ensemble, args.core, args.minutes, args.out, args.smoke)
    elif args.command == "member":
        import cv2

        cv2.setNumThreads(1)  # one process per member: OpenCV's pool only adds contention on 48x48 faces
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
        train_member(args.arrays, args.ensemble, args.seed, args.stop_at, args.workdir, args.smoke)
    else:
        adopt(args.data, args.tars, args.models_dir, args.preset)


if __name__ == "__main__":
    main()
