"""Duplicate and split-leakage detection: which images are one picture, and what that breaks.

Owns the pipeline (hash with cache -> multi-index search -> pixel verification -> classification)
and its typed result. Kinds of a reported pair: `duplicate` (same split), `leak-train-val`,
`leak-train-test`, `leak-val-test`, `unsplit` (one side in no split list), `label-conflict` (one
picture under two classes), `exact-bytes` / `exact-pixels` (no verification needed). Clusters:
connected duplicate pairs (`duplicate`), and metadata groups found in more than one split:
`patient-leak` (same patient ID) and `source-leak` (same DOI and same page/figure file-name stem).

Library API for other commands (add-contribution calls this):

    find_duplicates_of(new_images, data_root, cache_path=None, jobs=None) -> ContributionCheck
        For each new image, the dataset images it duplicates (`matches[path]`: list of `Match`
        with the dataset path relative to Images-processed, score and evidence); duplicates among
        the new images themselves (`within`: list of `Pair`, paths as given); and findings for
        unreadable files (`findings`, code `image.unreadable`).

    check_leakage(data_root, splits_dir=None, metadata_dir=None, against=None, ...) -> LeakageReport

Never prints, never exits: progress is a callback, problems are findings.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from ctcurate.doi import normalize as doi_lib
from ctcurate.core.findings import Finding, error, has_errors, warning
from ctcurate.core.progress import StepProgress, counted, for_step
from ctcurate.leakage.execution import Executor, open_executor
from ctcurate.leakage.hashcache import HashCache, HashOutcome, hash_files
from ctcurate.leakage.hashing import SUBVIEWS, THUMB, Fingerprint
from ctcurate.core.images import UnreadableImage, open_image
from ctcurate.core.dataset import read_key_rows, split_of
from ctcurate.core.layout import IMAGES_DIR, SPLIT_NAMES, SPLITS_DIR, label_of_class, list_images, special_entries
from ctcurate.core.pending import pending_findings
from ctcurate.leakage.search import pairs_within, pairs_within_any
from ctcurate.core.store import cache_location
from ctcurate.core.unionfind import components
from ctcurate.leakage.verify import QUICK_MIN, Verdict, Window, mirror_window, quick_scores, verify_pair, window_scores


# Candidate pairs: pHash distance of the trimmed views, direct or mirrored. On COVID-CT no pair at
# 11..16 verifies as a duplicate; copies cropped up to ~5% per side into the picture stay within 10.
DEFAULT_THRESHOLD = 10

LEAK_KINDS = ("leak-train-val", "leak-train-test", "leak-val-test")


class Pair(BaseModel):
    """One reported pair of images that are the same picture."""

    model_config = ConfigDict(frozen=True)

    a: str
    b: str
    kind: list[str]
    score: float
    evidence: dict[str, float | int | bool | str]


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

_FIGURE = re.compile(r"^(?P<stem>.+?)(?:%\d+)?(?:\.[A-Za-z]{3,4})?$")


def source_figure(file_name: str) -> str:
    """The page/figure part of a file name: `2020.02.25.20021568-p23-108%3.png` -> `...-p23-108`."""
    name = Path(file_name).name
    if "%" in name:
        return name.split("%", 1)[0]
    return Path(name).stem


def read_metadata(metadata_dir: Path) -> dict[str, tuple[str | None, str | None]]:
    """`CT_COVID/x.png` -> (patient id, normalized DOI), from the sheets' key columns (`core.dataset`)."""
    return {
        r.image: (f"{label_of_class(r.class_dir)}:{r.patient_id}" if r.patient_id else None, doi_lib.normalize(r.doi) if r.doi else None)
        for r in read_key_rows(metadata_dir)
        if r.image
    }


# --- classification (pure) ------------------------------------------------------------------


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
    return kinds


def _group_clusters(images: dict[str, ImageInfo], attr: str, kind: str, ctype: str) -> list[Cluster]:
    groups: dict[str, list[str]] = defaultdict(list)
    for rel, info in images.items():
        key = getattr(info, attr)
        if key and info.split:
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


def _verify_task(args: tuple[Fingerprint, Fingerprint, str, str, tuple[float, bool]] | tuple[Fingerprint, Fingerprint, str, str, tuple[float, bool], Window]) -> Verdict:
    fa, fb, pa, pb, quick = args[:5]
    window = args[5] if len(args) > 5 else None
    return verify_pair(fa, fb, lambda: open_image(Path(pa)), lambda: open_image(Path(pb)), quick, window)


# A crop's whole view against the sub-windows of the other side's view (`hashing.SUBVIEWS`): the
# candidates that the whole-view search misses once a copy is cropped by more than ~5% per side.
_CropOption = tuple[bool, bool, int, int]  # (crop is the left image, mirrored, window index, distance)


def _crop_candidates(
    lfp: list[Fingerprint | None], lidx: list[int], rfp: list[Fingerprint | None], ridx: list[int], self_join: bool, threshold: int
) -> dict[tuple[int, int], list[_CropOption]]:
    """(left index, right index) -> every (orientation, mirror, window) whose pHashes are close."""
    k = len(SUBVIEWS)

    def arrays(fps: list[Fingerprint | None], idx: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        full = np.array([fps[n].phash for n in idx], dtype=np.uint64)  # type: ignore[union-attr]
        mirr = np.array([fps[n].phash_m for n in idx], dtype=np.uint64)  # type: ignore[union-attr]
        subs = np.array([fps[n].sub_phash for n in idx], dtype=np.uint64).reshape(len(idx) * k)  # type: ignore[union-attr]
        return full, mirr, subs

    lf, lm, ls = arrays(lfp, lidx)
    rf, rm, rs = (lf, lm, ls) if self_join else arrays(rfp, ridx)
    out: dict[tuple[int, int], list[_CropOption]] = defaultdict(list)
    sides = [(True, lf, lm, rs)] if self_join else [(True, lf, lm, rs), (False, rf, rm, ls)]
    for crop_left, full, mirr, subs in sides:
        for mirrored, q in ((False, full), (True, mirr)):
            qi, dj, dist = pairs_within(q, threshold, subs)
            for c, s, d in zip(qi.tolist(), dj.tolist(), dist.tolist()):
                other, w = divmod(s, k)
                if crop_left:
                    i, j = lidx[c], (lidx if self_join else ridx)[other]
                else:
                    i, j = lidx[other], ridx[c]
                if self_join and i == j:
                    continue
                crop_is_left = crop_left
                if self_join and i > j:
                    i, j, crop_is_left = j, i, False
                out[(i, j)].append((crop_is_left, mirrored, w, int(d)))
    return out


def _best_crop_options(
    pairs: list[tuple[Fingerprint, Fingerprint]], options: list[list[_CropOption]]
) -> list[tuple[float, bool, bool, Window]]:
    """Per pair, the option whose window correlates best with the crop: (score, crop is the first
    image, mirrored, window on the possibly mirrored full view)."""
    crops, fulls, windows, flips, owner, sides = [], [], [], [], [], []
    for n, ((a, b), opts) in enumerate(zip(pairs, options)):
        for crop_left, mirrored, w, _ in opts:
            sides.append(crop_left)
            crops.append(a if crop_left else b)
            fulls.append(b if crop_left else a)
            windows.append(mirror_window(SUBVIEWS[w]) if mirrored else SUBVIEWS[w])
            flips.append(mirrored)
            owner.append(n)
    # a looser check on halved thumbnails first; the few options that pass it are scored in full
    scores = window_scores(crops, fulls, windows, flips, THUMB // 2)
    # (an option that fails it keeps its loose score: below QUICK_MIN, it cannot be chosen over
    # one that passes both)
    near = np.nonzero(scores >= QUICK_MIN)[0]
    if len(near):
        pick = near.tolist()
        scores[near] = window_scores([crops[k] for k in pick], [fulls[k] for k in pick], [windows[k] for k in pick], [flips[k] for k in pick])
    best: list[tuple[float, bool, bool, Window]] = [(-2.0, True, False, SUBVIEWS[0])] * len(pairs)
    for k, n in enumerate(owner):
        if scores[k] > best[n][0]:
            best[n] = (float(scores[k]), sides[k], flips[k], windows[k])
    return best


def _fp(f: Fingerprint | None) -> Fingerprint:
    assert f is not None  # pairs are only formed between images that were fingerprinted
    return f


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


def _find_pairs(
    left: list[HashOutcome],
    right: list[HashOutcome] | None,
    cache: HashCache | None,
    threshold: int,
    workers: Executor,
    progress: StepProgress | None = None,
) -> list[tuple[int, int, Verdict | None, str | None, int]]:
    """(i, j, verdict, exact kind, hash distance) for every verified pair; j indexes `right` if given."""
    lfp = [o.fingerprint for o in left]
    rfp = lfp if right is None else [o.fingerprint for o in right]
    lidx = [k for k, f in enumerate(lfp) if f is not None]
    ridx = lidx if right is None else [k for k, f in enumerate(rfp) if f is not None]
    if not lidx or not ridx:
        return []
    lh = np.array([lfp[k].phash for k in lidx], dtype=np.uint64)  # type: ignore[union-attr]
    lm = np.array([lfp[k].phash_m for k in lidx], dtype=np.uint64)  # type: ignore[union-attr]
    rh = None if right is None else np.array([rfp[k].phash for k in ridx], dtype=np.uint64)  # type: ignore[union-attr]
    ci, cj, cd = pairs_within_any(lh, lm, threshold, rh)
    cands: dict[tuple[int, int], int] = {(lidx[i], ridx[j]): int(d) for i, j, d in zip(ci, cj, cd)}
    rout = left if right is None else right
    out: list[tuple[int, int, Verdict | None, str | None, int]] = []
    to_verify: list[tuple[int, int, int]] = []
    for (i, j), d in sorted(cands.items()):
        if left[i].sha256 == rout[j].sha256:
            out.append((i, j, None, "exact-bytes", d))
        elif d == 0 and _same_picture_fingerprint(lfp[i], rfp[j]) and _same_pixels(left[i].path, rout[j].path):  # type: ignore[arg-type]
            out.append((i, j, None, "exact-pixels", d))
        else:
            to_verify.append((i, j, d))
    keys = [HashCache.pair_key(left[i].sha256, rout[j].sha256) for i, j, _ in to_verify]
    known = cache.get_verdicts(keys) if cache else {}
    pending = [(t, k) for t, k in zip(to_verify, keys) if k not in known]
    fresh: list[tuple[str, dict[str, Any]]] = []
    if pending:
        # most hash neighbours are other scans: drop them on the thumbnails before any pixel work
        pi = np.array([i for (i, _, _), _ in pending])
        pj = np.array([j for (_, j, _), _ in pending])
        quick, flipped = quick_scores(lfp, rfp, pi, pj)  # type: ignore[arg-type]
        survivors = []
        for (t, key), q, m in zip(pending, quick, flipped):
            if q < QUICK_MIN:
                known[key] = {"duplicate": False, "score": round(float(q), 4), "mirrored": bool(m), "evidence": {"thumb_ncc": round(float(q), 4)}}
                fresh.append((key, known[key]))
            else:
                survivors.append((t, key, (float(q), bool(m))))
        tasks = [(_fp(lfp[i]), _fp(rfp[j]), str(left[i].path), str(rout[j].path), q) for (i, j, _), _, q in survivors]
        # their cost varies 20-fold: the likeliest duplicates (highest thumbnail score) go first,
        # since they are the ones that get decoded and aligned at full size
        order = sorted(range(len(tasks)), key=lambda k: -tasks[k][4][0])
        mapped = workers.map(_verify_task, [tasks[k] for k in order], min_parallel=8)
        done = dict(zip(order, counted(mapped, len(tasks), "verifying", progress)))
        verdicts = [done[k] for k in range(len(tasks))]
        for (_, key, _), v in zip(survivors, verdicts):
            known[key] = {"duplicate": v.duplicate, "score": v.score, "mirrored": v.mirrored, "evidence": v.evidence}
            fresh.append((key, known[key]))
    if cache and fresh:
        cache.put_verdicts(fresh)
    for (i, j, d), key in zip(to_verify, keys):
        stored = known[key]
        if stored["duplicate"]:
            out.append((i, j, Verdict(True, stored["score"], stored["mirrored"], stored["evidence"]), None, d))
    out += _find_crops(left, rout, lfp, lidx, rfp, ridx, right is None, {(i, j) for i, j, *_ in out}, cache, threshold, workers, progress)
    return sorted(out, key=lambda t: (t[0], t[1]))


def _find_crops(
    left: list[HashOutcome],
    rout: list[HashOutcome],
    lfp: list[Fingerprint | None],
    lidx: list[int],
    rfp: list[Fingerprint | None],
    ridx: list[int],
    self_join: bool,
    found: set[tuple[int, int]],
    cache: HashCache | None,
    threshold: int,
    workers: Executor,
    progress: StepProgress | None = None,
) -> list[tuple[int, int, Verdict | None, str | None, int]]:
    """The pairs where one image is a crop of the other, verified with the alignment seeded at the window."""
    cands = {ij: opts for ij, opts in _crop_candidates(lfp, lidx, rfp, ridx, self_join, threshold).items() if ij not in found}
    if not cands:
        return []
    order = sorted(cands)
    keys = [HashCache.pair_key(left[i].sha256, rout[j].sha256) + ":crop" for i, j in order]
    known = cache.get_verdicts(keys) if cache else {}
    fresh: list[tuple[str, dict[str, Any]]] = []
    tasks, task_keys = [], []
    todo = [(i, j, key) for (i, j), key in zip(order, keys) if key not in known]
    best = _best_crop_options([(_fp(lfp[i]), _fp(rfp[j])) for i, j, _ in todo], [cands[(i, j)] for i, j, _ in todo])
    for (i, j, key), (q, crop_left, mirrored, window) in zip(todo, best):
        a, b = _fp(lfp[i]), _fp(rfp[j])
        if q < QUICK_MIN:
            known[key] = {"duplicate": False, "score": round(q, 4), "mirrored": mirrored, "evidence": {"thumb_ncc": round(q, 4)}}
            fresh.append((key, known[key]))
            continue
        pa, pb = str(left[i].path), str(rout[j].path)
        tasks.append((a, b, pa, pb, (q, mirrored), window) if crop_left else (b, a, pb, pa, (q, mirrored), window))
        task_keys.append(key)
    verdicts = list(counted(workers.map(_verify_task, tasks, min_parallel=8), len(tasks), "verifying crops", progress))
    for key, v in zip(task_keys, verdicts):
        known[key] = {"duplicate": v.duplicate, "score": v.score, "mirrored": v.mirrored, "evidence": v.evidence}
        fresh.append((key, known[key]))
    if cache and fresh:
        cache.put_verdicts(fresh)
    out: list[tuple[int, int, Verdict | None, str | None, int]] = []
    for (i, j), key in zip(order, keys):
        stored = known[key]
        if stored["duplicate"]:
            d = min(o[3] for o in cands[(i, j)])
            out.append((i, j, Verdict(True, stored["score"], stored["mirrored"], stored["evidence"]), None, d))
    return out


def _unreadable(outcomes: Sequence[HashOutcome], rel: Callable[[Path], str]) -> list[Finding]:
    return [
        error("image.unreadable", f"cannot hash image: {o.error}", file=rel(o.path), hint="re-export or remove the file")
        for o in outcomes
        if o.fingerprint is None
    ]


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


def _pair_model(a: str, b: str, kinds: list[str], verdict: Verdict | None, exact: str | None, distance: int) -> Pair:
    if exact:
        evidence: dict[str, float | int | bool | str] = {"match": exact, "phash_distance": distance}
        score = 1.0
    else:
        assert verdict is not None
        evidence = {"match": "verified", "phash_distance": distance, **verdict.evidence}
        score = verdict.score
    x, y = sorted((a, b))
    return Pair(a=x, b=y, kind=kinds, score=score, evidence=evidence)


def _image_infos(data_root: Path, splits_dir: Path | None, metadata_dir: Path | None) -> tuple[dict[str, Path], dict[str, ImageInfo]]:
    by_class = list_images(data_root)
    splits = split_of(splits_dir, list(by_class))
    meta = read_metadata(metadata_dir) if metadata_dir is not None and metadata_dir.is_dir() else {}
    paths: dict[str, Path] = {}
    infos: dict[str, ImageInfo] = {}
    for class_dir, files in by_class.items():
        for p in files:
            rel = f"{class_dir}/{p.name}"
            patient, d = meta.get(rel, (None, None))
            if d is None:
                pre = doi_lib.preprint_from_filename(p.name)
                d = pre.doi if pre else None
            fig = source_figure(p.name)
            paths[rel] = p
            infos[rel] = ImageInfo(
                path=rel,
                label=label_of_class(class_dir),
                split=splits.get(rel),
                patient=patient,
                doi=d,
                source=f"{d or class_dir}|{fig}",
            )
    return paths, infos


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
    paths, infos = _image_infos(data_root, splits_dir, metadata_dir)
    rels = sorted(paths)
    cache = open_hash_cache(cache_path)
    try:
        workers = open_executor(jobs, scheduler)
    except BaseException:
        cache.close()
        raise
    try:
        if against is None:
            outcomes = hash_files([paths[r] for r in rels], cache, jobs, for_step(progress, "hashing"), workers)
            found = _find_pairs(outcomes, None, cache, threshold, workers, progress)
            findings = _unreadable(outcomes, lambda p: str(p.relative_to(data_root / IMAGES_DIR)))
            pairs = []
            for i, j, v, exact, d in found:
                a, b = infos[rels[i]], infos[rels[j]]
                pairs.append(_pair_model(a.path, b.path, classify(a, b, exact), v, exact, d))
            n_images = len(rels)
            all_infos = infos
        else:
            new_paths, new_infos = _against_infos(against)
            new_rels = sorted(new_paths)
            all_outcomes = hash_files([new_paths[r] for r in new_rels] + [paths[r] for r in rels], cache, jobs, for_step(progress, "hashing"), workers)
            new_out, old_out = all_outcomes[: len(new_rels)], all_outcomes[len(new_rels) :]
            findings = _unreadable(new_out, lambda p: "new:" + {v: k for k, v in new_paths.items()}.get(p, str(p))) + _unreadable(
                old_out, lambda p: str(p.relative_to(data_root / IMAGES_DIR))
            )
            pairs = []
            for i, j, v, exact, d in _find_pairs(new_out, old_out, cache, threshold, workers, progress):
                a = new_infos[new_rels[i]].model_copy(update={"path": "new:" + new_rels[i]})
                b = infos[rels[j]]
                kinds = [k for k in classify(a, b, exact) if k not in ("unsplit", "duplicate")]
                pairs.append(_pair_model(a.path, b.path, ["contribution-duplicate", *kinds], v, exact, d))
            for i, j, v, exact, d in _find_pairs(new_out, None, cache, threshold, workers, progress):
                a = new_infos[new_rels[i]].model_copy(update={"path": "new:" + new_rels[i]})
                b = new_infos[new_rels[j]].model_copy(update={"path": "new:" + new_rels[j]})
                pairs.append(_pair_model(a.path, b.path, ["duplicate", *([exact] if exact else [])] + (["label-conflict"] if a.label != b.label else []), v, exact, d))
            n_images = len(rels) + len(new_rels)
            all_infos = {**infos, **{"new:" + r: i.model_copy(update={"path": "new:" + r}) for r, i in new_infos.items()}}
    finally:
        workers.close()
        cache.close()
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
        stats={"images": n_images, "phash_threshold": threshold},
    )


def _against_infos(against: Mapping[str, tuple[Path, str | None]]) -> tuple[dict[str, Path], dict[str, ImageInfo]]:
    """The images to compare with the dataset; an image whose class is not declared has no label to conflict with."""
    paths = {rel: path for rel, (path, _) in against.items()}
    infos = {rel: ImageInfo(path=rel, label=label_of_class(c) if c else "") for rel, (_, c) in against.items()}
    return paths, infos


def _duplicate_clusters(pairs: list[Pair], infos: dict[str, ImageInfo]) -> list[Cluster]:
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
    cache = open_hash_cache(cache_path)
    try:
        workers = open_executor(jobs, scheduler)
    except BaseException:
        cache.close()
        raise
    try:
        outcomes = hash_files(new_list + old_paths, cache, jobs, workers=workers)
        new_out, old_out = outcomes[: len(new_list)], outcomes[len(new_list) :]
        matches: dict[Path, list[Match]] = {p: [] for p in new_list}
        for i, j, v, exact, d in _find_pairs(new_out, old_out, cache, threshold, workers):
            pair = _pair_model(str(new_list[i]), rels[j], [], v, exact, d)
            matches[new_list[i]].append(Match(rels[j], pair.score, pair.evidence))
        within = []
        for i, j, v, exact, d in _find_pairs(new_out, None, cache, threshold, workers):
            within.append(_pair_model(str(new_list[i]), str(new_list[j]), ["duplicate", *([exact] if exact else [])], v, exact, d))
    finally:
        workers.close()
        cache.close()
    findings = _unreadable(new_out, str) + _unreadable(old_out, lambda p: str(p.relative_to(data_root / IMAGES_DIR)))
    findings += cache_findings(cache)
    return ContributionCheck(matches=matches, within=within, findings=findings)
