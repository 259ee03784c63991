"""Real ids for the Japan-Prefectures ILI columns (``../shared/data/epi/japan_prefectures``).

The source does not document its column order. It is recovered from the adjacency file: the 47×47
0/1 matrix is isomorphic to the real land borders between prefectures (86 borders; Hokkaido and
Okinawa have none), and the isomorphism is unique up to three symmetries the borders cannot tell
apart: Hokkaido ↔ Okinawa (both isolated), Kagawa ↔ Kōchi (both border exactly Tokushima and Ehime)
and Tokushima ↔ Ehime (both border the other three Shikoku prefectures). Those three are resolved
by size: the column with the larger mean weekly count is the more populous prefecture (Hokkaido
5.2 M vs Okinawa 1.5 M; Kagawa 0.95 M vs Kōchi 0.69 M; Ehime 1.3 M vs Tokushima 0.72 M; the column
means are 1389 vs 600, 303 vs 248 and 383 vs 192). ``tests/training/test_japan_ids.py`` checks the
borders edge by edge against an independent list.
"""

from __future__ import annotations

# JIS X 0401 / ISO 3166-2:JP number of each column, columns 0..46.
JAPAN_COLUMN_JIS = (
    32, 19, 14, 39, 22, 38, 9, 43, 12, 23, 1, 42, 29, 25, 4, 28, 10, 26, 13, 47, 3, 17, 6, 37,
    40, 45, 2, 21, 24, 20, 16, 44, 34, 15, 18, 8, 35, 11, 41, 30, 27, 33, 5, 7, 46, 36, 31,
)  # fmt: skip
PREFECTURE_NAMES = {
    1: "Hokkaido", 2: "Aomori", 3: "Iwate", 4: "Miyagi", 5: "Akita", 6: "Yamagata", 7: "Fukushima",
    8: "Ibaraki", 9: "Tochigi", 10: "Gunma", 11: "Saitama", 12: "Chiba", 13: "Tokyo", 14: "Kanagawa",
    15: "Niigata", 16: "Toyama", 17: "Ishikawa", 18: "Fukui", 19: "Yamanashi", 20: "Nagano", 21: "Gifu",
    22: "Shizuoka", 23: "Aichi", 24: "Mie", 25: "Shiga", 26: "Kyoto", 27: "Osaka", 28: "Hyogo",
    29: "Nara", 30: "Wakayama", 31: "Tottori", 32: "Shimane", 33: "Okayama", 34: "Hiroshima",
    35: "Yamaguchi", 36: "Tokushima", 37: "Kagawa", 38: "Ehime", 39: "Kochi", 40: "Fukuoka", 41: "Saga",
    42: "Nagasaki", 43: "Kumamoto", 44: "Oita", 45: "Miyazaki", 46: "Kagoshima", 47: "Okinawa",
}  # fmt: skip
JAPAN_COLUMN_ISO = tuple(f"JP-{n:02d}" for n in JAPAN_COLUMN_JIS)
JAPAN_COLUMN_NAMES = tuple(PREFECTURE_NAMES[n] for n in JAPAN_COLUMN_JIS)
