"""Taxa from a TreeOfLife-10M `catalog.csv` (or any CSV with its seven rank columns).

The catalog's header is `split, treeoflife_id, eol_content_id, eol_page_id, bioscan_part,
bioscan_filename, inat21_filename, inat21_cls_name, inat21_cls_num, kingdom, phylum, class,
order, family, genus, species, common`; `species` is the epithet, so the binomial is
`genus species`. Taxa are unique by all seven ranks (a genus name reused in two kingdoms,
a hemihomonym, gives two taxa); rows without a genus or epithet name no species and are
skipped (counted). A binomial shared by two taxa is *ambiguous*: the scraper resolves it
by rank names found on the page, or flags it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

from biobench.errors import DataError

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


@dataclasses.dataclass(frozen=True)
class Taxon:
    kingdom: str
    phylum: str
    class_: str
    order: str
    family: str
    genus: str
    species: str
    common: str = ""

    @property
    def ranks(self) -> tuple[str, ...]:
        return (self.kingdom, self.phylum, self.class_, self.order, self.family, self.genus, self.species)

    @property
    def binomial(self) -> str:
        return f"{self.genus} {self.species}"

    @property
    def key(self) -> str:
        """Stable id of the 7-rank tuple (a line's key in the scraper's output)."""
        return hashlib.sha1("|".join(self.ranks).encode()).hexdigest()[:16]

    def rank_dict(self) -> dict[str, str]:
        return dict(zip(RANKS, self.ranks))


def read_taxa(path: Path) -> tuple[list[Taxon], int]:
    """Unique taxa in file order, and how many rows were skipped for lacking a genus or epithet."""
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as err:
        raise DataError(f"Cannot read the taxa CSV {path}: {err.strerror}.") from None
    with f:
        reader = csv.DictReader(f)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [r for r in RANKS if r not in header]
        if missing:
            raise DataError(
                f"{path} lacks the rank column(s) {', '.join(missing)}; a TreeOfLife-10M catalog.csv has "
                f"{', '.join(RANKS)} (and common). Found columns: {', '.join(header) or 'none'}."
            )
        reader.fieldnames = header
        seen: dict[tuple[str, ...], Taxon] = {}
        skipped = 0
        for row in reader:
            values = [(row.get(r) or "").strip() for r in RANKS]
            if not values[5] or not values[6]:
                skipped += 1
                continue
            ranks = tuple(values)
            if ranks not in seen:
                seen[ranks] = Taxon(*values, common=(row.get("common") or "").strip())
    return list(seen.values()), skipped


def ambiguous_binomials(taxa: list[Taxon]) -> set[str]:
    """Binomials that name more than one 7-rank taxon (e.g. the same genus + epithet in two kingdoms)."""
    counts = Counter(t.binomial for t in taxa)
    return {b for b, n in counts.items() if n > 1}
