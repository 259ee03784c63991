"""A graph CSV's columns (``train forecast --graph``, ``healthai-client scenario --graph``): an edge list
takes source, target and weight and nothing else, so a misspelt weight column is refused rather than
read as an unweighted graph; a 2-3 column file that is no edge list says what an edge list's header is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from healthai.errors import InputFileError
from healthai.surveillance.graph_file import read_graph

REGIONS = ("A", "B", "C")
EDGES = [("A", "B", 3), ("B", "C", 6), ("C", "A", 9)]


def _csv(tmp_path: Path, header: str | None, *, weights: bool = True, tail: str = "") -> Path:
    path = tmp_path / "graph.csv"
    rows = [f"{a},{b}" + (f",{w}" if weights else "") + tail for a, b, w in EDGES]
    path.write_text("\n".join(([header] if header is not None else []) + rows) + "\n")
    return path


def test_the_weight_column_weighs_the_edges(tmp_path: Path) -> None:
    graph = read_graph(_csv(tmp_path, "source,target,weight"), region_ids=REGIONS)
    assert graph.adjacency[0, 1] == 3 and graph.adjacency[2, 0] == 9 and graph.report["format"] == "edge_list"
    plain = read_graph(_csv(tmp_path, "Target, Source", weights=False), region_ids=REGIONS)
    np.testing.assert_array_equal(plain.adjacency, (graph.adjacency > 0).astype(float))


def test_a_misspelt_weight_column_is_refused_by_name_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"source, target\[, weight\]; also got \['wieght'\] "
                                             r"\(is 'wieght' the weight\? name it 'weight'\)") as e:
        read_graph(_csv(tmp_path, "source,target,wieght"), region_ids=REGIONS)
    assert e.value.field == "graph"


def test_any_other_column_is_refused_but_a_trailing_comma_is_none(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"also got \['note'\]$"):
        read_graph(_csv(tmp_path, "source,target,weight,note", tail=",x"), region_ids=REGIONS)
    trailing = read_graph(_csv(tmp_path, "source,target,weight,", tail=","), region_ids=REGIONS)
    assert trailing.adjacency[0, 1] == 3


@pytest.mark.parametrize("header", [None, "from,to"])
def test_an_edge_list_without_its_header_says_which_header_it_needs(tmp_path: Path, header) -> None:
    path = _csv(tmp_path, header, weights=False)  # no header: 'A,B' is read as one, of as many ids as rows
    first = header or "A,B"
    with pytest.raises(InputFileError, match=rf"an edge list needs the header source,target\[,weight\] "
                                             rf"\(this file's first line is '{first}'\); "):
        read_graph(path, region_ids=REGIONS)


def test_a_square_adjacency_with_a_missing_row_keeps_its_message(tmp_path: Path) -> None:
    path = tmp_path / "adj.csv"
    path.write_text("A,B,C,D\n0,1,0,0\n1,0,1,0\n0,1,0,1\n")
    with pytest.raises(InputFileError, match=r"adj.csv: a square adjacency needs a header of its region ids "
                                             r"and one row per header region \(4 distinct ids\), got 3 rows"):
        read_graph(path, region_ids=("A", "B", "C", "D"))
