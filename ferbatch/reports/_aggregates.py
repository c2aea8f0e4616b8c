"""Per-group counts of a run's images, kept as running totals and written to `aggregates/`."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date

from ferbatch.classes import CLASS_NAMES
from ferbatch.reports._rows import ImageRow, sentiment_shares
from ferbatch.reports._schemas import GROUP_BYS


class Aggregator:
    """Running per-group counts, so aggregates cost nothing per image kept in memory."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str | None], Counter] = defaultdict(Counter)
        self._score_sums: dict[tuple[str, str | None], float] = defaultdict(float)

    def add(self, row: ImageRow) -> None:
        taken = row.taken_at
        keys = [("all", "all"), ("folder", row.folder), ("taken_date", taken.date().isoformat() if taken else None)]
        for key in keys:
            counts = self._counts[key]
            counts["n_images"] += 1
            counts[f"n_{row.status}"] += 1
            counts["n_faces"] += row.n_faces
            if row.status == "ok":
                counts[row.sentiment] += 1
                counts[f"n_{row.emotion.lower()}"] += 1
                self._score_sums[key] += row.sentiment_score

    def merge(self, other: Aggregator) -> None:
        for key, counts in other._counts.items():
            self._counts[key].update(counts)
        for key, total in other._score_sums.items():
            self._score_sums[key] += total

    def rows(self, run_id: str, run_date: date, model_version: str) -> list[dict]:
        rows = []
        order = {name: i for i, name in enumerate(GROUP_BYS)}
        for key in sorted(self._counts, key=lambda k: (order[k[0]], k[1] is None, k[1] or "")):
            counts, n_ok = self._counts[key], self._counts[key]["n_ok"]
            rows.append(
                {
                    "run_id": run_id, "run_date": run_date, "group_by": key[0], "group_value": key[1],
                    "n_images": counts["n_images"], "n_ok": n_ok, "n_no_face": counts["n_no_face"],
                    "n_error": counts["n_error"], "n_faces": counts["n_faces"],
                    **{f"share_{s}": share for s, share in sentiment_shares(counts, n_ok).items()},
                    "mean_sentiment_score": self._score_sums[key] / n_ok if n_ok else None,
                    **{f"n_{name.lower()}": counts[f"n_{name.lower()}"] for name in CLASS_NAMES},
                    "model_version": model_version,
                }
            )
        if not rows:  # a run that scored nothing still leaves its mark
            rows.append({"run_id": run_id, "run_date": run_date, "group_by": "all", "group_value": "all",
                         **dict.fromkeys(("n_images", "n_ok", "n_no_face", "n_error", "n_faces"), 0),
                         **{f"n_{name.lower()}": 0 for name in CLASS_NAMES}, "model_version": model_version})
        return rows
