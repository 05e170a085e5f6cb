"""Write a text,label CSV of Debian's fortunes (package `fortunes`): each category file is a class.

    python bench/fortunes_csv.py OUT.csv computers,food,law,love,science,sports,startrek,politics 140

Fortunes are separated by lines holding only '%'; those under 600 characters are kept, shuffled with seed 0,
and the first N of each category written. bench/bench_text.sh trains the README's text table on it.
"""
import csv
import random
import sys

FORTUNES = "/usr/share/games/fortunes"


def main(out: str, categories: str, per_class: str) -> None:
    rows = []
    for category in categories.split(","):
        with open(f"{FORTUNES}/{category}", encoding="utf-8", errors="replace") as f:
            items = [t.strip() for t in f.read().split("\n%\n") if t.strip() and len(t.strip()) < 600]
        random.Random(0).shuffle(items)
        rows += [(text, category) for text in items[:int(per_class)]]
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    print(f"{len(rows)} texts -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
