#!/usr/bin/env python3
"""Check the judged text-search queries against LesaNet's 500 hand-labelled phrases.

A phrase is relevant to a query when its hand-labelled `expanded_terms` contain every
concept of the query (compared case-insensitively). The script fails (exit 1) when:

- the header or a row is malformed, a kind is unknown, or a query is repeated;
- a concept is not the exact `term` of a row of the ontology CSV;
- a query has no relevant phrase;
- fewer than 72 queries, or fewer than 10 of one kind;
- a note does not support its kind: a synonym query must name `"word" = synonym of "term"`
  with the word in that term's synonyms column; an abbreviation query must name `"ABBR" =`
  with ABBR in data/lesanet/abbreviations.tsv or an ontology synonym; a compound query must
  name `"x" = "y"` where x and y differ only in spaces and hyphens; a misspelling query must
  name `"typo" for "word"` with the word at least five letters long, the typo in the query
  and the word not;
- a row of abbreviations.tsv whose source says "LesaNet ontology synonym" is not one.

Python 3 standard library only. Run from the repository root:

    python3 data/text-benchmark/check_queries.py [--verbose] [--phrases PATH]
"""
import argparse
import csv
import json
import re
import statistics
import sys
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KINDS = ["plain", "synonym", "abbreviation", "compound", "misspelling", "multi", "natural"]
MIN_QUERIES = 72
MIN_PER_KIND = 10

errors = []


def fail(msg):
    errors.append(msg)


def load_ontology(path):
    terms = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            syns = [s.strip() for s in row["synonyms"].split(" | ") if s.strip()]
            terms[row["term"]] = syns
    return terms


def load_abbreviations(path, terms):
    abbrevs = {}
    with open(path, newline="", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines or lines[0] != "abbreviation\texpansion\tsource":
        fail(f"{path}: header must be 'abbreviation<TAB>expansion<TAB>source'")
        return abbrevs
    all_syns = {s.lower(): t for t, ss in terms.items() for s in ss}
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != 3 or not all(c.strip() for c in cells):
            fail(f"{path}:{n}: needs 3 non-empty tab-separated cells")
            continue
        abbr, expansion, source = cells
        if abbr.lower() in abbrevs:
            fail(f"{path}:{n}: {abbr!r} repeated")
        abbrevs[abbr.lower()] = expansion
        if source.startswith("LesaNet ontology synonym"):
            m = re.search(r'of the term "([^"]+)"', source)
            term = m.group(1) if m else all_syns.get(abbr.lower())
            if term not in terms or abbr.lower() not in {s.lower() for s in terms[term]}:
                fail(f"{path}:{n}: {abbr!r} is not an ontology synonym of {term!r}")
        if "http" in source or "registry" in source.lower():
            fail(f"{path}:{n}: the source must name a standard or usage, not a URL")
    if not 40 <= len(abbrevs) <= 80:
        fail(f"{path}: {len(abbrevs)} abbreviations; 40 to 80 wanted")
    return abbrevs


def squash(s):
    return re.sub(r"[\s-]+", "", s.lower())


def check_note(n, kind, query, note, terms, abbrevs):
    q = query.lower()
    qwords = re.findall(r"[a-z0-9-]+", q)
    if not note.strip():
        fail(f"queries.tsv:{n}: empty note")
        return
    if kind == "synonym":
        pairs = re.findall(r'"([^"]+)" = synonym of "([^"]+)"', note)
        if not pairs:
            fail(f'queries.tsv:{n}: synonym note must say "word" = synonym of "term"')
        for word, term in pairs:
            if term not in terms:
                fail(f"queries.tsv:{n}: {term!r} is not an ontology term")
            elif word.lower() not in {s.lower() for s in terms[term]}:
                fail(f"queries.tsv:{n}: {word!r} is not in the synonyms of {term!r}")
            if word.lower() not in q:
                fail(f"queries.tsv:{n}: synonym {word!r} is not in the query")
    elif kind == "abbreviation":
        found = re.findall(r'"([^"]+)" =', note)
        if not found:
            fail(f'queries.tsv:{n}: abbreviation note must say "ABBR" = ...')
        all_syns = {s.lower() for ss in terms.values() for s in ss}
        for abbr in found:
            if abbr.lower() not in abbrevs and abbr.lower() not in all_syns:
                fail(f"queries.tsv:{n}: {abbr!r} is neither in abbreviations.tsv nor an ontology synonym")
            if not re.search(r"(^|[^A-Za-z])" + re.escape(abbr) + r"($|[^A-Za-z])", query):
                fail(f"queries.tsv:{n}: abbreviation {abbr!r} is not in the query as written")
    elif kind == "compound":
        pairs = re.findall(r'"([^"]+)" = "([^"]+)"', note)
        if not pairs:
            fail(f'queries.tsv:{n}: compound note must say "as typed" = "as written"')
        for typed, written in pairs:
            if typed.lower() not in q:
                fail(f"queries.tsv:{n}: {typed!r} is not in the query")
            if squash(typed) != squash(written) or typed.lower() == written.lower():
                fail(f"queries.tsv:{n}: {typed!r} and {written!r} must differ only in spaces or hyphens")
    elif kind == "misspelling":
        pairs = re.findall(r'"([^"]+)" for "([^"]+)"', note)
        if not pairs:
            fail(f'queries.tsv:{n}: misspelling note must say "typo" for "word"')
        for typo, word in pairs:
            if len(word) < 5:
                fail(f"queries.tsv:{n}: {word!r} is shorter than five letters")
            if typo.lower() not in qwords or word.lower() in qwords:
                fail(f"queries.tsv:{n}: the query must hold {typo!r} and not {word!r}")
            if typo.lower() == word.lower():
                fail(f"queries.tsv:{n}: {typo!r} is not a misspelling")
    elif kind == "natural":
        if len(qwords) < 3:
            fail(f"queries.tsv:{n}: a natural query is a plain-language phrase of 3 words or more")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", default=ROOT / "data/text-benchmark/queries.tsv")
    ap.add_argument("--ontology", default=ROOT / "data/lesanet/lesion_ontology_181022.csv")
    ap.add_argument("--phrases", default=ROOT / "data/lesanet/hand_labeled_test_set.json")
    ap.add_argument("--abbreviations", default=ROOT / "data/lesanet/abbreviations.tsv")
    ap.add_argument("--verbose", action="store_true", help="print every query with its relevant count")
    args = ap.parse_args()

    terms = load_ontology(args.ontology)
    abbrevs = load_abbreviations(args.abbreviations, terms)
    with open(args.phrases, encoding="utf-8") as f:
        phrases = json.load(f)
    if len(phrases) != 500:
        fail(f"{args.phrases}: {len(phrases)} phrases, 500 expected")
    labels = [{t.lower() for t in p["expanded_terms"]} for p in phrases]

    with open(args.queries, newline="", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines or lines[0] != "kind\tquery\tconcepts\tnote":
        fail("queries.tsv: header must be 'kind<TAB>query<TAB>concepts<TAB>note'")
        lines = lines[:1]
    per_kind = OrderedDict((k, []) for k in KINDS)
    seen = set()
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != 4:
            fail(f"queries.tsv:{n}: {len(cells)} cells, 4 expected")
            continue
        kind, query, concepts, note = cells
        if kind not in per_kind:
            fail(f"queries.tsv:{n}: unknown kind {kind!r}")
            continue
        if query.lower() in seen:
            fail(f"queries.tsv:{n}: query {query!r} repeated")
        seen.add(query.lower())
        cs = [c.strip() for c in concepts.split(" | ")]
        if not cs or any(not c for c in cs):
            fail(f"queries.tsv:{n}: empty concept in {concepts!r}")
            continue
        for c in cs:
            if c not in terms:
                near = [t for t in terms if t.lower() == c.lower()]
                hint = f" (the CSV writes {near[0]!r})" if near else ""
                fail(f"queries.tsv:{n}: concept {c!r} is not an ontology term{hint}")
        check_note(n, kind, query, note, terms, abbrevs)
        want = [c.lower() for c in cs]
        relevant = [i for i, lab in enumerate(labels) if all(c in lab for c in want)]
        if not relevant:
            fail(f"queries.tsv:{n}: {query!r} ({concepts}) has no relevant phrase")
        per_kind[kind].append((query, concepts, len(relevant)))
        if args.verbose:
            print(f"{kind:13} {len(relevant):4}  {query}  [{concepts}]")

    total = sum(len(v) for v in per_kind.values())
    if total < MIN_QUERIES:
        fail(f"{total} queries, at least {MIN_QUERIES} wanted")
    print(f"{'kind':13} {'queries':>7} {'min':>5} {'median':>7} {'max':>5}   relevant phrases per query")
    allcounts = []
    for kind, qs in per_kind.items():
        if len(qs) < MIN_PER_KIND:
            fail(f"kind {kind}: {len(qs)} queries, at least {MIN_PER_KIND} wanted")
        counts = [c for _, _, c in qs]
        allcounts += counts
        if counts:
            print(f"{kind:13} {len(qs):7} {min(counts):5} {statistics.median(counts):7g} {max(counts):5}")
    if allcounts:
        print(f"{'all':13} {total:7} {min(allcounts):5} {statistics.median(allcounts):7g} {max(allcounts):5}")
        print(f"queries with 1 relevant: {sum(c == 1 for c in allcounts)}, 2-10: "
              f"{sum(2 <= c <= 10 for c in allcounts)}, 11-49: {sum(11 <= c <= 49 for c in allcounts)}, "
              f"50+: {sum(c >= 50 for c in allcounts)}")
    if errors:
        print(f"\nFAILED: {len(errors)} problem(s)", file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
