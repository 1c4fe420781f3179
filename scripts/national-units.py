#!/usr/bin/env python3
"""Writes a unit list of national size, in the shape of the 1 July 2025
reform, for measuring the pipeline with it (docs/BENCHMARKS.md): 63 former
provinces with 705 districts and 10,035 communes, valid until 2025-06-30, and
the 34 provinces and 3,321 communes they became, valid from 2025-07-01. Each
former commune merges whole into one new commune (groups of about three, as
most did); the first of each group passes its code on. Names and codes are
synthetic (the real list is the Statistics Office's, see docs/UNITS.md).

    python3 scripts/national-units.py var/units/national.csv
"""
import csv
import random
import sys

OLD_PROVINCES, OLD_DISTRICTS, OLD_COMMUNES = 63, 705, 10_035
NEW_PROVINCES, NEW_COMMUNES = 34, 3_321
END, START = "2025-06-30", "2025-07-01"


def main(path):
    rng = random.Random(2025)
    rows = []
    # New provinces: synthetic codes T01..T34.
    new_provinces = [f"T{p:02d}" for p in range(1, NEW_PROVINCES + 1)]
    rows.append(["VN", "Việt Nam", "country", "", "", "", "", ""])
    for p in new_provinces:
        rows.append([p, f"Tỉnh mới {p}", "province", "VN", START, "", "", ""])
    old_provinces = [f"{p:02d}" for p in range(1, OLD_PROVINCES + 1)]
    province_successor = {p: new_provinces[i * NEW_PROVINCES // OLD_PROVINCES] for i, p in enumerate(old_provinces)}
    for p in old_provinces:
        rows.append([p, f"Tỉnh cũ {p}", "province", "VN", "", END, province_successor[p], ""])
    districts = []
    for d in range(OLD_DISTRICTS):
        code = f"{d + 1:03d}"
        parent = old_provinces[d * OLD_PROVINCES // OLD_DISTRICTS]
        districts.append(code)
        rows.append([code, f"Huyện cũ {code}", "district", parent, "", END, "", ""])
    # Former communes, in groups that merge into one new commune each.
    old_codes = [f"{c + 1:05d}" for c in range(OLD_COMMUNES)]
    bounds = sorted(rng.sample(range(1, OLD_COMMUNES), NEW_COMMUNES - 1))
    groups, lo = [], 0
    for hi in bounds + [OLD_COMMUNES]:
        groups.append(old_codes[lo:hi])
        lo = hi
    old_rows, new_rows = [], []
    for g, members in enumerate(groups):
        new_code = members[0]
        district_index = int(members[0]) * OLD_DISTRICTS // (OLD_COMMUNES + 1)
        old_parent = districts[district_index]
        old_province = old_provinces[district_index * OLD_PROVINCES // OLD_DISTRICTS]
        new_parent = province_successor[old_province]
        kind = "ward" if g % 4 == 0 else "commune"
        new_rows.append([new_code, f"Xã mới {new_code}", kind, new_parent, START, "", "", ""])
        for m in members:
            # A former commune's district must cover it: keep it in the first
            # member's district (the synthetic districts are contiguous).
            old_rows.append([m, f"Xã cũ {m}", "commune", old_parent, "", END, new_code, ""])
    rows.extend(old_rows)
    rows.extend(new_rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["code", "name", "kind", "parent", "valid_from", "valid_to", "successors", "history_to"])
        w.writerows(rows)
    print(f"{path}: {len(rows)} units ({OLD_COMMUNES} former communes, {NEW_COMMUNES} communes, "
          f"{OLD_PROVINCES} + {NEW_PROVINCES} provinces, {OLD_DISTRICTS} districts)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "var/units/national.csv")
