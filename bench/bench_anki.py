"""Time Anki note regeneration, deck writing and safe file writes at growing sizes.

Run: ``python3 bench/bench_anki.py``. Prints a Markdown table; the per-item
column shows whether the cost grows linearly (it should stay flat). The deck
is also written with genanki's own ``Package.write_to_file`` (an SQLite file on
disk, then a zip), measured in the same run as the baseline for
``apkg_bytes`` (an in-memory SQLite database, serialized and zipped).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from derive.deck.apkg import apkg_bytes
from derive.deck.cards import Card
from derive.files.writes import write_files
from derive.vault.regions import cards_region, merge_note, region


def cards(n: int, variant: str = "") -> list[Card]:
    return [
        Card(f"bench/card-{i}", f"Card {i}: what is $q_{{{i}}}$?{variant}", f"$2^{{{i}}} q_0$")
        for i in range(n)
    ]


def note(n: int, variant: str = "") -> str:
    return "# Bench\n\n" + region("summary", "Text.\n") + "\n# anki\n\n" + cards_region(
        cards(n, variant)
    )


def synced(n: int) -> str:
    text = note(n)
    return "My notes.\n\n" + text.replace("END\n", "<!--ID: 1700000000000-->\nEND\n")


def genanki_file(deck: list[Card], folder: str) -> bytes:
    """The baseline: genanki's Package.write_to_file with a fixed timestamp."""
    import genanki

    from derive.deck.apkg import MODEL_ID, TIMESTAMP, to_html

    model = genanki.Model(MODEL_ID, "derive basic", fields=[{"name": "Front"}, {"name": "Back"}],
                          templates=[{"name": "Card 1", "qfmt": "{{Front}}", "afmt": "{{Back}}"}])
    package = genanki.Deck(1 << 30, "derive")
    for card in deck:
        package.add_note(genanki.Note(model=model, fields=[to_html(card.front), to_html(card.back)],
                                      guid=genanki.guid_for(card.key)))
    path = Path(folder) / "baseline.apkg"
    genanki.Package(package).write_to_file(path, timestamp=TIMESTAMP)
    return path.read_bytes()


def best(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rows = []
    for n in (10, 100, 1000):
        existing, same, changed = synced(n), note(n), note(n, " (v2)")
        deck = cards(n)
        with tempfile.TemporaryDirectory() as tmp:
            files = {f"n{i}.md": f"note {i}\n" for i in range(n)}
            write_files(Path(tmp), files)
            t_files = best(lambda files=files, tmp=tmp: write_files(Path(tmp), files), 3)
            t_genanki = best(lambda d=deck, tmp=tmp: genanki_file(d, tmp), 3)
        measured = {
            "merge, unchanged": best(lambda e=existing, s=same: merge_note(e, s)),
            "merge, all cards changed": best(lambda e=existing, c=changed: merge_note(e, c)),
            "apkg_bytes": best(lambda d=deck: apkg_bytes(d), 3),
            "genanki write_to_file (baseline)": t_genanki,
            "write_files, all unchanged": t_files,
        }
        for what, seconds in measured.items():
            rows.append((what, n, seconds))
    print("| operation | cards / files | time (ms) | per item (µs) |")
    print("| --- | ---: | ---: | ---: |")
    for what, n, seconds in sorted(rows, key=lambda row: (row[0], row[1])):
        print(f"| {what} | {n} | {seconds * 1e3:.2f} | {seconds / n * 1e6:.1f} |")
    times = {(what, n): seconds for what, n, seconds in rows}
    print()
    print("| cards | genanki write_to_file / apkg_bytes |")
    print("| ---: | ---: |")
    for n in (10, 100, 1000):
        ratio = times["genanki write_to_file (baseline)", n] / times["apkg_bytes", n]
        print(f"| {n} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
