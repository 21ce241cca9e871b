"""Link slump polygons across dates into tracks: a slump keeps its id through time.

Polygons of consecutive observed dates are linked when they overlap. When one slump becomes
several (a split), the largest part keeps the id and the others start tracks that record
where they split from; when several become one (a merge), the merged polygon continues the
largest track and the others end, recording which track they merged into.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import shapely


@dataclass
class Track:
    """One slump through time: its polygon on each date it was predicted."""

    id: int
    geometries: dict[str, shapely.Geometry] = field(default_factory=dict)
    split_from: int | None = None
    merged_into: int | None = None

    @property
    def latest(self) -> shapely.Geometry:
        return self.geometries[max(self.geometries)]


def link_tracks(dated: Sequence[tuple[str, Sequence[shapely.Geometry]]],
                min_overlap: float = 0.1) -> list[Track]:
    """Tracks from ``(date, polygons)`` in date order (polygons in one metric CRS).

    Two polygons are linked when their intersection covers at least ``min_overlap`` of the
    smaller one. A track that is not seen on a date stays open, to be linked later.
    """
    tracks: list[Track] = []
    for date, polygons in sorted(dated, key=lambda item: item[0]):
        open_tracks = [t for t in tracks if t.merged_into is None]
        links = {k: [t for t in open_tracks if _overlaps(t.latest, polygon, min_overlap)]
                 for k, polygon in enumerate(polygons)}
        claimed: dict[int, list[int]] = {}  # track id -> polygon indexes it links to
        for k, linked in links.items():
            for track in linked:
                claimed.setdefault(track.id, []).append(k)
        owner = {}  # polygon index -> the track it continues
        for track_id, indexes in claimed.items():
            largest = max(indexes, key=lambda k: polygons[k].area)
            owner.setdefault(largest, []).append(track_id)
        by_id = {t.id: t for t in tracks}
        for k, polygon in enumerate(polygons):
            continuing = owner.get(k, [])
            if continuing:
                main = max(continuing, key=lambda i: by_id[i].latest.area)
                by_id[main].geometries[date] = polygon
                for other in continuing:
                    if other != main:
                        by_id[other].merged_into = main
                continue
            track = Track(len(tracks), {date: polygon})
            parents = links[k]
            if parents:
                track.split_from = max(parents, key=lambda t: t.latest.area).id
            tracks.append(track)
    return tracks


def _overlaps(a: shapely.Geometry, b: shapely.Geometry, min_overlap: float) -> bool:
    if not a.intersects(b):
        return False
    return a.intersection(b).area >= min_overlap * min(a.area, b.area)
