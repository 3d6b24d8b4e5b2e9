"""A simple online IoU tracker: one track per person, fed by detections and by found poses.

Each frame, `update(frame, detections)` predicts every track's box (its last box moved on at its
recent velocity), matches the detections to the predictions greedily (highest IoU first), starts
a track for each unmatched detection that does not lie mostly inside (or around) a tracked box,
and ends the tracks not seen for more than `max_gap` frames. `confirm(track, frame, box)` reports
that the track's person was seen (e.g. a pose was found) at `box`: the track then follows the
person between detections, which a pedestrian detector misses often (a track confirmed on the
previous frame keeps its predicted box when a detection matches: the detection only keeps it
alive). Two tracks that come to
cover the same person are merged into the older one. Pure logic on boxes: no video, no detector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .boxes import as_boxes, box_iou, nested_fraction

VELOCITY_SPAN = 4   # observations over which a track's velocity is measured


@dataclass
class TrackState:
    """One tracked person; `box` `(4,)` is where the track is on the current frame."""

    id: int
    box: np.ndarray
    detected: bool = False          # a detection matched on the current frame
    detection: int | None = None    # index of that detection in `update`'s detections (or None)
    last_seen: int = 0              # last frame with a matched detection or a confirmation
    confirmed: int | None = None    # last frame with a confirmation
    seen_box: np.ndarray | None = None                                      # (4,) box when last observed
    observed: list[tuple[int, np.ndarray]] = field(default_factory=list)   # (frame, box centre (2,))

    def predict(self, frame: int) -> np.ndarray:
        """`(4,)` box expected on `frame`: the box last observed, moved at the mean velocity of its
        centre over the last few observations (box sizes jitter too much to extrapolate)."""
        recent = self.observed[-VELOCITY_SPAN - 1:]
        seen = self.seen_box if self.seen_box is not None else self.box
        if len(recent) < 2:
            return seen.copy()
        velocity = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])    # (2,) pixels per frame
        return seen + np.tile(velocity * (frame - recent[-1][0]), 2)

    def observe(self, frame: int, box: np.ndarray) -> None:
        self.box = np.asarray(box, dtype=np.float64).copy()
        self.seen_box = self.box.copy()
        self.last_seen = frame
        centre = (self.box[:2] + self.box[2:]) / 2
        if self.observed and self.observed[-1][0] == frame:
            self.observed[-1] = (frame, centre)
        else:
            self.observed.append((frame, centre))
            del self.observed[:-VELOCITY_SPAN - 1]


def resize_limited(old: np.ndarray, new: np.ndarray, max_resize: float) -> np.ndarray:
    """`new` `(4,)` with its width and height clipped to within `max_resize` times `old`'s."""
    old_size, new_size = old[2:] - old[:2], new[2:] - new[:2]                   # (2,) width, height
    size = np.clip(new_size, old_size / max_resize, old_size * max_resize)
    centre = (new[:2] + new[2:]) / 2
    return np.concatenate([centre - size / 2, centre + size / 2])


def match_greedy(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs `(row, column)` of an `(N, M)` IoU matrix, best first, each row and column used at
    most once, every pair's IoU at least `threshold`."""
    pairs: list[tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_rows and c not in used_cols:
            pairs.append((r, c))
            used_rows.add(r)
            used_cols.add(c)
    return pairs


class IoUTracker:
    """Online tracker; see the module docstring. Track ids count up from 0 in order of creation."""

    def __init__(self, iou_threshold: float = 0.3, max_gap: int = 10, duplicate_iou: float = 0.6,
                 max_resize: float = 1.15) -> None:
        self.iou_threshold, self.max_gap, self.duplicate_iou = iou_threshold, max_gap, duplicate_iou
        self.max_resize = max_resize
        self.tracks: list[TrackState] = []
        self.ended: list[int] = []      # ids ended by the last update or confirm, for the caller to release
        self._next_id = 0
        self._frame: int | None = None

    def update(self, frame: int, detections: np.ndarray | None) -> list[TrackState]:
        """Advance to `frame` with its detections (`(N, 4)`; None = the detector did not run on it);
        returns the active tracks, oldest first."""
        if self._frame is not None and frame <= self._frame:
            raise ValueError(f"frames must be strictly ascending: {frame} after {self._frame}")
        self._frame = frame
        self.ended = [t.id for t in self.tracks if frame - t.last_seen > self.max_gap]
        self.tracks = [t for t in self.tracks if frame - t.last_seen <= self.max_gap]
        for track in self.tracks:
            track.box, track.detected, track.detection = track.predict(frame), False, None
        if detections is not None:
            boxes = as_boxes(detections)
            current = np.stack([t.box for t in self.tracks]) if self.tracks else np.zeros((0, 4))
            pairs = match_greedy(box_iou(current, boxes), self.iou_threshold)
            for r, c in pairs:
                track = self.tracks[r]
                if track.confirmed is not None and frame - track.confirmed <= 1:
                    track.last_seen = frame     # followed closely: keep the (tighter) predicted box
                else:
                    track.observe(frame, boxes[c])
                track.detected, track.detection = True, c
            matched = {c for _, c in pairs}
            for c in range(len(boxes)):
                if c in matched or self._covered(boxes[c]):
                    continue
                track = TrackState(id=self._next_id, box=boxes[c], detected=True, detection=c)
                track.observe(frame, boxes[c])
                self.tracks.append(track)
                self._next_id += 1
        return list(self.tracks)

    def confirm(self, track_id: int, frame: int, box: np.ndarray) -> None:
        """The person of track `track_id` was seen on `frame` at `box` `(4,)`: the track moves there,
        its width and height changing by at most `max_resize` times (a pose half hidden behind
        another walker gives a much smaller box). If it now covers the same person as an older
        track, it is merged into that one (ended)."""
        track = next(t for t in self.tracks if t.id == track_id)
        track.observe(frame, resize_limited(track.box, np.asarray(box, dtype=np.float64), self.max_resize))
        track.confirmed = frame
        for other in self.tracks:
            if other.id < track.id and box_iou(other.box[None], track.box[None])[0, 0] > self.duplicate_iou:
                self.tracks.remove(track)
                self.ended.append(track.id)
                return

    def _covered(self, box: np.ndarray) -> bool:
        """Whether most of `box`, or of a tracked box, lies inside the other (the same person)."""
        if not self.tracks:
            return False
        current = np.stack([t.box for t in self.tracks])
        overlap = nested_fraction(box[None], current)[0]
        return bool((overlap > 0.5).any() or (box_iou(box[None], current)[0] >= self.iou_threshold).any())
