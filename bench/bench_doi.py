"""`ctcurate doi resolve` speed: 1,000 DOIs against a local registry stand-in in under 30 s.

The stand-in (tests/fake_registry.py) answers like doi.org, Crossref and the bioRxiv/medRxiv API
after a simulated latency. Figures printed beside references measured in the same run:

- the full concurrent run (default settings: 16 workers, at most 5 requests at once to doi.org,
  1 to Crossref (its public pool: no mailto), 3 to bioRxiv) against the 30 s target;
- the same resolver with one worker on 100 DOIs, scaled to 1,000 (what a serial client costs);
- the second run, answered from the SQLite cache.

Exits 1 when the target is missed or a DOI is asked twice.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_registry import FakeRegistry

from ctcurate.doi.resolve import DoiCache, Resolver, ResolverSettings

N = 1000
TARGET_S = 30.0
LATENCY_S = 0.01


def dois(n: int, seed: int) -> list[str]:
    """Three in four are preprints (as in the COVID-CT sheet), the rest journal articles."""
    out = []
    for i in range(n):
        if i % 4 == 3:
            out.append(f"10.1016/j.bench.{seed}.{i:05d}")
        elif i % 4 == 2:
            out.append(f"10.1101/2020.03.{i % 28 + 1:02d}.{seed:02d}{i:04d}")  # bioRxiv (6 digits)
        else:
            out.append(f"10.1101/2020.03.{i % 28 + 1:02d}.2{seed:03d}{i:04d}")  # medRxiv (8 digits)
    return out


def timed_run(reg: FakeRegistry, names: list[str], cache: Path, **settings: object) -> tuple[float, int]:
    s = ResolverSettings(
        doi_url=f"{reg.base}/doi", crossref_url=f"{reg.base}/crossref", biorxiv_url=f"{reg.base}/biorxiv", **settings
    )  # type: ignore[arg-type]
    before = reg.count()
    start = time.perf_counter()
    with Resolver(s, cache=DoiCache(cache)) as resolver:
        found = resolver.resolve_many(names)
    elapsed = time.perf_counter() - start
    unresolved = [d for d, r in found.items() if r.exists is not True]
    if unresolved:
        raise SystemExit(f"not resolved: {unresolved[:5]} ({len(unresolved)} in all)")
    return elapsed, reg.count() - before


def main() -> int:
    with FakeRegistry(delay=LATENCY_S) as reg, tempfile.TemporaryDirectory() as tmp:
        names = dois(N, seed=1)
        full, asked = timed_run(reg, names, Path(tmp) / "full.sqlite")
        repeated = max(reg.server_hits.values())  # per service and server: a reverse lookup asks both
        cached, asked_again = timed_run(reg, names, Path(tmp) / "full.sqlite")
        serial_100, _ = timed_run(reg, dois(100, seed=2), Path(tmp) / "serial.sqlite", workers=1)
        serial = serial_100 * N / 100
        peaks = dict(reg.max_in_flight)

    print(f"simulated latency per answer: {LATENCY_S * 1000:.0f} ms; {asked} requests for {N} DOIs")
    print(f"concurrent run, {N} DOIs:           {full:7.2f} s   target {TARGET_S:.0f} s   ratio {full / TARGET_S:.3f}")
    print(f"serial client (1 worker), scaled:  {serial:7.2f} s   speed-up {serial / full:.1f}x")
    print(f"second run from the cache:         {cached:7.2f} s   {asked_again} requests   ratio {cached / full:.3f}")
    print(f"most requests in flight at once: {peaks} (caps: doi 5, crossref 1 without a mailto, biorxiv 3)")
    failed = False
    if full >= TARGET_S:
        print(f"MISSED: {full:.1f} s >= {TARGET_S:.0f} s")
        failed = True
    if repeated != 1 or asked_again:
        print(f"MISSED: a DOI was asked {repeated} times of one service, {asked_again} requests on the cached run")
        failed = True
    if peaks.get("crossref", 0) > 1 or peaks.get("doi", 0) > 5 or peaks.get("biorxiv", 0) > 3:
        print("MISSED: a per-service concurrency cap was exceeded")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
