"""What a curator acts on: a leakage report gathered into groups, each at one severity level.

Owns the severity order of the kinds of problem (label conflict, cross-split leak, patient or
source-figure leak, duplicate within a split), what to do about each, and the grouping: one group
per duplicate cluster (all copies of one picture, with the verified pairs as evidence) and one per
patient or source figure spread over splits. Pure; imports only `pipeline`'s models.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctcurate.leakage.pipeline import LeakageReport, Pair


@dataclass(frozen=True)
class Level:
    """One severity level: its id, heading, short name, colour, the kinds it covers and what to do."""

    id: str
    title: str
    short: str
    colour: str
    kinds: tuple[str, ...]
    todo: str
    fixable: bool  # --fix-splits resolves it


LEVELS: tuple[Level, ...] = (
    Level(
        "label-conflict", "Label conflicts", "label conflicts", "#b00020", ("label-conflict",),
        "One picture is filed under both COVID and NonCOVID. A person must decide which label is right "
        "(read the source paper), then remove the wrong copy from the sheet, the class folder and the split "
        "lists. --fix-splits cannot fix this: it only moves images between splits.",
        False,
    ),
    Level(
        "cross-split", "Leaks across splits", "cross-split leaks", "#d35400",
        ("leak-train-val", "leak-train-test", "leak-val-test", "contribution-duplicate"),
        "The same picture is in two splits, so the test score measures memory. "
        "`ctcurate check-leakage --fix-splits OUT` writes split lists that keep each group in one split; "
        "a contributed copy of a dataset image should be rejected.",
        True,
    ),
    Level(
        "group-leak", "Patient and source-figure leaks", "patient/source-figure leaks", "#a07800", ("patient-leak", "source-leak"),
        "Different pictures of one patient, or cut from one figure of one paper, sit in different splits. "
        "`--fix-splits OUT` moves each patient and source figure wholly into one split.",
        True,
    ),
    Level(
        "duplicate", "Duplicates within a split", "in-split duplicates", "#546e7a", ("duplicate", "unsplit"),
        "Copies of one picture inside one split: no leak, but they weigh the picture twice in training. "
        "Remove the extra copies if you want; --fix-splits leaves them where they are.",
        False,
    ),
)

KIND_LEVEL = {k: n for n, lv in enumerate(LEVELS) for k in lv.kinds}

# Kinds that add to a group's level without setting it: what each tells the curator.
MINOR_KINDS = {
    "patient-conflict": "one picture under two patient IDs of one class: the sheet's patient ID is wrong for one copy",
    "exact-bytes": "identical files",
    "exact-pixels": "identical pixels in different files",
}


def level_of(kinds: list[str]) -> int:
    """The most severe level among `kinds` (index into LEVELS); kinds like `exact-bytes` add none."""
    return min((KIND_LEVEL[k] for k in kinds if k in KIND_LEVEL), default=len(LEVELS) - 1)


@dataclass(frozen=True)
class Group:
    """Images a curator handles together, with the pairs that prove they belong together."""

    level: int
    type: str  # duplicate | patient | source
    key: str
    kind: list[str]
    members: list[str]
    splits: dict[str, list[str]]
    pairs: list[Pair]

    @property
    def score(self) -> float:
        return max((p.score for p in self.pairs), default=0.0)


def groups_of(report: LeakageReport) -> list[Group]:
    """Every group, most severe first, then largest first, then by name."""
    out = []
    for c in report.clusters:
        members = set(c.members)
        pairs = [p for p in report.pairs if p.a in members] if c.type == "duplicate" else []
        kinds = sorted({k for p in pairs for k in p.kind} | set(c.kind), key=lambda k: (KIND_LEVEL.get(k, 9), k))
        if level_of(kinds) < KIND_LEVEL["duplicate"]:
            kinds = [k for k in kinds if k != "duplicate"]  # every cluster is one; say the worse news only
        out.append(Group(level_of(kinds), c.type, c.key, kinds, c.members, c.splits, pairs))
    return sorted(out, key=lambda g: (g.level, -len(g.members), g.key))


def count_by_level(groups: list[Group]) -> list[tuple[Level, int]]:
    return [(lv, sum(g.level == n for g in groups)) for n, lv in enumerate(LEVELS)]


def also_in(groups: list[Group], level: int) -> int:
    """Groups placed at a more severe level that also show this level's kinds (so it is not 'clean')."""
    kinds = set(LEVELS[level].kinds)
    return sum(g.level < level and bool(kinds & set(g.kind)) for g in groups)
