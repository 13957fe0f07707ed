"""Duplicate and split-leakage detection: which images are one picture, and what that breaks.

Owns the pipeline (hash with cache -> multi-index search -> pixel verification -> classification)
and its typed result. Kinds of a reported pair: `duplicate` (same split), `leak-train-val`,
`leak-train-test`, `leak-val-test`, `unsplit` (one side in no split list), `label-conflict` (one
picture under two classes), `patient-conflict` (one picture, one class, two patient IDs: the
sheet is wrong for one), `exact-bytes` / `exact-pixels` (no verification needed). Clusters:
connected duplicate pairs (`duplicate`), and metadata groups found in more than one split:
`patient-leak` (same patient ID) and `source-leak` (same DOI and same page/figure file-name stem).

Library API for other commands (add-contribution calls this):

    find_duplicates_of(new_images, data_root, cache_path=None, jobs=None) -> ContributionCheck
        For each new image, the dataset images it duplicates (`matches[path]`: list of `Match`
        with the dataset path relative to Images-processed, score and evidence); duplicates among
        the new images themselves (`within`: list of `Pair`, paths as given); and findings for
        unreadable files (`findings`, code `image.unreadable`).

    check_leakage(data_root, splits_dir=None, metadata_dir=None, against=None, ...) -> LeakageReport

Never prints, never exits: progress is a callback, problems are findings. Sized for collections
far larger than COVID-CT: per image the run holds a relative path, a few shared strings and the
`hashcache.HashIndex` row; candidate pairs are judged `PAIR_CHUNK` at a time, with the
fingerprints of that chunk read from the cache.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, overload

import numpy as np
from pydantic import BaseModel, ConfigDict

from ctcurate.core.dataset import read_key_rows, split_of
from ctcurate.core.findings import Finding, error, has_errors, warning
from ctcurate.core.images import UnreadableImage, open_image
from ctcurate.core.layout import IMAGES_DIR, SPLIT_NAMES, SPLITS_DIR, image_names, label_of_class, list_images, special_entries
from ctcurate.core.pending import pending_findings
from ctcurate.core.progress import StepProgress, counted, for_step
from ctcurate.core.store import cache_location
from ctcurate.core.unionfind import components
from ctcurate.doi import normalize as doi_lib
from ctcurate.leakage.execution import Executor, open_executor
from ctcurate.leakage.hashcache import READ_CHUNK, VERIFY_VERSION, HashCache, HashIndex, IndexKeypoints, index_files
from ctcurate.leakage.hashing import HASH_VERSION, Fingerprint
from ctcurate.leakage.keypoints import (
    KeypointCandidate,
    Keypoints,
    Transform,
)
from ctcurate.leakage.keypoints import search as keypoint_search
from ctcurate.leakage.search import pairs_within_any
from ctcurate.leakage.verify import (
    QUICK_MIN,
    Seed,
    Verdict,
    quick_scores,
    verify_aligned,
    verify_pair,
)

# Candidate pairs: pHash distance of the trimmed views, direct or mirrored. On COVID-CT no pair at
# 11..16 verifies as a duplicate; copies cropped up to ~5% per side into the picture stay within 10
# (deeper crops, rotations and rescalings are the keypoint stage's).
DEFAULT_THRESHOLD = 10

class Pair(BaseModel):
    """One reported pair of images that are the same picture."""

    model_config = ConfigDict(frozen=True)

    a: str
    b: str
    kind: list[str]
    score: float
    evidence: dict[str, float | int | bool | str]
    stage: str = "hash"  # which candidate stage found it: hash | keypoints


class Cluster(BaseModel):
    """Images that belong together: one picture (`duplicate`), one patient or one source figure."""

    model_config = ConfigDict(frozen=True)

    type: str  # duplicate | patient | source
    key: str
    kind: list[str]
    members: list[str]
    splits: dict[str, list[str]]


class ImageInfo(BaseModel):
    """What the report shows beside a picture."""

    model_config = ConfigDict(frozen=True)

    path: str
    label: str
    split: str | None = None
    patient: str | None = None
    doi: str | None = None
    source: str | None = None


class LeakageReport(BaseModel):
    """The typed result of `check_leakage`."""

    pairs: list[Pair]
    clusters: list[Cluster]
    images: dict[str, ImageInfo]
    findings: list[Finding]
    stats: dict[str, int | float]

    @property
    def has_problems(self) -> bool:
        return bool(self.pairs or has_errors(self.findings) or any(c.type != "duplicate" for c in self.clusters))

    def kind_counts(self) -> dict[str, int]:
        """Pairs per kind, plus patient and source groups per kind."""
        kinds: dict[str, int] = defaultdict(int)
        for p in self.pairs:
            for k in p.kind:
                kinds[k] += 1
        for c in self.clusters:
            if c.type != "duplicate":
                for k in c.kind:
                    kinds[k] += 1
        return dict(sorted(kinds.items()))

    def summary(self) -> dict[str, object]:
        return {
            "images": self.stats.get("images", 0),
            "pairs": len(self.pairs),
            "duplicate_clusters": sum(c.type == "duplicate" for c in self.clusters),
            "by_kind": self.kind_counts(),
            "unreadable": sum(f.code == "image.unreadable" for f in self.findings),
            **{k: v for k, v in self.stats.items() if k != "images"},
            "findings": [f.model_dump(mode="json") for f in self.findings],
        }


@dataclass(frozen=True)
class Match:
    """A dataset image that a new image duplicates."""

    dataset_path: str
    score: float
    evidence: dict[str, float | int | bool | str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContributionCheck:
    matches: dict[Path, list[Match]]
    within: list[Pair]
    findings: list[Finding]


# --- metadata (small reader; the validating one is `validate`'s) ---------------------------------

def source_figure(file_name: str) -> str:
    """The figure a file was cut from: the panels `...-p23-108%0.png`, `...-p23-108%3.png` -> `...-p23-108%`.

    The `%` stays in the key: without it a panel family and an unrelated whole picture whose stem
    is the same number collide (COVID-CT's NonCOVID `14%0.jpg` is crawled patient 14's,
    `14.png` a MedPix case's).
    """
    name = Path(file_name).name
    if "%" in name:
        return name.split("%", 1)[0] + "%"
    return Path(name).stem


def read_metadata(metadata_dir: Path, cache: HashCache | None = None) -> dict[str, tuple[str | None, str | None]]:
    """`CT_COVID/x.png` -> (patient id, normalized DOI), from the sheets' key columns (`core.dataset`),
    remembered in `cache` while the sheets are unchanged."""
    return {
        r.image: (f"{label_of_class(r.class_dir)}:{r.patient_id}" if r.patient_id else None, doi_lib.normalize(r.doi) if r.doi else None)
        for r in read_key_rows(metadata_dir, cache.sheet_keys if cache is not None else None)
        if r.image
    }


def classify(a: ImageInfo, b: ImageInfo, exact: str | None = None) -> list[str]:
    kinds: list[str] = []
    if exact:
        kinds.append(exact)
    if a.split and b.split:
        if a.split == b.split:
            kinds.append("duplicate")
        else:
            x, y = sorted((a.split, b.split), key=SPLIT_NAMES.index)
            kinds.append(f"leak-{x}-{y}")
    else:
        kinds.append("unsplit" if (a.split or b.split) else "duplicate")
    if a.label and b.label and a.label != b.label:
        kinds.append("label-conflict")
    elif _patient_conflict([a, b]):
        kinds.append("patient-conflict")
    return kinds


def _group_clusters(images: _ImageTable, attr: str, kind: str, ctype: str) -> list[Cluster]:
    groups: dict[str, list[str]] = defaultdict(list)
    for rel, key, split in zip(images.rels, images.column(attr), images.column("split")):
        if key and split:
            groups[key].append(rel)
    out = []
    for key, members in sorted(groups.items()):
        splits: dict[str, list[str]] = defaultdict(list)
        for m in sorted(members):
            splits[images[m].split or ""].append(m)
        if len(splits) > 1:
            out.append(Cluster(type=ctype, key=key, kind=[kind], members=sorted(members), splits=dict(splits)))
    return out


# --- the pipeline ---------------------------------------------------------------------------


def _same_picture_fingerprint(a: Fingerprint, b: Fingerprint) -> bool:
    """Necessary for an exact pixel copy: same size, same hashes, same thumbnail."""
    return (a.width, a.height, a.box, a.thumb) == (b.width, b.height, b.box, b.thumb) and a.phash_m == b.phash_m


def _same_pixels(a: Path, b: Path) -> bool:
    """Confirm a checksum match on the decoded pixels themselves (rare: only exact copies get here)."""
    try:
        ia, ib = open_image(a), open_image(b)
    except UnreadableImage:
        return False
    return ia.mode == ib.mode and ia.size == ib.size and ia.tobytes() == ib.tobytes()


@dataclass(frozen=True)
class VerifyTask:
    """One pair to judge on its pixels, as plain picklable data (the unit of parallel work).

    `quick`: the thumbnail score and orientation already known; `seed`: the keypoint transform
    that aligns a (mirrored, if so) onto b.
    """

    a: Fingerprint
    b: Fingerprint
    path_a: str
    path_b: str
    quick: tuple[float, bool] | None = None
    seed: Seed | None = None


def _verify_task(task: VerifyTask) -> Verdict:
    """All per-pair work of a run: decode both pictures only if the cheap gates let them through."""
    if task.seed is not None:
        return verify_aligned(open_image(Path(task.path_a)), open_image(Path(task.path_b)), task.a, task.b, task.seed, {})
    return verify_pair(task.a, task.b, lambda: open_image(Path(task.path_a)), lambda: open_image(Path(task.path_b)), task.quick)


@dataclass(frozen=True)
class Found:
    """A pair the pipeline reports: indices into the left (and right) outcomes, and how it was found.

    `stage`: `hash` (whole views hash-close), `keypoints` (local features agree on one transform:
    rotated, rescaled, re-cropped copies); `exact`: `exact-bytes` / `exact-pixels`.
    """

    i: int
    j: int
    verdict: Verdict | None
    stage: str
    distance: int | None = None  # pHash distance (direct or mirrored), when hash-close
    exact: str | None = None
    transform: Transform | None = None


@dataclass(frozen=True)
class _Side:
    """One side of a search: the compact index of its images (fingerprints are read when needed)."""

    index: HashIndex

    @property
    def readable(self) -> np.ndarray:
        return np.flatnonzero(self.index.readable)

    def path(self, k: int) -> str:
        return str(self.index.paths[k])

    def sha(self, k: int) -> str:
        return self.index.sha(k)


# Candidate pairs judged at a time on their thumbnails: the thumbnails' variants (320 KiB per
# picture in `verify.quick_scores`) are all the client holds of the pictures, whatever the size of
# the collection. Pairs verified at a time on the workers (their fingerprints, 8 KiB a pair, are read
# per chunk): enough to keep a large cluster busy.
PAIR_CHUNK = 512
TASK_CHUNK = 8192


@dataclass
class _Search:
    """What every stage of one search shares: both sides, the cache, the pool, what is found."""

    left: _Side
    right: _Side  # the left side itself in a self-join
    self_join: bool
    cache: HashCache | None
    workers: Executor
    threshold: int
    progress: StepProgress | None = None
    found: list[Found] = field(default_factory=list)

    def known_pairs(self) -> set[tuple[int, int]]:
        return {(f.i, f.j) for f in self.found}

    def fingerprints(self, pairs: Sequence[tuple[int, int]]) -> tuple[dict[int, Fingerprint], dict[int, Fingerprint]]:
        """The fingerprints of both ends of these pairs (left's, right's), read once each."""
        if self.self_join:
            both = self.left.index.fingerprints(sorted({k for p in pairs for k in p}))
            return both, both
        return self.left.index.fingerprints(sorted({i for i, _ in pairs})), self.right.index.fingerprints(sorted({j for _, j in pairs}))


_TaskOf = Callable[[int, Fingerprint, Fingerprint], VerifyTask]


def _start_tasks(
    search: _Search, pairs: Sequence[tuple[int, int]], task_of: _TaskOf, step: str, priority: Sequence[float] | None = None
) -> Callable[[], list[Verdict]]:
    """Start the tasks `task_of(k, left fingerprint, right fingerprint)` of `pairs` on the executor
    (highest priority first); the call returned waits for their verdicts, in the order of `pairs`.
    The first chunk is on the workers when this returns, so that the client's own work (the next
    stages' candidate searches) runs meanwhile; their fingerprints are read a chunk at a time."""
    # their cost varies 20-fold: the likeliest duplicates go first, they are the ones decoded in full
    order = sorted(range(len(pairs)), key=lambda k: -(priority[k] if priority else 0.0))
    chunks = [order[start : start + TASK_CHUNK] for start in range(0, len(order), TASK_CHUNK)]

    def started(part: list[int]) -> Iterator[Verdict]:
        fl, fr = search.fingerprints([pairs[k] for k in part])
        tasks = [task_of(k, fl[pairs[k][0]], fr[pairs[k][1]]) for k in part]
        return search.workers.map(_verify_task, tasks, min_parallel=8)

    first = started(chunks[0]) if chunks else iter(())

    def verdicts() -> Iterator[Verdict]:
        yield from first
        for part in chunks[1:]:
            yield from started(part)

    def finish() -> list[Verdict]:
        done = dict(zip(order, counted(verdicts(), len(pairs), step, search.progress)))
        return [done[k] for k in range(len(pairs))]

    return finish


def _stored(v: Verdict) -> dict[str, Any]:
    return {"duplicate": v.duplicate, "score": v.score, "mirrored": v.mirrored, "evidence": v.evidence}


def _rejected(score: float, mirrored: bool) -> dict[str, Any]:
    return {"duplicate": False, "score": round(score, 4), "mirrored": mirrored, "evidence": {"thumb_ncc": round(score, 4)}}


def _verdict(stored: dict[str, Any]) -> Verdict:
    return Verdict(True, stored["score"], stored["mirrored"], stored["evidence"])


def _pair_key(search: _Search, i: int, j: int, stage: str) -> str:
    key = HashCache.pair_key(search.left.sha(i), search.right.sha(j))
    return key if stage == "hash" else f"{key}:{stage}"


def _cached_verdicts(search: _Search, keys: list[str]) -> dict[str, dict[str, Any]]:
    return search.cache.get_verdicts(keys) if search.cache else {}


def _remember(search: _Search, fresh: list[tuple[str, dict[str, Any]]]) -> None:
    if search.cache and fresh:
        search.cache.put_verdicts(fresh)


@dataclass(frozen=True)
class _ToVerify:
    """A pair that passed its thumbnail gate, to verify on its pixels (found, if a duplicate, as `found`)."""

    i: int
    j: int
    key: str  # of its verdict in the cache
    quick: tuple[float, bool]
    found: Found  # its verdict left out


def _start_verifying(search: _Search, todo: list[_ToVerify], step: str, priority: Sequence[float] | None = None) -> Callable[[], None]:
    """Start verifying `todo` on the workers; the call returned waits, remembers every verdict and
    keeps the duplicates."""

    def task_of(k: int, fa: Fingerprint, fb: Fingerprint) -> VerifyTask:
        t = todo[k]
        return VerifyTask(fa, fb, search.left.path(t.i), search.right.path(t.j), t.quick)

    verdicts_of = _start_tasks(search, [(t.i, t.j) for t in todo], task_of, step, priority)

    def finish() -> None:
        verdicts = verdicts_of()
        _remember(search, [(t.key, _stored(v)) for t, v in zip(todo, verdicts)])
        search.found += [replace(t.found, verdict=v) for t, v in zip(todo, verdicts) if v.duplicate]

    return finish


def _hash_stage(search: _Search) -> Callable[[], None]:
    """Whole views within the pHash threshold (directly or mirrored): exact copies, then verified ones
    (started on the workers; the call returned waits for them)."""
    left, right = search.left, search.right
    lidx, ridx = left.readable, right.readable
    if not len(lidx) or not len(ridx):
        return lambda: None
    rh = None if search.self_join else right.index.phash[ridx]
    ci, cj, cd = pairs_within_any(left.index.phash[lidx], left.index.phash_m[lidx], search.threshold, rh)
    ci, cj = lidx[ci], ridx[cj]
    order = np.lexsort((cd, cj, ci))
    ci, cj, cd = ci[order], cj[order], cd[order]
    todo: list[_ToVerify] = []
    for start in range(0, len(ci), PAIR_CHUNK):
        sl = slice(start, start + PAIR_CHUNK)
        todo += _hash_chunk(search, list(zip(ci[sl].tolist(), cj[sl].tolist(), cd[sl].tolist())))
    return _start_verifying(search, todo, "verifying", [t.quick[0] for t in todo])


def _hash_chunk(search: _Search, cands: list[tuple[int, int, int]]) -> list[_ToVerify]:
    """One chunk of hash-close pairs: exact copies found, cached verdicts taken, the rest dropped on
    the thumbnails (most hash neighbours are other scans) or returned to verify."""
    left, right = search.left, search.right
    exact = [(i, j) for i, j, d in cands if d == 0 and left.sha(i) != right.sha(j)]
    fl, fr = search.fingerprints(exact)
    pairs: list[tuple[int, int, int]] = []
    for i, j, d in cands:
        if left.sha(i) == right.sha(j):
            search.found.append(Found(i, j, None, "hash", d, "exact-bytes"))
        elif d == 0 and _same_picture_fingerprint(fl[i], fr[j]) and _same_pixels(Path(left.path(i)), Path(right.path(j))):
            search.found.append(Found(i, j, None, "hash", d, "exact-pixels"))
        else:
            pairs.append((i, j, d))
    keys = [_pair_key(search, i, j, "hash") for i, j, _ in pairs]
    known = _cached_verdicts(search, keys)
    search.found += [Found(i, j, _verdict(known[k]), "hash", d) for (i, j, d), k in zip(pairs, keys) if k in known and known[k]["duplicate"]]
    pending = [(i, j, d, k) for (i, j, d), k in zip(pairs, keys) if k not in known]
    if not pending:
        return []
    fl, fr = search.fingerprints([(i, j) for i, j, _, _ in pending])
    rows_l = sorted(fl)
    at_l = {k: n for n, k in enumerate(rows_l)}
    thumbs_l = [fl[k] for k in rows_l]
    if search.self_join:
        at_r, thumbs_r = at_l, thumbs_l
    else:
        rows_r = sorted(fr)
        at_r, thumbs_r = {k: n for n, k in enumerate(rows_r)}, [fr[k] for k in rows_r]
    quick, flipped = quick_scores(thumbs_l, thumbs_r, np.array([at_l[i] for i, _, _, _ in pending]), np.array([at_r[j] for _, j, _, _ in pending]))
    fresh, todo = [], []
    for (i, j, d, key), q, m in zip(pending, quick.tolist(), flipped.tolist()):
        if q < QUICK_MIN:
            fresh.append((key, _rejected(q, bool(m))))
        else:
            todo.append(_ToVerify(i, j, key, (q, bool(m)), Found(i, j, None, "hash", d)))
    _remember(search, fresh)
    return todo


def _crop_seed(c: KeypointCandidate, a: Keypoints, b: Keypoints) -> Seed:
    """The keypoint transform (keypoint-view pixels) in trimmed-crop pixels."""
    m = c.transform.matrix
    k = a.scale / b.scale
    return Seed(c.mirrored, (m[0] * k, m[1] * k, m[2] / b.scale, m[3] * k, m[4] * k, m[5] / b.scale))


def _contents_key(search: _Search, kind: str, *also: str) -> str:
    """A cache key for a result that depends only on the contents searched, in their order ("" where
    unreadable; and on the versions, and `also`): a warm run over an unchanged dataset reads it back."""
    left, right = search.left.index, search.right.index
    digest = hashlib.sha256("\n".join([HASH_VERSION, VERIFY_VERSION, *also]).encode())
    # hashed a chunk of contents at a time: no list of a million strings is held through the search
    for n, index in enumerate([left] if search.self_join else [left, right]):
        if n:
            digest.update(b"\n|")  # between the sides
        for start in range(0, len(index), READ_CHUNK):
            shas = [index.sha(k) if index.readable[k] else "" for k in range(start, min(start + READ_CHUNK, len(index)))]
            digest.update(("\n" + "\n".join(shas)).encode() if shas else b"")
    return f"{kind}:" + digest.hexdigest()


def _searched(search: _Search) -> list[KeypointCandidate]:
    """`keypoints.search` over the keypoints in the cache, remembered there for this exact list of
    contents (a warm run over an unchanged dataset searches nothing)."""
    left, right = search.left.index, search.right.index
    key = _contents_key(search, "keypoint-search")
    stored = search.cache.get_search(key) if search.cache else None
    if stored is not None:
        return [KeypointCandidate(a, b, m, Transform(tuple(t), n, v)) for a, b, m, t, n, v in stored]
    cands = keypoint_search(IndexKeypoints(left, None if search.self_join else right), not search.self_join)
    if search.cache:
        search.cache.put_search(key, [[c.a, c.b, c.mirrored, list(c.transform.matrix), c.transform.inliers, c.transform.votes]
                                      for c in cands])
    return cands


def _keypoint_candidates(search: _Search, searched: list[KeypointCandidate]) -> list[tuple[int, int, KeypointCandidate, Seed]]:
    """(i, j, candidate, seed in crop pixels) of every keypoint candidate no earlier stage found.
    Only the candidates' keypoints are read (for their scale): the search reads the rest itself."""
    seen = search.known_pairs()
    fresh = []
    for c in searched:
        i, j = (min(c.a, c.b), max(c.a, c.b)) if search.self_join else (c.a, c.b)
        if (i, j) not in seen:
            fresh.append((i, j, c))
    if search.self_join:
        lkp = rkp = search.left.index.keypoints_of({k for _, _, c in fresh for k in (c.a, c.b)})
    else:
        lkp = search.left.index.keypoints_of({c.a for _, _, c in fresh})
        rkp = search.right.index.keypoints_of({c.b for _, _, c in fresh})
    return [(i, j, c, _crop_seed(c, lkp[c.a], rkp[c.b])) for i, j, c in fresh if c.a in lkp and c.b in rkp]


def _keypoint_stage(search: _Search, searched: list[KeypointCandidate]) -> None:
    """Pairs whose local features agree on one transform (rotated, rescaled, re-cropped copies),
    of the keypoint search's candidates that no earlier stage found."""
    cands = _keypoint_candidates(search, searched)
    keys = [_pair_key(search, i, j, "keypoints") for i, j, _, _ in cands]
    known = _cached_verdicts(search, keys)
    todo = [(c, seed, key) for (_, _, c, seed), key in zip(cands, keys) if key not in known]
    left, right = search.left, search.right

    def task_of(k: int, fa: Fingerprint, fb: Fingerprint) -> VerifyTask:
        c, seed, _ = todo[k]
        return VerifyTask(fa, fb, left.path(c.a), right.path(c.b), seed=seed)

    verdicts = _start_tasks(search, [(c.a, c.b) for c, _, _ in todo], task_of, "verifying keypoint pairs",
                            [float(c.transform.inliers) for c, _, _ in todo])()
    fresh = [(key, _stored(v)) for (_, _, key), v in zip(todo, verdicts)]
    known.update(fresh)
    _remember(search, fresh)
    for (i, j, c, seed), key in zip(cands, keys):
        if known[key]["duplicate"]:
            transform = Transform(seed.matrix, c.transform.inliers, c.transform.votes)
            transform = transform if c.a == i else _reversed(transform, c.mirrored)
            search.found.append(Found(i, j, _verdict(known[key]), "keypoints", transform=transform))


def _find_pairs(
    left: HashIndex, right: HashIndex | None, cache: HashCache | None, threshold: int, workers: Executor,
    progress: StepProgress | None = None,
) -> list[Found]:
    """Every verified pair, by stage: hash-close whole views, then keypoint transforms.
    `j` indexes `right` if given (else `left`, with i < j)."""
    search = _Search(_Side(left), _Side(left if right is None else right), right is None, cache, workers, threshold, progress)
    key = _contents_key(search, "pairs-found", f"threshold {threshold}")
    stored = cache.get_found(key) if cache else None
    if stored is not None:
        return [_found_from_json(f) for f in stored]
    # the client's keypoint search runs while the workers verify the hash stage's pairs; the
    # keypoint stage leaves out the pairs the hash stage found, so it waits for it
    hash_verified = _hash_stage(search)
    searched = _searched(search)
    hash_verified()
    _keypoint_stage(search, searched)
    found = sorted(search.found, key=lambda f: (f.i, f.j))
    if cache:
        cache.put_found(key, [_found_to_json(f) for f in found])
    return found


def _found_to_json(f: Found) -> dict[str, Any]:
    return {"i": f.i, "j": f.j, "stage": f.stage, "distance": f.distance, "exact": f.exact,
            "verdict": None if f.verdict is None else _stored(f.verdict),
            "transform": None if f.transform is None else [list(f.transform.matrix), f.transform.inliers, f.transform.votes]}


def _found_from_json(d: dict[str, Any]) -> Found:
    v, t = d["verdict"], d["transform"]
    return Found(d["i"], d["j"], None if v is None else Verdict(v["duplicate"], v["score"], v["mirrored"], v["evidence"]),
                 d["stage"], d["distance"], d["exact"], None if t is None else Transform(tuple(t[0]), t[1], t[2]))


def _unreadable(index: HashIndex, rel: Callable[[Path], str]) -> list[Finding]:
    return [
        error("image.unreadable", f"cannot hash image: {index.errors[k]}", file=rel(index.paths[k]), hint="re-export or remove the file")
        for k in sorted(index.errors)
    ]


def _reversed(t: Transform, mirrored: bool) -> Transform:
    """Scale and rotation of the transform read the other way (b to a); its shift is dropped.
    Mirroring conjugates the rotation, so a mirrored transform keeps its angle's sign."""
    scale, angle = 1.0 / t.scale, math.radians(t.angle if mirrored else -t.angle)
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return Transform((c, -s, 0.0, s, c, 0.0), t.inliers, t.votes)


def _transform_evidence(t: Transform, swapped: bool, mirrored: bool) -> dict[str, float | int | bool | str]:
    """Scale and angle of the keypoint transform, read from the first path of the pair to the second."""
    t = _reversed(t, mirrored) if swapped else t
    return {"scale": round(t.scale, 3), "angle": round(t.angle, 1), "inliers": t.inliers}


def _pair_model(a: str, b: str, kinds: list[str], found: Found) -> Pair:
    evidence: dict[str, float | int | bool | str] = {"match": found.exact or "verified", "stage": found.stage}
    if found.distance is not None:
        evidence["phash_distance"] = found.distance
    score = 1.0
    if found.verdict is not None:
        evidence |= found.verdict.evidence
        evidence["mirrored"] = found.verdict.mirrored
        score = found.verdict.score
    x, y = sorted((a, b))
    if found.transform is not None:
        evidence |= _transform_evidence(found.transform, x != a, bool(evidence.get("mirrored")))
    return Pair(a=x, b=y, kind=kinds, score=score, evidence=evidence, stage=found.stage)


def dataset_findings(data_root: Path, metadata_dir: Path | None, n_images: int) -> list[Finding]:
    """What makes the dataset itself unfit to judge: a half-applied contribution, no image at all,
    entries of the image folders that are not files (skipped, never opened)."""
    out = pending_findings(data_root, metadata_dir)
    if n_images == 0:
        out.append(error("image.none", "no image in any class folder; nothing was checked", file=f"{IMAGES_DIR}/"))
    out += [error("file.special", f"{what}, not an image file; it is not checked or used", file=rel)
            for rel, what in special_entries(data_root)]
    return out


def cache_findings(cache: HashCache) -> list[Finding]:
    """What was wrong with the cache and has been repaired: a warning each, never a failure."""
    return [warning("cache.damaged", text, file=str(cache.path), hint="nothing to do: the damaged part was rebuilt")
            for text in cache.warnings]


class _ImagePaths(Sequence[Path]):
    """The files `root / rel` of sorted `rels`, made when asked: a string per image, not a path object."""

    def __init__(self, root: Path, rels: list[str]) -> None:
        self.root, self.rels = root, rels

    def __len__(self) -> int:
        return len(self.rels)

    @overload
    def __getitem__(self, k: int) -> Path: ...

    @overload
    def __getitem__(self, k: slice) -> _ImagePaths: ...

    def __getitem__(self, k: int | slice) -> Path | _ImagePaths:
        if isinstance(k, slice):
            return _ImagePaths(self.root, self.rels[k])
        return self.root / self.rels[k]


class _ImageTable(Mapping[str, ImageInfo]):
    """What the report shows beside each picture of a (large) dataset, in columns: an `ImageInfo` is
    made only when asked for. Rows follow the sorted relative paths."""

    def __init__(self, rels: list[str], labels: list[str], splits: list[str | None], patients: list[str | None], dois: list[str | None]) -> None:
        self.rels, self._labels, self._splits, self._patients, self._dois = rels, labels, splits, patients, dois

    def _row(self, rel: str) -> int:
        k = bisect_left(self.rels, rel)
        if k == len(self.rels) or self.rels[k] != rel:
            raise KeyError(rel)
        return k

    def __getitem__(self, rel: str) -> ImageInfo:
        k = self._row(rel)
        return ImageInfo(path=rel, label=self._labels[k], split=self._splits[k], patient=self._patients[k], doi=self._dois[k],
                         source=self._source(k))

    def __iter__(self) -> Iterator[str]:
        return iter(self.rels)

    def __len__(self) -> int:
        return len(self.rels)

    def _source(self, k: int) -> str:
        class_dir, name = self.rels[k].split("/", 1)
        return f"{self._dois[k] or class_dir}|{source_figure(name)}"

    def column(self, attr: str) -> Iterator[str | None]:
        """One field of every row, in row order (`split`, `patient` or `source`)."""
        if attr == "source":
            return (self._source(k) for k in range(len(self.rels)))
        return iter({"split": self._splits, "patient": self._patients}[attr])


def _image_infos(data_root: Path, splits_dir: Path | None, metadata_dir: Path | None, cache: HashCache) -> tuple[_ImagePaths, _ImageTable]:
    by_class = image_names(data_root)
    splits = split_of(splits_dir, list(by_class))
    meta = read_metadata(metadata_dir, cache) if metadata_dir is not None and metadata_dir.is_dir() else {}
    rels = sorted(f"{class_dir}/{name}" for class_dir, names in by_class.items() for name in names)
    labels, row_splits, patients, dois = [], [], [], []
    label_of = {class_dir: label_of_class(class_dir) for class_dir in by_class}
    for rel in rels:
        class_dir, name = rel.split("/", 1)
        patient, d = meta.get(rel, (None, None))
        if d is None:
            pre = doi_lib.preprint_from_filename(name)
            d = pre.doi if pre else None
        labels.append(label_of[class_dir])
        row_splits.append(splits.get(rel))
        patients.append(patient)
        dois.append(d)
    return _ImagePaths(data_root / IMAGES_DIR, rels), _ImageTable(rels, labels, row_splits, patients, dois)


@contextmanager
def _cache_and_workers(cache_path: Path | None, jobs: int | None, scheduler: str | None) -> Iterator[tuple[HashCache, Executor]]:
    """The hash cache and the executor of one run, both closed at its end (the cache even when the
    executor cannot be had)."""
    with open_hash_cache(cache_path) as cache, open_executor(jobs, scheduler) as workers:
        yield cache, workers


def open_hash_cache(cache_path: Path | None) -> HashCache:
    """The hash cache in the file `store.cache_location` picks (`--cache`, $CTCURATE_CACHE, user's folder)."""
    return HashCache(cache_location(cache_path))


def check_leakage(
    data_root: Path,
    splits_dir: Path | None = None,
    metadata_dir: Path | None = None,
    against: Mapping[str, tuple[Path, str | None]] | None = None,
    cache_path: Path | None = None,
    jobs: int | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    progress: StepProgress | None = None,
    scheduler: str | None = None,
) -> LeakageReport:
    """Find every duplicate pair in the dataset (or between `against` and the dataset) and classify it.

    `against` maps each image of a second set (a contribution) to its file and declared class folder.
    The per-image and per-pair work runs on the Dask cluster at `scheduler` if given
    (`execution.ClusterUnavailable` when it cannot be used), else on `jobs` local processes.
    """
    if splits_dir is None and metadata_dir is not None and (metadata_dir / SPLITS_DIR).is_dir():
        splits_dir = metadata_dir / SPLITS_DIR
    if splits_dir is None and (data_root / SPLITS_DIR).is_dir():
        splits_dir = data_root / SPLITS_DIR
    with _cache_and_workers(cache_path, jobs, scheduler) as (cache, workers):
        paths, infos = _image_infos(data_root, splits_dir, metadata_dir, cache)
        rels = paths.rels
        run = _Run(cache, jobs, threshold, workers, progress)
        if against is None:
            pairs, findings, all_infos = _dataset_pairs(data_root, paths, infos, run)
        else:
            pairs, findings, all_infos = _against_pairs(against, data_root, paths, infos, run)
    findings = dataset_findings(data_root, metadata_dir, n_images=len(rels)) + findings + cache_findings(cache)
    pairs.sort(key=lambda p: (p.a, p.b))
    clusters = _duplicate_clusters(pairs, all_infos)
    if against is None:
        clusters += _group_clusters(infos, "patient", "patient-leak", "patient")
        clusters += _group_clusters(infos, "source", "source-leak", "source")
    shown = {p.a for p in pairs} | {p.b for p in pairs} | {m for c in clusters for m in c.members}
    return LeakageReport(
        pairs=pairs,
        clusters=clusters,
        images={k: all_infos[k] for k in sorted(shown) if k in all_infos},
        findings=findings,
        stats={"images": len(all_infos) if against is not None else len(rels), "phash_threshold": threshold},
    )


@dataclass(frozen=True)
class _Run:
    """What the stages of one run share."""

    cache: HashCache
    jobs: int | None
    threshold: int
    workers: Executor
    progress: StepProgress | None


def _dataset_pairs(
    data_root: Path, paths: _ImagePaths, infos: _ImageTable, run: _Run
) -> tuple[list[Pair], list[Finding], Mapping[str, ImageInfo]]:
    """Every verified pair within the dataset, classified by split and label."""
    rels = paths.rels
    index = index_files(paths, run.cache, run.jobs, for_step(run.progress, "hashing"), run.workers)
    findings = _unreadable(index, lambda p: str(p.relative_to(data_root / IMAGES_DIR)))
    pairs = []
    for f in _find_pairs(index, None, run.cache, run.threshold, run.workers, run.progress):
        a, b = infos[rels[f.i]], infos[rels[f.j]]
        pairs.append(_pair_model(a.path, b.path, classify(a, b, f.exact), f))
    return pairs, findings, infos


def _against_pairs(
    against: Mapping[str, tuple[Path, str | None]], data_root: Path, paths: _ImagePaths, infos: _ImageTable, run: _Run
) -> tuple[list[Pair], list[Finding], Mapping[str, ImageInfo]]:
    """`--against`: the new images against the dataset and among themselves (paths prefixed `new:`)."""
    new_paths, new_infos = _against_infos(against)
    new_rels, rels = sorted(new_paths), paths.rels
    index = index_files([new_paths[r] for r in new_rels] + list(paths), run.cache, run.jobs,
                        for_step(run.progress, "hashing"), run.workers)
    new_out, old_out = index.part(0, len(new_rels)), index.part(len(new_rels), len(index))
    rel_of = {v: k for k, v in new_paths.items()}
    findings = _unreadable(new_out, lambda p: "new:" + rel_of.get(p, str(p))) + _unreadable(
        old_out, lambda p: str(p.relative_to(data_root / IMAGES_DIR)))
    new = {r: i.model_copy(update={"path": "new:" + r}) for r, i in new_infos.items()}
    pairs = []
    for f in _find_pairs(new_out, old_out, run.cache, run.threshold, run.workers, run.progress):
        a, b = new[new_rels[f.i]], infos[rels[f.j]]
        kinds = [k for k in classify(a, b, f.exact) if k not in ("unsplit", "duplicate")]
        pairs.append(_pair_model(a.path, b.path, ["contribution-duplicate", *kinds], f))
    for f in _find_pairs(new_out, None, run.cache, run.threshold, run.workers, run.progress):
        a, b = new[new_rels[f.i]], new[new_rels[f.j]]
        pairs.append(_pair_model(a.path, b.path, ["duplicate", *([f.exact] if f.exact else [])] + (["label-conflict"] if a.label != b.label else []), f))
    return pairs, findings, _Joined({"new:" + r: i for r, i in new.items()}, infos)


class _Joined(Mapping[str, ImageInfo]):
    """The new images' infos, then the dataset's (no copy of the dataset's table)."""

    def __init__(self, first: Mapping[str, ImageInfo], second: Mapping[str, ImageInfo]) -> None:
        self.first, self.second = first, second

    def __getitem__(self, rel: str) -> ImageInfo:
        return self.first[rel] if rel in self.first else self.second[rel]

    def __iter__(self) -> Iterator[str]:
        yield from self.first
        yield from (k for k in self.second if k not in self.first)

    def __len__(self) -> int:
        return len(self.first) + sum(k not in self.first for k in self.second)


def _against_infos(against: Mapping[str, tuple[Path, str | None]]) -> tuple[dict[str, Path], dict[str, ImageInfo]]:
    """The images to compare with the dataset; an image whose class is not declared has no label to conflict with."""
    paths = {rel: path for rel, (path, _) in against.items()}
    infos = {rel: ImageInfo(path=rel, label=label_of_class(c) if c else "") for rel, (_, c) in against.items()}
    return paths, infos


def _patient_conflict(copies: list[ImageInfo]) -> bool:
    """Copies of one picture under one label but more than one patient ID: the sheet is wrong for some."""
    ids: dict[str | None, set[str]] = defaultdict(set)
    for c in copies:
        if c.patient:
            ids[c.label].add(c.patient)
    return any(len(v) > 1 for v in ids.values())


def _duplicate_clusters(pairs: list[Pair], infos: Mapping[str, ImageInfo]) -> list[Cluster]:
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    index = {n: k for k, n in enumerate(names)}
    out = []
    for comp in components(range(len(names)), [(index[p.a], index[p.b]) for p in pairs]):
        if len(comp) < 2:
            continue
        members = [names[k] for k in sorted(comp)]
        splits: dict[str, list[str]] = defaultdict(list)
        for m in members:
            splits[(infos[m].split if m in infos else None) or "none"].append(m)
        kinds = {"duplicate"}
        real = [s for s in splits if s != "none"]
        for x in range(len(real)):
            for y in range(x + 1, len(real)):
                a, b = sorted((real[x], real[y]), key=SPLIT_NAMES.index)
                kinds.add(f"leak-{a}-{b}")
        if len({infos[m].label for m in members if m in infos}) > 1:
            kinds.add("label-conflict")
        if _patient_conflict([infos[m] for m in members if m in infos]):
            kinds.add("patient-conflict")
        out.append(Cluster(type="duplicate", key=members[0], kind=sorted(kinds), members=members, splits=dict(splits)))
    return out


def find_duplicates_of(
    new_images: Sequence[Path],
    data_root: Path,
    cache_path: Path | None = None,
    jobs: int | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    scheduler: str | None = None,
) -> ContributionCheck:
    """For each new image, the dataset images it duplicates; and duplicates among the new images."""
    by_class = list_images(data_root)
    rels = [f"{c}/{p.name}" for c, files in sorted(by_class.items()) for p in files]
    old_paths = [data_root / IMAGES_DIR / r for r in rels]
    new_list = [Path(p) for p in new_images]
    with _cache_and_workers(cache_path, jobs, scheduler) as (cache, workers):
        index = index_files(new_list + old_paths, cache, jobs, workers=workers)
        new_out, old_out = index.part(0, len(new_list)), index.part(len(new_list), len(index))
        matches: dict[Path, list[Match]] = {p: [] for p in new_list}
        for f in _find_pairs(new_out, old_out, cache, threshold, workers):
            pair = _pair_model(str(new_list[f.i]), rels[f.j], [], f)
            matches[new_list[f.i]].append(Match(rels[f.j], pair.score, pair.evidence))
        within = []
        for f in _find_pairs(new_out, None, cache, threshold, workers):
            within.append(_pair_model(str(new_list[f.i]), str(new_list[f.j]), ["duplicate", *([f.exact] if f.exact else [])], f))
    findings = _unreadable(new_out, str) + _unreadable(old_out, lambda p: str(p.relative_to(data_root / IMAGES_DIR)))
    findings += cache_findings(cache)
    return ContributionCheck(matches=matches, within=within, findings=findings)
