"""One self-contained HTML page of charts per scoring run, read back from an output folder's Parquet.

Reads only the `images`, `faces` and `aggregates` datasets (pyarrow/pandas) and draws with matplotlib's Agg
canvas; the charts are embedded as base64 PNG, so the file opens offline, needs no JavaScript and holds no face
pixels. `write_html_report(out_dir, path)` is the entry point (`ferbatch report OUT --html FILE` calls it).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from ferbatch.classes import CLASS_NAMES
from ferbatch.errors import FerbatchError
from ferbatch.reports import TOP_LEVEL_FOLDER
from ferbatch.safe.text import printable

SENTIMENTS = ("negative", "neutral", "positive")  # left to right in the stacked bars
COLOURS = {"positive": "#2e9e4f", "neutral": "#a3a3a3", "negative": "#d1403c"}
STATUS_COLOURS = {"ok": "#4a78b5", "no_face": "#cfd6df", "error": "#e08b2c"}
STATUS_LABELS = {"ok": "with faces", "no_face": "no face", "error": "error"}
# The documented default (README, "Sentiment"); a run's own map comes from its Parquet metadata when present.
DEFAULT_SENTIMENT = {"Happy": "positive", "Angry": "negative", "Disgust": "negative", "Fear": "negative",
                     "Sad": "negative", "Neutral": "neutral", "Surprise": "neutral"}
TOP_LEVEL = TOP_LEVEL_FOLDER  # images directly in a scanned folder (older runs wrote folder = '')
MAX_GROUPS = 25  # folders shown; the rest are named in a note
MAX_DAYS = 45  # more distinct taken dates than this are charted by month
MAX_RUNS = 30  # runs in the across-runs chart
MAX_REASONS = 12
DPI = 144
IMAGE_COLUMNS = ["run_id", "run_date", "scored_at", "root", "path", "folder", "taken_at", "status", "error",
                 "n_faces", "emotion", "sentiment", "sentiment_score", "model_version", "detector"]


@dataclass
class RunData:
    """What the page shows: one run's image and face rows, and one summary row per run of the folder."""

    out_dir: Path
    run_id: str
    images: pd.DataFrame
    faces: pd.DataFrame
    runs: pd.DataFrame  # run_id, run_date, n_images, n_ok, n_no_face, n_error, n_faces, share_*, mean score
    metadata: dict[str, str] = field(default_factory=dict)
    current: bool = False  # the current table (every photo once, by its newest scoring), not one run

    @property
    def scope(self) -> str:
        return "the current table" if self.current else "this run"

    @property
    def sentiment_map(self) -> dict[str, str]:
        try:
            mapping = json.loads(self.metadata.get("sentiment_map", ""))
        except ValueError:
            mapping = {}
        return {**DEFAULT_SENTIMENT, **(mapping if isinstance(mapping, dict) else {})}


# ---------------------------------------------------------------- reading


_RUN_DATE = ds.partitioning(pa.schema([("run_date", pa.date32())]), flavor="hive")


def _files(out_dir: Path, table: str, run_id: str | None = None) -> list[str]:
    files = sorted((out_dir / table).glob("run_date=*/part-*.parquet"))
    if run_id is not None:  # part-<run_id>[-<shard>].parquet
        files = [p for p in files if p.name == f"part-{run_id}.parquet" or p.name.startswith(f"part-{run_id}-")]
    return [str(p) for p in files]


def _read(out_dir: Path, table: str, run_id: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    files = _files(out_dir, table, run_id)
    if not files:
        return pd.DataFrame(columns=columns or [])
    # run_date comes from the run_date=YYYY-MM-DD folder names (the files do not repeat it)
    dataset = ds.dataset(files, format="parquet", partitioning=_RUN_DATE,
                         partition_base_dir=str(out_dir / table))
    filter_ = ds.field("run_id") == run_id if run_id is not None else None
    return dataset.to_table(columns=columns, filter=filter_).to_pandas()


def _run_summaries(out_dir: Path) -> pd.DataFrame:
    """One row per run: the aggregates' `all` row, else counts from the images dataset."""
    aggregates = _read(out_dir, "aggregates")
    if len(aggregates):
        runs = aggregates[aggregates.group_by == "all"].drop(columns=["group_by", "group_value"])
        return runs.sort_values("run_id").reset_index(drop=True)
    images = _read(out_dir, "images", columns=["run_id", "run_date", "status", "n_faces", "sentiment",
                                                "sentiment_score"])
    if not len(images):
        return pd.DataFrame(columns=["run_id", "run_date", "n_images"])
    rows = []
    for run_id, group in images.groupby("run_id"):
        rows.append({"run_id": run_id, "run_date": group.run_date.iloc[0], **_counts(group)})
    return pd.DataFrame(rows).sort_values("run_id").reset_index(drop=True)


def latest_run_id(out_dir: str | Path) -> str | None:
    """The run `ferbatch report` shows: the most recent that scored images, else the most recent at all."""
    runs = _run_summaries(Path(out_dir))
    if not len(runs):
        return None
    with_images = runs[runs.n_images > 0]
    return str((with_images if len(with_images) else runs).run_id.max())


def _load_current(out_dir: Path, version: Path, runs: pd.DataFrame) -> RunData:
    """The current table as one page: every photo once; `run_id` names the newest run in it."""
    images = ds.dataset(str(version / "images"), format="parquet", partitioning=_RUN_DATE).to_table(
        columns=IMAGE_COLUMNS).to_pandas()
    faces = ds.dataset(str(version / "faces"), format="parquet", partitioning=_RUN_DATE).to_table(
        columns=["emotion", "sentiment"]).to_pandas()
    newest = str(images.run_id.max()) if len(images) else str(runs.run_id.max())
    metadata = {}
    if files := [f for f in sorted((version / "images").glob("run_date=*/part-*.parquet"))
                 if f.name.startswith(f"part-{newest}")]:
        raw = pq.read_schema(files[0]).metadata or {}
        metadata = {k.decode().removeprefix("ferbatch."): v.decode() for k, v in raw.items()
                    if k.startswith(b"ferbatch.")}
    return RunData(out_dir, newest, images, faces, runs, metadata, current=True)


def load_run(out_dir: str | Path, run_id: str | None = None) -> RunData:
    """The current table (default, once the folder has one), or one run of the history (`run_id`, or "latest")."""
    from ferbatch.reports._current import live_version

    out_dir = Path(out_dir)
    runs = _run_summaries(out_dir)
    if not len(runs):
        raise FerbatchError(f"{out_dir}: no scoring runs found (is this a ferbatch --out folder?)")
    if run_id is None and (version := live_version(out_dir)) is not None and (version / "images").is_dir():
        return _load_current(out_dir, version, runs)
    if run_id in (None, "latest"):
        run_id = latest_run_id(out_dir)
    elif run_id not in set(runs.run_id):
        raise FerbatchError(f"{out_dir}: no run {run_id!r} (latest: {runs.run_id.max()})")
    images = _read(out_dir, "images", run_id, columns=IMAGE_COLUMNS)
    faces = _read(out_dir, "faces", run_id, columns=["emotion", "sentiment"])
    metadata = {}
    if files := _files(out_dir, "images", run_id) or _files(out_dir, "aggregates", run_id):
        raw = pq.read_schema(files[0]).metadata or {}
        metadata = {k.decode().removeprefix("ferbatch."): v.decode() for k, v in raw.items()
                    if k.startswith(b"ferbatch.")}
    return RunData(out_dir, run_id, images, faces, runs, metadata)


# ---------------------------------------------------------------- numbers


def _counts(images: pd.DataFrame) -> dict:
    ok = images[images.status == "ok"]
    shares = ok.sentiment.value_counts(normalize=True) if len(ok) else pd.Series(dtype=float)
    return {
        "n_images": len(images), "n_ok": len(ok), "n_no_face": int((images.status == "no_face").sum()),
        "n_error": int((images.status == "error").sum()), "n_faces": int(images.n_faces.sum()),
        **{f"share_{s}": (float(shares.get(s, 0.0)) if len(ok) else None) for s in SENTIMENTS},
        "mean_sentiment_score": float(ok.sentiment_score.mean()) if len(ok) else None,
    }


def _by_group(images: pd.DataFrame, key: pd.Series) -> pd.DataFrame:
    """Per group: images, images with faces, sentiment shares over those, mean score."""
    frame = images.assign(_key=key)
    return pd.DataFrame([{"group": value, **_counts(group)} for value, group in frame.groupby("_key", sort=True)])


def _error_reason(text: str) -> str:
    return str(text).split(":")[0].strip() or "unknown"


# ---------------------------------------------------------------- charts


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> Figure:
    """A figure on matplotlib's Agg canvas (savefig picks it for PNG), without pyplot's global state."""
    return Figure(figsize=(width, height), layout="constrained")


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=9)


def _share_bars(ax, labels: list[str], table: pd.DataFrame) -> None:
    """100% stacked horizontal bars, negative | neutral | positive, percentages written where they fit."""
    y = range(len(labels))
    left = [0.0] * len(labels)
    for sentiment in SENTIMENTS:
        values = [(v or 0.0) * 100 for v in table[f"share_{sentiment}"].tolist()]
        ax.barh(y, values, left=left, color=COLOURS[sentiment], label=sentiment, height=0.7, edgecolor="white")
        for i, (start, value) in enumerate(zip(left, values, strict=True)):
            if value >= 9:
                ax.text(start + value / 2, i, f"{value:.0f}%", ha="center", va="center", fontsize=8,
                        color="white" if sentiment != "neutral" else "#222222")
        left = [a + b for a, b in zip(left, values, strict=True)]
    for i, n_ok in enumerate(table.n_ok.tolist()):
        if not n_ok:
            ax.text(1, i, "no faces found", va="center", fontsize=8, color="#666666")
    ax.set_xlim(0, 100)
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set_xlabel("share of images with faces (%)")
    _style(ax)


def _score_bars(ax, table: pd.DataFrame) -> None:
    scores = table.mean_sentiment_score.tolist()
    y = range(len(scores))
    values = [s if s is not None and s == s else 0.0 for s in scores]
    colours = [COLOURS["positive"] if v > 0.05 else COLOURS["negative"] if v < -0.05 else COLOURS["neutral"]
               for v in values]
    ax.barh(y, values, color=colours, height=0.7)
    for i, (score, value) in enumerate(zip(scores, values, strict=True)):
        if score is None or score != score:
            ax.text(0.03, i, "–", va="center", fontsize=8, color="#666666")
        else:
            ax.text(value + (0.03 if value >= 0 else -0.03), i, f"{score:+.2f}".replace("-", "−"), va="center",
                    fontsize=8, ha="left" if value >= 0 else "right")
    ax.axvline(0, color="#444444", linewidth=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xticks([-1, -0.5, 0, 0.5, 1], ["−1", "−0.5", "0", "+0.5", "+1"])
    ax.set_xlabel("mean sentiment score (−1 … +1)")
    ax.tick_params(axis="y", left=False)
    _style(ax)


def _group_chart(table: pd.DataFrame, labels: list[str], title: str) -> str:
    height = 1.3 + 0.36 * len(labels)
    figure = _figure(10, height)
    share_ax, score_ax = figure.subplots(1, 2, sharey=True, width_ratios=[3, 2])
    labels = [f"{label}  (n={n_ok}/{n})" for label, n_ok, n in zip(labels, table.n_ok, table.n_images, strict=True)]
    _share_bars(share_ax, labels, table)
    _score_bars(score_ax, table)
    share_ax.set_title("Sentiment share", fontsize=10, loc="left")
    score_ax.set_title("Mean sentiment score", fontsize=10, loc="left")
    figure.suptitle(title, fontsize=12, x=0.01, ha="left", fontweight="bold")
    figure.legend(*share_ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, frameon=False,
                  fontsize=9)
    return _png(figure)


def _overall_chart(counts: dict, whole: str = "Whole run") -> str:
    figure = _figure(10, 1.6)
    ax = figure.subplots()
    _share_bars(ax, [""], pd.DataFrame([counts]))
    ax.tick_params(axis="y", left=False)
    ax.spines["left"].set_visible(False)
    mean = counts["mean_sentiment_score"]
    figure.suptitle(f"{whole}: {counts['n_ok']} images with faces, mean sentiment score {mean:+.2f}",
                    fontsize=12, x=0.01, ha="left", fontweight="bold")
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, frameon=False, fontsize=9)
    return _png(figure)


def _emotion_chart(images: pd.DataFrame, faces: pd.DataFrame, mapping: dict[str, str]) -> str:
    ok = images[images.status == "ok"]
    figure = _figure(10, 3.2)
    axes = figure.subplots(1, 2, sharey=True)
    colours = [COLOURS.get(mapping.get(name, "neutral"), COLOURS["neutral"]) for name in CLASS_NAMES]
    for ax, (series, what) in zip(axes, [(ok.emotion, "images (dominant emotion)"), (faces.emotion, "faces")],
                                  strict=True):
        counts = series.value_counts().reindex(list(CLASS_NAMES), fill_value=0)
        total = max(int(counts.sum()), 1)
        ax.barh(range(len(CLASS_NAMES)), counts.tolist(), color=colours, height=0.7)
        for i, value in enumerate(counts.tolist()):
            ax.text(value, i, f" {value} ({value / total:.0%})", va="center", fontsize=8)
        ax.set_yticks(range(len(CLASS_NAMES)), [f"{name} ({mapping.get(name, '?')})" for name in CLASS_NAMES])
        ax.set_xlabel(f"number of {what.split()[0]}")
        ax.set_title(f"Per {what[:-1] if what == 'faces' else what.replace('images', 'image')}", fontsize=10,
                     loc="left")
        ax.set_xlim(0, max(int(counts.max()), 1) * 1.3)
        _style(ax)
    axes[0].invert_yaxis()
    figure.suptitle("Emotion mix (bar colour = sentiment it counts as)", fontsize=12, x=0.01, ha="left",
                    fontweight="bold")
    return _png(figure)


def _error_chart(reasons: pd.Series) -> str:
    figure = _figure(10, 1.2 + 0.36 * len(reasons))
    ax = figure.subplots()
    ax.barh(range(len(reasons)), reasons.tolist(), color=STATUS_COLOURS["error"], height=0.7)
    for i, value in enumerate(reasons.tolist()):
        ax.text(value, i, f" {value}", va="center", fontsize=8)
    ax.set_yticks(range(len(reasons)), [printable(str(reason)) for reason in reasons.index])
    ax.invert_yaxis()
    ax.set_xlim(0, max(reasons.max(), 1) * 1.15)
    ax.set_xlabel("number of images")
    ax.set_title("Error reasons (images that could not be scored)", fontsize=12, loc="left", fontweight="bold")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _style(ax)
    return _png(figure)


def _faces_chart(readable: pd.DataFrame) -> str:
    capped = readable.n_faces.clip(upper=10)
    counts = capped.value_counts().reindex(range(int(capped.max()) + 1), fill_value=0)
    labels = [str(n) if n < 10 else "10+" for n in counts.index]
    figure = _figure(10, 3)
    ax = figure.subplots()
    colours = [STATUS_COLOURS["no_face"] if n == 0 else STATUS_COLOURS["ok"] for n in counts.index]
    ax.bar(labels, counts.tolist(), color=colours, width=0.7)
    for i, value in enumerate(counts.tolist()):
        ax.text(i, value, f"{value}", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("faces found in the image")
    ax.set_ylabel("number of images")
    ax.set_ylim(0, max(int(counts.max()), 1) * 1.15)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"Faces per image ({len(readable)} readable images, {int(readable.n_faces.sum())} faces)",
                 fontsize=12, loc="left", fontweight="bold")
    _style(ax)
    return _png(figure)


def _run_label(run_id: str) -> str:
    """20261127T174645Z-cb5fdf -> '2026-11-27\n17:46:45' (run ids start with their UTC start time)."""
    try:
        return f"{datetime.strptime(run_id.split('-')[0], '%Y%m%dT%H%M%SZ'):%Y-%m-%d\n%H:%M:%S}"
    except ValueError:
        return run_id


def _runs_chart(runs: pd.DataFrame) -> str:
    labels = [_run_label(run_id) for run_id in runs.run_id]
    figure = _figure(10, 6.2)
    share_ax, score_ax, count_ax = figure.subplots(3, 1, sharex=True, height_ratios=[3, 2, 2])
    x = range(len(runs))
    bottom = [0.0] * len(runs)
    for sentiment in SENTIMENTS:
        values = [(v if v == v and v is not None else 0.0) * 100 for v in runs[f"share_{sentiment}"].tolist()]
        share_ax.bar(x, values, bottom=bottom, color=COLOURS[sentiment], label=sentiment, width=0.7)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    share_ax.set_ylim(0, 100)
    share_ax.set_ylabel("share (%)")
    share_ax.legend(*[h[::-1] for h in share_ax.get_legend_handles_labels()], loc="upper left",
                    bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    share_ax.set_title("Sentiment share of images with faces", fontsize=10, loc="left")
    scores = [s if s == s and s is not None else 0.0 for s in runs.mean_sentiment_score.tolist()]
    score_ax.bar(x, scores, width=0.7, color=[COLOURS["positive"] if s > 0.05 else COLOURS["negative"]
                                              if s < -0.05 else COLOURS["neutral"] for s in scores])
    score_ax.axhline(0, color="#444444", linewidth=0.8)
    score_ax.set_ylim(-1, 1)
    score_ax.set_ylabel("mean score")
    score_ax.set_title("Mean sentiment score", fontsize=10, loc="left")
    bottom = [0] * len(runs)
    for status in ("ok", "no_face", "error"):
        values = runs[f"n_{status}"].astype(int).tolist()
        count_ax.bar(x, values, bottom=bottom, color=STATUS_COLOURS[status], label=STATUS_LABELS[status],
                     width=0.7)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    count_ax.set_ylabel("images")
    count_ax.set_title("Images scored", fontsize=10, loc="left")
    count_ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    count_ax.set_xticks(list(x), labels, fontsize=8)
    count_ax.set_xlabel("run (date, start time UTC)")
    for ax in (share_ax, score_ax, count_ax):
        _style(ax)
    figure.suptitle(f"Across runs (last {len(runs)} that scored images)", fontsize=12, x=0.01, ha="left",
                    fontweight="bold")
    return _png(figure)


# ---------------------------------------------------------------- page


_CSS = """
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #222; background: #fff;
       margin: 24px auto; max-width: 1040px; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.sub { color: #666; font-size: 13px; margin-top: 0; }
table { border-collapse: collapse; font-size: 14px; margin: 8px 0; }
th, td { text-align: left; padding: 3px 14px 3px 0; vertical-align: top; } th { color: #555; font-weight: normal; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { width: 100%; height: auto; display: block; margin: 8px 0; }
.note { background: #f4f4f4; border-left: 4px solid #aaa; padding: 6px 10px; font-size: 14px; }
.kpis { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }
.kpi { border: 1px solid #ddd; border-radius: 6px; padding: 6px 14px; min-width: 90px; }
.kpi b { display: block; font-size: 20px; } .kpi span { color: #666; font-size: 12px; }
.positive { color: #2e9e4f; } .negative { color: #d1403c; } .neutral { color: #777; } .error { color: #b8641a; }
code { font-size: 13px; }
"""


_GROUP_NOTE = ('<p class="sub">n = images with faces / all images in the group; shares and the mean score are '
               "over the images with faces.</p>")


def _e(value: object) -> str:
    """Text for the page: control and bidirectional characters shown as \\xNN / \\uNNNN (as on a terminal), then
    HTML-escaped, so a name is shown as named and never reorders or hides the page's text."""
    return html.escape(printable(str(value)), quote=True)


def _img(data: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _header(run: RunData, counts: dict) -> list[str]:
    images, metadata = run.images, run.metadata
    model = (", ".join(sorted(images.model_version.unique())) if len(images)
             else metadata.get("model_version", "?"))
    detector = images.detector.iloc[0] if len(images) else metadata.get("detector", "?")
    scored_at = images.scored_at.min() if len(images) else None
    run_date = run.runs.set_index("run_id").run_date.get(run.run_id)
    roots = sorted(set(images.root)) if len(images) else []
    mean = counts["mean_sentiment_score"]
    mean_class = "positive" if (mean or 0) > 0.05 else "negative" if (mean or 0) < -0.05 else "neutral"
    kpis = [
        (counts["n_images"], "images"), (counts["n_ok"], "with faces"), (counts["n_no_face"], "no face"),
        (counts["n_error"], "errors"), (counts["n_faces"], "faces"),
        ("–" if mean is None else f"{mean:+.2f}", "mean sentiment score"),
    ]
    classes = {"errors": "error" if counts["n_error"] else "", "mean sentiment score": mean_class}
    kpi_html = "".join(f'<div class="kpi"><b class="{classes.get(label, "")}">{_e(value)}</b>'
                       f"<span>{_e(label)}</span></div>" for value, label in kpis)
    rows = [
        ("Table", "current: every photo that exists, once, by its newest scoring") if run.current else None,
        ("Newest run" if run.current else "Run", f"<code>{_e(run.run_id)}</code>"),
        ("Run date", _e(run_date if run_date is not None else "?")),
        ("Scored at", _e(f"{pd.Timestamp(scored_at):%Y-%m-%d %H:%M:%S} UTC" if scored_at is not None else "–")),
        ("Model version", f"<code>{_e(model)}</code>"),
        ("Face detector", f"<code>{_e(detector)}</code>"),
        ("Scanned folders", "<br>".join(f"<code>{_e(r)}</code>" for r in roots) or "–"),
        ("Images", f"{counts['n_images']} = {counts['n_ok']} ok (with faces) + {counts['n_no_face']} no_face + "
                   f"{counts['n_error']} error"),
        ("Faces", _e(counts["n_faces"])),
        ("Sentiment of images with faces", " · ".join(
            f'<span class="{s}">{s} {_percent(counts[f"share_{s}"])}</span>' for s in reversed(SENTIMENTS))),
    ]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in filter(None, rows))
    return [f'<div class="kpis">{kpi_html}</div>', f"<table>{table}</table>"]


# Chart text is data (folder names, error reasons): never parsed as mathtext or TeX, so `$5 and $10` is drawn as
# written and a folder named `$\frac{1$` cannot break the page.
_PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def render_html(run: RunData) -> str:
    """The page for one run, as a string."""
    with matplotlib.rc_context(_PLAIN_TEXT):
        return _render_html(run)


def _render_html(run: RunData) -> str:
    images, mapping = run.images, run.sentiment_map
    counts = _counts(images) if len(images) else {
        **dict.fromkeys(("n_images", "n_ok", "n_no_face", "n_error", "n_faces"), 0),
        **{f"share_{s}": None for s in SENTIMENTS}, "mean_sentiment_score": None}
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"current table (newest run {run.run_id})" if run.current else f"run {run.run_id}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        # Everything is inline: the page may load nothing from anywhere, which the policy enforces.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ferbatch {_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Facial sentiment: {_e(title)}</h1>",
        f'<p class="sub">From <code>{_e(run.out_dir)}</code>, generated {now} by ferbatch. Sentiment is read from '
        "facial expressions; shares count images with at least one face, by their dominant emotion. "
        "Scores run from −1 (negative) to +1 (positive).</p>",
        *_header(run, counts),
    ]
    ok = images[images.status == "ok"] if len(images) else images
    if not len(images):
        parts.append(_note("The current table holds no photos, so there is nothing to chart." if run.current
                           else "This run scored no images, so there is nothing to chart."))
    elif not len(ok):
        parts.append(_note(f"No image in {run.scope} had a face that could be scored, so there are no sentiment or "
                           "emotion charts."))
    else:
        overall = _overall_chart(counts, "All photos" if run.current else "Whole run")
        parts += ["<h2>Sentiment</h2>", _img(overall, f"Sentiment share of {run.scope}")]
        parts += _folder_section(images)
        parts += _date_section(images, run.scope)
        parts += ["<h2>Emotions</h2>", _img(_emotion_chart(images, run.faces, mapping), "Emotion mix")]
    if len(images):
        parts += _faces_section(images, run.scope)
        parts += _error_section(images, run.scope)
    parts += _runs_section(run.runs)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _folder_section(images: pd.DataFrame) -> list[str]:
    table = _by_group(images, images.folder)
    table = table.sort_values(["n_images", "group"], ascending=[False, True])
    parts = ["<h2>By folder</h2>"]
    if len(table) > MAX_GROUPS:
        rest = table.iloc[MAX_GROUPS:]
        parts.append(_note(f"Showing the {MAX_GROUPS} folders with the most images; {len(rest)} more folders "
                           f"({int(rest.n_images.sum())} images) are left out of the chart."))
        table = table.iloc[:MAX_GROUPS]
    labels = [printable(g) if g else TOP_LEVEL for g in table.group]
    parts.append(_GROUP_NOTE)
    parts.append(_img(_group_chart(table, labels, "By folder (first-level subfolder of each scanned folder)"),
                      "Sentiment share and mean score by folder"))
    return parts


def _date_section(images: pd.DataFrame, scope: str) -> list[str]:
    parts = ["<h2>By taken date</h2>"]
    dated = images[images.taken_at.notna()]
    if not len(dated):
        return [*parts, _note(f"No image in {scope} has an EXIF date (DateTimeOriginal), so there is no chart "
                              "by taken date.")]
    if len(dated) < len(images):
        parts.append(_note(f"{len(images) - len(dated)} of {len(images)} images have no EXIF date and are left "
                           "out of this chart."))
    days = pd.to_datetime(dated.taken_at, utc=True).dt.strftime("%Y-%m-%d")
    unit = "day"
    if days.nunique() > MAX_DAYS:
        days, unit = pd.to_datetime(dated.taken_at, utc=True).dt.strftime("%Y-%m"), "month"
    table = _by_group(dated, days)
    parts.append(_GROUP_NOTE)
    if not table.n_ok.any():
        parts.append(_note("None of the dated images had a face."))
    parts.append(_img(_group_chart(table, table.group.tolist(), f"By taken date (EXIF, UTC, per {unit})"),
                      f"Sentiment share and mean score per {unit} taken"))
    return parts


def _faces_section(images: pd.DataFrame, scope: str) -> list[str]:
    readable = images[images.status != "error"]
    if not len(readable):
        return ["<h2>Faces per image</h2>", _note(f"No image in {scope} could be read.")]
    return ["<h2>Faces per image</h2>", _img(_faces_chart(readable), "Distribution of faces per image")]


def _error_section(images: pd.DataFrame, scope: str) -> list[str]:
    errors = images[images.status == "error"]
    parts = ["<h2>Errors</h2>"]
    if not len(errors):
        return [*parts, _note(f"No errors: every image in {scope} could be read.")]
    reasons = errors.error.fillna("unknown").map(_error_reason).value_counts()
    if len(reasons) > MAX_REASONS:
        reasons = pd.concat([reasons.iloc[:MAX_REASONS - 1],
                             pd.Series({"other": int(reasons.iloc[MAX_REASONS - 1:].sum())})])
    parts.append(_img(_error_chart(reasons), "Error reasons"))
    examples = errors.sort_values("path").head(20)
    rows = "".join(f"<tr><td><code>{_e(printable(p))}</code></td><td>{_e(printable(e))}</td></tr>"
                   for p, e in zip(examples.path, examples.error.fillna(""), strict=True))
    more = f" (first 20 of {len(errors)})" if len(errors) > 20 else ""
    parts.append(f"<p>Files that could not be scored{more}:</p>"
                 f"<table><tr><th>path</th><th>error</th></tr>{rows}</table>")
    return parts


def _runs_section(runs: pd.DataFrame) -> list[str]:
    scored = runs[runs.n_images > 0].tail(MAX_RUNS)
    if len(scored) < 2:
        return []
    return ["<h2>Across runs</h2>", _img(_runs_chart(scored.reset_index(drop=True)), "Sentiment across runs")]


def write_html_report(out_dir: str | Path, path: str | Path, run_id: str | None = None) -> Path:
    """Write the HTML report of `out_dir`'s current table (default) or of one run (`run_id`, or "latest": the latest
    that scored images; also the default for a folder from before the current table) to `path`.

    Raises FerbatchError when the folder holds no runs (or not `run_id`), or `path` may not be written: only a
    regular file (or nothing) is replaced, in a folder that exists (see ferbatch.safe.files). Returns the path.
    """
    from ferbatch.safe.files import check_target, write_report_file

    check_target(path, "HTML report")  # before the charts are drawn: a target that will be refused fails at once
    inside = Path(os.path.realpath(Path(path).parent))
    report_folder = Path(os.path.realpath(out_dir))
    if report_folder in inside.parents:  # the datasets' folders: every reader of them would meet the page
        raise FerbatchError(f"{path}: inside the report folder's datasets ({out_dir}); write the page elsewhere")
    page = render_html(load_run(out_dir, run_id))
    return write_report_file(path, page.encode("utf-8"), "HTML report")
