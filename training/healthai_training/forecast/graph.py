"""The region graph that travels with a forecaster: region ids in column order + CSR adjacency.

Serialised as ``graph.json`` next to the ONNX model: ``region_ids``, ``indptr``, ``indices``,
``weights`` (raw adjacency weights, self-loops included) and ``normalization`` (``"sym"``: the
model aggregates with D^-1/2 A D^-1/2, as Cola-GNN does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from healthai_training.errors import TrainingInputError


@dataclass(frozen=True)
class RegionGraph:
    region_ids: tuple[str, ...]
    indptr: np.ndarray  # int64 [N + 1]
    indices: np.ndarray  # int64 [E]
    weights: np.ndarray  # float32 [E]
    normalization: str = "sym"
    region_names: tuple[str, ...] = ()  # display names in column order (optional)

    @property
    def n_nodes(self) -> int:
        return len(self.region_ids)

    @property
    def n_edges(self) -> int:
        return int(self.indices.shape[0])

    def to_scipy(self) -> sp.csr_matrix:
        n = self.n_nodes
        return sp.csr_matrix((self.weights, self.indices, self.indptr), shape=(n, n))

    @classmethod
    def from_adjacency(
        cls,
        adjacency: np.ndarray | sp.spmatrix,
        region_ids: list[str] | tuple[str, ...] | None = None,
        *,
        normalization: str = "sym",
        add_self_loops: bool = True,
    ) -> RegionGraph:
        """Build from a dense or scipy adjacency; symmetric normalisation requires a symmetric matrix."""
        if normalization not in ("sym", "none"):
            raise TrainingInputError(
                f"normalization must be 'sym' or 'none', got {normalization!r}", field="normalization"
            )
        mat = sp.csr_matrix(adjacency, dtype=np.float64)
        if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
            raise TrainingInputError(f"adjacency must be square, got shape {mat.shape}", field="adjacency")
        if mat.nnz and (not np.all(np.isfinite(mat.data)) or mat.data.min() < 0):
            raise TrainingInputError("adjacency must hold finite weights >= 0", field="adjacency")
        if normalization == "sym" and mat.nnz and abs(mat - mat.T).max() > 1e-9:
            raise TrainingInputError(
                "adjacency must be symmetric for symmetric normalisation", field="adjacency"
            )
        n = mat.shape[0]
        if add_self_loops:
            diag = mat.diagonal()
            mat = (mat + sp.diags(np.where(diag > 0, 0.0, 1.0))).tocsr()
        mat.sort_indices()
        ids = tuple(region_ids) if region_ids is not None else tuple(str(i) for i in range(n))
        if len(ids) != n or len(set(ids)) != n:
            raise TrainingInputError(f"need {n} distinct region ids, got {len(ids)}", field="region_ids")
        return cls(
            region_ids=ids,
            indptr=mat.indptr.astype(np.int64),
            indices=mat.indices.astype(np.int64),
            weights=mat.data.astype(np.float32),
            normalization=normalization,
        )

    def to_json(self) -> dict[str, object]:
        names = {"region_names": list(self.region_names)} if self.region_names else {}
        return {
            "region_ids": list(self.region_ids),
            **names,
            "normalization": self.normalization,
            "n_nodes": self.n_nodes,
            "n_edges": self.n_edges,
            "indptr": self.indptr.tolist(),
            "indices": self.indices.tolist(),
            "weights": self.weights.tolist(),
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: Path) -> RegionGraph:
        raw = json.loads(Path(path).read_text())
        return cls(
            region_ids=tuple(raw["region_ids"]),
            indptr=np.asarray(raw["indptr"], np.int64),
            indices=np.asarray(raw["indices"], np.int64),
            weights=np.asarray(raw["weights"], np.float32),
            normalization=raw["normalization"],
            region_names=tuple(raw.get("region_names", ())),
        )
