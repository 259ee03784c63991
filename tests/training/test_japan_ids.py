"""The Japan data's columns are real prefectures (ISO 3166-2:JP): under our column → prefecture map
the shipped adjacency is exactly the real land borders between prefectures, edge for edge."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from healthai_training.epi.data import load_epi
from healthai_training.epi.japan import JAPAN_COLUMN_ISO, JAPAN_COLUMN_JIS, PREFECTURE_NAMES

# Land borders by JIS X 0401 number (independent of the map under test). Hokkaido (1) and Okinawa
# (47) have none; Shikoku (36-39) and Kyushu (40-46) border only each other.
BORDERS = {
    2: [3, 5], 3: [4, 5], 4: [5, 6, 7], 5: [6], 6: [7, 15], 7: [8, 9, 10, 15], 8: [9, 11, 12],
    9: [10, 11], 10: [11, 15, 20], 11: [12, 13, 19, 20], 12: [13], 13: [14, 19], 14: [19, 22],
    15: [16, 20], 16: [17, 20, 21], 17: [18, 21], 18: [21, 25, 26], 19: [20, 22],
    20: [21, 22, 23], 21: [23, 24, 25], 22: [23], 23: [24], 24: [25, 26, 29, 30], 25: [26],
    26: [27, 28, 29], 27: [28, 29, 30], 28: [31, 33], 29: [30], 31: [32, 33, 34], 32: [34, 35],
    33: [34], 34: [35], 36: [37, 38, 39], 37: [38], 38: [39], 40: [41, 43, 44], 41: [42],
    43: [44, 45, 46], 44: [45], 45: [46],
}  # fmt: skip


def _real_adjacency() -> np.ndarray:
    adj = np.zeros((48, 48), dtype=int)
    for a, neighbours in BORDERS.items():
        for b in neighbours:
            adj[a, b] = adj[b, a] = 1
    return adj[1:, 1:]  # index k = JIS k + 1


def test_column_order_reproduces_every_real_border(shared_data: Path) -> None:
    shipped = np.loadtxt(shared_data / "epi/japan_prefectures/japan-adj.txt", delimiter=",").astype(int)
    np.fill_diagonal(shipped, 0)
    assert sorted(JAPAN_COLUMN_JIS) == list(range(1, 48))
    real = _real_adjacency()
    jis = np.asarray(JAPAN_COLUMN_JIS) - 1
    permuted = real[np.ix_(jis, jis)]  # the real borders in the file's column order
    assert int(real.sum()) // 2 == 86
    mismatches = [
        (PREFECTURE_NAMES[JAPAN_COLUMN_JIS[i]], PREFECTURE_NAMES[JAPAN_COLUMN_JIS[j]])
        for i, j in np.argwhere(permuted != shipped)
        if i < j
    ]
    assert mismatches == []


def test_border_symmetries_are_resolved_by_size(shared_data: Path) -> None:
    """Three swaps keep every border (both isolated; Kagawa/Kochi; Tokushima/Ehime): the column with
    the larger mean count is the more populous prefecture."""
    data = load_epi("japan", data_root=shared_data)
    mean = dict(zip(data.region_ids, data.series.mean(axis=0), strict=True))
    assert mean["JP-01"] > mean["JP-47"]  # Hokkaido 5.2 M > Okinawa 1.5 M
    assert mean["JP-37"] > mean["JP-39"]  # Kagawa 0.95 M > Kochi 0.69 M
    assert mean["JP-38"] > mean["JP-36"]  # Ehime 1.3 M > Tokushima 0.72 M
    assert max(mean, key=mean.get) == "JP-13"  # Tokyo: the largest counts
    assert (
        data.region_ids == JAPAN_COLUMN_ISO and data.region_names[data.region_ids.index("JP-13")] == "Tokyo"
    )
