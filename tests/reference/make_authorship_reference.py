#!/usr/bin/env python3
"""scikit-learn's answer for doppel eval's authorship classifier (infer/eval_text.c) on the
bundled sample export: TfidfVectorizer(analyzer="char", ngram_range=(3, 5), lowercase=False) +
LogisticRegression(solver="liblinear", C=1, tol=1e-4), persona mossy against everyone else.
Messages (trimmed, not empty, not system or bot messages) in time order: the first 1,000 train
it, the other ones are held out. Writes the texts, labels and scikit-learn's P(persona) for the
held-out ones; tests/test_eval_text.c trains doppel's classifier on the same texts and compares.

  make_authorship_reference.py --out tests/fixtures/sample-export.authorship.json
"""
import argparse, csv, json, re, sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from prep_reference import SYSTEM, instant  # noqa: E402  the same system-message rule as prep

PERSONA_ID = "829104736521048064"
BOT_ID = "155149108183695360"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", default="tests/fixtures/sample-export.csv")
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    import sklearn

    rows = []
    with open(a.export, encoding="utf-8-sig", newline="") as f:
        r = csv.reader(f)
        next(r)
        for i, row in enumerate(r):
            text = row[3].replace("\r\n", "\n").strip()
            if text and not SYSTEM.fullmatch(text) and row[0] != BOT_ID:
                rows.append((instant(row[2]), i, text, int(row[0] == PERSONA_ID)))
    rows.sort()
    train, test = rows[:a.train], rows[a.train:]
    vec = TfidfVectorizer(analyzer="char", ngram_range=(3, 5), lowercase=False)
    X = vec.fit_transform([t for _, _, t, _ in train])
    clf = LogisticRegression(solver="liblinear", C=1.0, tol=1e-4)
    clf.fit(X, [y for _, _, _, y in train])
    p = clf.predict_proba(vec.transform([t for _, _, t, _ in test]))[:, list(clf.classes_).index(1)]
    acc = sum((pi > 0.5) == bool(y) for pi, (_, _, _, y) in zip(p, test)) / len(test)
    out = {"generator": f"tests/reference/make_authorship_reference.py, scikit-learn {sklearn.__version__}",
           "vocab": len(vec.vocabulary_), "accuracy": acc,
           "train": [[t, y] for _, _, t, y in train],
           "test": [[t, y, float(pi)] for (_, _, t, y), pi in zip(test, p)]}
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"{len(train)} train, {len(test)} held out, vocab {out['vocab']}, held-out accuracy {acc:.4f}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
