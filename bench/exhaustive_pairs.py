"""Exhaustive keypoint pass over ALL pairs of the real images: the reference list of what to find.

Slow on purpose and independent of `ctcurate.leakage`: every image is brought to one working size
(long side WORK px), SIFT keypoints (RootSIFT descriptors) are taken from it and from its mirror
image, and EVERY pair (i < j; i plain and mirrored against j) is matched by brute force: for each
descriptor of i its two nearest descriptors of j (PCA-64 projection, for speed), Lowe's ratio test.
Pairs with enough ratio matches are matched again on the full descriptors and checked with RANSAC
(similarity transform, `cv2.estimateAffinePartial2D`). Writes every pair with at least MIN_INLIERS
inliers, strongest first, as JSON; `--review` then writes, per pair, the two images aligned side by
side with zoomed crops and a difference image, to be looked at by eye.

Features are cached by file content under ~/.cache/ctcurate-bench/exhaustive/ (the data is read-only).
Usage: python bench/exhaustive_pairs.py [--out exhaustive.json] [--review DIR] [--min-inliers N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CTCURATE_DATA", REPO.parent / "shared" / "covid-ct"))
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ctcurate-bench" / "exhaustive"
WORK = 320  # working long side: a small figure and its large version meet at one scale
KEYPOINTS = 200
PCA_DIMS = 64
RATIO = 0.8
SIMILARITIES = (0.85, 0.9, 0.95)
BLOCK = 128
MIN_SIMILAR = 10  # descriptors at similarity >= 0.95 for a pair to go on to RANSAC
TOP_PARTNERS = 20
MIN_SCALE = 0.2  # a copy is at most 5x smaller or larger (in working size, after cropping)
MIN_INLIERS = 10
RANSAC_PX = 4.0

F32 = NDArray[np.float32]


def gray_work(path: Path) -> NDArray[np.uint8]:
    """The image in grey, transparency on black, resized so its long side is WORK px."""
    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    g = np.asarray(Image.alpha_composite(base, rgba).convert("L"))
    f = WORK / max(g.shape)
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(g, (round(g.shape[1] * f), round(g.shape[0] * f)), interpolation=interp))


def sift(g: NDArray[np.uint8]) -> tuple[F32, F32]:
    """Keypoint coordinates (n, 2) and RootSIFT descriptors (n, 128), n <= KEYPOINTS."""
    det = cv2.SIFT.create(nfeatures=KEYPOINTS)
    kps, desc = det.detectAndCompute(g, None)
    if desc is None or not kps:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    kps, desc = kps[:KEYPOINTS], desc[:KEYPOINTS]
    d = desc / np.maximum(desc.sum(1, keepdims=True), 1e-7)
    d = np.sqrt(d)
    return np.array([k.pt for k in kps], np.float32), d.astype(np.float32)


def features(path: Path) -> dict[str, Any]:
    """Plain and mirrored keypoints/descriptors and the working size, cached by content."""
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    cached = CACHE / f"{digest}-{WORK}-{KEYPOINTS}.npz"
    if cached.is_file():
        with np.load(cached) as z:
            return {k: z[k] for k in z.files}
    g = gray_work(path)
    xy, d = sift(g)
    mxy, md = sift(np.ascontiguousarray(g[:, ::-1]))
    out = {"xy": xy, "d": d, "mxy": mxy, "md": md, "shape": np.array(g.shape)}
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, xy=xy, d=d, mxy=mxy, md=md, shape=out["shape"])
    tmp.replace(cached)
    return out


def pca_basis(descs: list[F32]) -> F32:
    allv = np.concatenate(descs)
    mean = allv.mean(0)
    _, _, vt = np.linalg.svd(allv[:: max(1, len(allv) // 50000)] - mean, full_matrices=False)
    return np.asarray(vt[:PCA_DIMS].T, np.float32)


def projected(d: F32, basis: F32) -> F32:
    """PCA projection renormalised to unit length, so that nearest = most similar."""
    p = d @ basis
    return np.asarray(p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-7), np.float32)


def padded(descs: list[F32], basis: F32) -> F32:
    """(n_images * KEYPOINTS, PCA_DIMS); missing keypoints are zero vectors (similarity 0)."""
    out = np.zeros((len(descs), KEYPOINTS, PCA_DIMS), np.float32)
    for i, d in enumerate(descs):
        if len(d):
            out[i, : len(d)] = projected(d, basis)
    return out.reshape(-1, PCA_DIMS)


def similar_counts(feats: list[dict[str, Any]], basis: F32, progress: bool) -> NDArray[np.int16]:
    """counts[i, j, m, t]: descriptors of i (m=1: of mirrored i) whose most similar descriptor in j
    has similarity >= SIMILARITIES[t]; brute force over every pair i < j."""
    n = len(feats)
    plain = padded([f["d"] for f in feats], basis)
    counts = np.zeros((n, n, 2, len(SIMILARITIES)), np.int16)
    thresholds = np.array(SIMILARITIES, np.float32)
    t0 = time.perf_counter()
    for i, f in enumerate(feats):
        for m, key in enumerate(("d", "md")):
            if not len(f[key]) or i + 1 == n:
                continue
            q = projected(f[key], basis)
            for start in range(i + 1, n, BLOCK):
                stop = min(n, start + BLOCK)
                best = (q @ plain[start * KEYPOINTS : stop * KEYPOINTS].T).reshape(len(q), stop - start, KEYPOINTS).max(2)
                counts[i, start:stop, m, :] = (best[:, :, None] >= thresholds).sum(0)
        if progress and i % 50 == 0:
            print(f"  {i}/{n} images matched against all later ones, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return counts


def distinct_points(xy: F32) -> int:
    """Inliers at distinct places (3 px cells): SIFT puts several keypoints on one blob, and a
    degenerate model that maps a whole picture onto one spot must not count them all."""
    return len({(int(x // 3), int(y // 3)) for x, y in xy})


def ransac(fa: dict[str, Any], fb: dict[str, Any], mirrored: bool) -> dict[str, Any] | None:
    """Full-descriptor ratio matches of a (mirrored) onto b and their RANSAC similarity."""
    qa, xa = (fa["md"], fa["mxy"]) if mirrored else (fa["d"], fa["xy"])
    if len(qa) < 2 or len(fb["d"]) < 2:
        return None
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(qa, fb["d"], k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < MIN_INLIERS // 2:
        return None
    src = np.array([xa[m.queryIdx] for m in good], np.float32)
    dst = np.array([fb["xy"][m.trainIdx] for m in good], np.float32)
    model, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX, maxIters=4000, confidence=0.999)
    if model is None:
        return None
    scale = float(np.hypot(model[0, 0], model[1, 0]))
    angle = float(np.degrees(np.arctan2(model[1, 0], model[0, 0])))
    inl = distinct_points(src[mask.ravel() > 0])
    if not MIN_SCALE <= scale <= 1 / MIN_SCALE:
        return None
    return {"inliers": inl, "matches": len(good), "scale": round(scale, 3), "angle": round(angle, 2), "mirrored": mirrored, "model": model.round(4).tolist()}


def cached_counts(names: list[str], feats: list[dict[str, Any]], progress: bool) -> NDArray[np.int16]:
    key = hashlib.sha1(json.dumps([names, WORK, KEYPOINTS, PCA_DIMS, SIMILARITIES]).encode()).hexdigest()[:16]
    path = CACHE / f"counts-{key}.npy"
    if path.is_file():
        return np.asarray(np.load(path), np.int16)
    basis = pca_basis([f["d"] for f in feats] + [f["md"] for f in feats])
    counts = similar_counts(feats, basis, progress)
    np.save(path.with_suffix(".tmp.npy"), counts)
    path.with_suffix(".tmp.npy").replace(path)
    return counts


def ransac_candidates(counts: NDArray[np.int16], min_similar: int) -> NDArray[np.intp]:
    """(i, j, mirrored) rows: every pair with >= min_similar descriptors at similarity 0.95, and
    each image's TOP_PARTNERS best partners at 0.9 (a blurred or shrunk copy loses exact matches)."""
    strong = counts[:, :, :, SIMILARITIES.index(0.95)]
    keep = strong >= min_similar
    per_side = counts[:, :, :, SIMILARITIES.index(0.9)]
    loose = per_side.max(2).astype(np.int32)
    full = loose + loose.T
    np.fill_diagonal(full, -1)
    top = np.argsort(-full, axis=1)[:, :TOP_PARTNERS]
    for i, js in enumerate(top):
        for j in js:
            a, b = min(i, int(j)), max(i, int(j))
            keep[a, b, int(np.argmax(per_side[a, b]))] = True
    keep &= np.triu(np.ones(keep.shape[:2], bool), 1)[:, :, None]
    return np.argwhere(keep)


def run(min_similar: int, min_inliers: int, progress: bool = True) -> dict[str, Any]:
    root = DATA / "Images-processed"
    names = [f"{c.name}/{p.name}" for c in sorted(root.iterdir()) if c.is_dir() for p in sorted(c.iterdir()) if p.is_file()]
    t0 = time.perf_counter()
    feats = [features(root / n) for n in names]
    t_feat = time.perf_counter() - t0
    counts = cached_counts(names, feats, progress)
    t_match = time.perf_counter() - t0 - t_feat
    strong = counts[:, :, :, SIMILARITIES.index(0.95)]
    cand = ransac_candidates(counts, min_similar)
    best: dict[tuple[int, int], dict[str, Any]] = {}
    for i, j, m in cand:
        r = ransac(feats[int(i)], feats[int(j)], bool(m))
        key = (int(i), int(j))
        if r is not None and r["inliers"] >= min_inliers and r["inliers"] > best.get(key, {"inliers": -1})["inliers"]:
            best[key] = {"a": names[i], "b": names[j], "similar_descriptors": int(strong[i, j, m]), **r}
    pairs = sorted(best.values(), key=lambda p: (-p["inliers"], p["a"], p["b"]))
    stats = {
        "images": len(names),
        "pairs_scored": len(names) * (len(names) - 1) // 2,
        "ransac_candidates": len(cand),
        "features_s": round(t_feat, 1),
        "matching_s": round(t_match, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    settings = {"work_px": WORK, "keypoints": KEYPOINTS, "pca_dims": PCA_DIMS, "ratio": RATIO, "ransac_px": RANSAC_PX, "min_similar": min_similar, "min_inliers": min_inliers}
    return {"settings": settings, "stats": stats, "pairs": pairs}


# --- review images: aligned side by side, zoomed crops, difference ----------------------------


def _load_gray(path: Path) -> NDArray[np.uint8]:
    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return np.asarray(Image.alpha_composite(base, rgba).convert("L"))


def review_image(pair: dict[str, Any], out: Path) -> None:
    """a | b warped onto a | |a - b| (contrast matched), and three 3x zoomed crops of a and warped b."""
    root = DATA / "Images-processed"
    a, b = _load_gray(root / pair["a"]), _load_gray(root / pair["b"])
    fa = WORK / max(a.shape)
    fb = WORK / max(b.shape)
    ga = cv2.resize(a, (round(a.shape[1] * fa), round(a.shape[0] * fa)), interpolation=cv2.INTER_AREA if fa < 1 else cv2.INTER_CUBIC)
    gb = cv2.resize(b, (round(b.shape[1] * fb), round(b.shape[0] * fb)), interpolation=cv2.INTER_AREA if fb < 1 else cv2.INTER_CUBIC)
    if pair["mirrored"]:
        ga = np.ascontiguousarray(ga[:, ::-1])
    m = np.array(pair["model"], np.float64)
    inv = cv2.invertAffineTransform(m)
    wb = cv2.warpAffine(gb, inv, (ga.shape[1], ga.shape[0]), flags=cv2.INTER_LINEAR, borderValue=0)
    valid = cv2.warpAffine(np.full_like(gb, 255), inv, (ga.shape[1], ga.shape[0]), flags=cv2.INTER_NEAREST) > 0
    x, y = ga[valid].astype(np.float32), wb[valid].astype(np.float32)
    if len(x) > 10 and y.std() > 1:
        fit = np.polyfit(y, x, 1)
        wbm = np.clip(wb.astype(np.float32) * fit[0] + fit[1], 0, 255)
    else:
        wbm = wb.astype(np.float32)
    ncc = float(np.corrcoef(x, y)[0, 1]) if len(x) > 10 else float("nan")
    diff = np.where(valid, np.abs(ga.astype(np.float32) - wbm), 0)
    diff_img = np.clip(diff * 3, 0, 255).astype(np.uint8)
    row = np.hstack([ga, np.zeros((ga.shape[0], 4), np.uint8), wbm.astype(np.uint8), np.zeros((ga.shape[0], 4), np.uint8), diff_img])
    h, w = ga.shape
    crops = []
    for cx, cy in ((0.35, 0.4), (0.65, 0.5), (0.5, 0.7)):
        x0, y0 = int(w * cx) - 40, int(h * cy) - 40
        x0, y0 = max(0, min(w - 80, x0)), max(0, min(h - 80, y0))
        za = cv2.resize(ga[y0 : y0 + 80, x0 : x0 + 80], (240, 240), interpolation=cv2.INTER_NEAREST)
        zb = cv2.resize(wbm[y0 : y0 + 80, x0 : x0 + 80].astype(np.uint8), (240, 240), interpolation=cv2.INTER_NEAREST)
        crops.append(np.hstack([za, np.full((240, 2), 128, np.uint8), zb]))
    crow = np.hstack([np.pad(c, ((0, 0), (0, 6))) for c in crops])
    width = max(row.shape[1], crow.shape[1])
    canvas = np.vstack([np.pad(row, ((0, 6), (0, width - row.shape[1]))), np.pad(crow, ((0, 0), (0, width - crow.shape[1])))])
    canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)
    label = f"{pair['a']} vs {pair['b']}  inl {pair['inliers']} s {pair['scale']} a {pair['angle']} m {int(pair['mirrored'])} ncc {ncc:.3f}"
    canvas = np.vstack([np.zeros((18, canvas.shape[1], 3), np.uint8), canvas])
    cv2.putText(canvas, label, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
    pair["ncc_aligned"] = round(ncc, 4)
    cv2.imwrite(str(out), canvas)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("exhaustive.json"))
    ap.add_argument("--review", type=Path, default=None)
    ap.add_argument("--min-inliers", type=int, default=MIN_INLIERS)
    ap.add_argument("--min-similar", type=int, default=MIN_SIMILAR)
    ap.add_argument("--from-json", type=Path, default=None, help="review an earlier --out instead of matching again")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    if not (DATA / "Images-processed").is_dir():
        print(f"no real data at {DATA} (set CTCURATE_DATA)")
        return 1
    result = json.loads(args.from_json.read_text()) if args.from_json else run(args.min_similar, args.min_inliers)
    if args.review:
        args.review.mkdir(parents=True, exist_ok=True)
        for k, pair in enumerate(result["pairs"]):
            review_image(pair, args.review / f"{k:04d}.png")
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result["stats"]))
    print(f"{len(result['pairs'])} pairs with >= {args.min_inliers} RANSAC inliers -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
