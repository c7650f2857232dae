"""Rebuild train.jsonl / test.jsonl from the VADER ground-truth file (run once; the output is committed).

    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2
    tar xzf vaderSentiment-3.3.2.tar.gz
    tar xzf vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz
    python signatures/data/sentiment/build.py hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt

Keeps snippets whose mean human rating is clearly polar (|rating| >= 1.0 on the -4..+4 scale) and
at most 240 characters long, then draws a class-balanced, seeded sample: 200 + 200 for train and
150 + 150 for test, disjoint.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

MIN_ABS_RATING = 1.0
MAX_CHARS = 240
N_TRAIN, N_TEST = 200, 150  # per class
SEED = 0


def main(src: str) -> None:
    rows = []
    for line in Path(src).read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        sid, rating, text = parts[0].strip(), float(parts[1]), " ".join(parts[2].split())
        if abs(rating) >= MIN_ABS_RATING and len(text) <= MAX_CHARS and "\ufffd" not in text:
            rows.append({"id": sid, "text": text, "sentiment": "positive" if rating > 0 else "negative",
                         "rating": round(rating, 3)})
    out = Path(__file__).parent
    rng = random.Random(SEED)
    train, test = [], []
    for label in ("positive", "negative"):
        pool = [r for r in rows if r["sentiment"] == label]
        rng.shuffle(pool)
        train += pool[:N_TRAIN]
        test += pool[N_TRAIN:N_TRAIN + N_TEST]
    for name, part in (("train", train), ("test", test)):
        rng.shuffle(part)
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part),
                                           encoding="utf-8")
        print(f"{name}: {len(part)} rows")


if __name__ == "__main__":
    main(sys.argv[1])
