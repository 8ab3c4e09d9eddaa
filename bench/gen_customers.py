#!/usr/bin/env python3
"""Generate a customer CSV for connect-provision benchmarks, tests and samples.

    gen_customers.py ROWS [--out FILE] [--seed N] [--invalid-every N]
                          [--duplicate-every N] [--id-prefix P] [--no-phone]

Rows are realistic: mixed-case names with accents, apostrophes and hyphens,
US phone numbers in the common written forms (fictional 555-01xx lines),
and a few locales. Every --invalid-every'th row breaks one validation rule
(cycling through them) and every --duplicate-every'th row repeats an earlier
user_id. Deterministic for a given seed; standard library only.
"""
import argparse
import csv
import random
import sys

FIRST = ["john", "Mary", "José", "Zoë", "Li", "Aaliyah", "Mohammed", "Olga", "Chloé", "Ian",
         "Priya", "Kwame", "Sofía", "Björn", "Amélie", "Noah", "Emma", "Liam", "Ava", "Mateo",
         "Hana", "Yusuf", "Grace", "Diego", "Ngozi", "Ana-María", "Seán", "Mei", "Ravi", "Fatima"]
LAST = ["smith", "O'Neil", "García", "Nguyen", "Müller", "Kowalski", "Okafor", "Johnson",
        "Lee", "Brown", "Dubois", "Rossi", "Smith-Jones", "Haddad", "Ivanova", "Tanaka",
        "Fernández", "Walsh", "Patel", "", "Andersen", "da Silva", "MacDonald", "Novak"]
AREAS = ["212", "415", "312", "617", "206", "303", "512", "404", "305", "702", "646", "818"]
LOCALES = ["en-US", "en-US", "en-US", "es-US", "fr-CA", "en-CA", "", "", "EN-us"]
PHONE_FORMS = ["({a}) 555-{l}", "{a}-555-{l}", "{a}.555.{l}", "+1 {a} 555 {l}", "1{a}555{l}",
               "+1{a}555{l}", "{a}555{l}", ""]
INVALID = [
    ("first_name", ""),                 # blank first name
    ("first_name", "Ann/Marie"),        # forbidden character
    ("last_name", "Smith<script>"),     # forbidden character
    ("phone_number", "555-0100"),       # too short for US
    ("phone_number", "call me"),        # not a number
    ("locale", "english"),              # not a language tag
    ("locale", "en_US"),                # underscore
    ("user_id", "   "),                 # blank user id
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", type=int)
    ap.add_argument("--out", default="-")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--invalid-every", type=int, default=0)
    ap.add_argument("--duplicate-every", type=int, default=0)
    ap.add_argument("--id-prefix", default="cust")
    ap.add_argument("--no-phone", action="store_true")
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    out = sys.stdout if a.out == "-" else open(a.out, "w", newline="", encoding="utf-8")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["user_id", "first_name", "last_name", "phone_number", "locale"])
    bad = 0
    for i in range(1, a.rows + 1):
        uid = f"{a.id_prefix}{i:08d}"
        if a.duplicate_every and i % a.duplicate_every == 0 and i > 1:
            uid = f"{a.id_prefix}{rnd.randint(1, i - 1):08d}"
        phone = "" if a.no_phone else rnd.choice(PHONE_FORMS).format(
            a=rnd.choice(AREAS), l=f"01{rnd.randint(0, 99):02d}")
        row = {"user_id": uid, "first_name": rnd.choice(FIRST), "last_name": rnd.choice(LAST),
               "phone_number": phone, "locale": rnd.choice(LOCALES)}
        if a.invalid_every and i % a.invalid_every == 0:
            field, value = INVALID[bad % len(INVALID)]
            row[field] = value
            bad += 1
        w.writerow([row["user_id"], row["first_name"], row["last_name"], row["phone_number"], row["locale"]])
    out.flush()


if __name__ == "__main__":
    main()
