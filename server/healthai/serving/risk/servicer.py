"""Risk.Score: probability, risk band, Charlson index and top contributing features per patient;
Risk.Describe: the model card's features and privacy essentials (``describe.py``).

The servicer validates and converts; scoring (bands, occlusion-based top features) runs vectorized
for the whole batch on the worker thread (``risk_batch.RiskTask``); the batcher counts patients.
"""

from __future__ import annotations

import math

import grpc
import numpy as np

from healthai.errors import InvalidInput
from healthai.observability.context import note
from healthai.serving.risk.card import RiskCard
from healthai.serving.risk.charlson import charlson_indices
from healthai.serving.risk.describe import describe
from healthai.serving.risk.features import CHARLSON_INDEX, derive_features
from healthai.serving.risk.task import RiskTask
from healthai.serving.runtime.manager import LoadedVersion, ModelManager
from healthai.serving.settings import ServingSettings
from healthai.serving.wire import PACKED_FAST_MIN, packed_float32
from healthai.v1 import risk_pb2, risk_pb2_grpc

SERVICE_NAME = "healthai.v1.Risk"


# Up to this many packed values (a few patients) a Python list and math.isfinite cost less than NumPy's
# fromiter and isfinite().all() (measured in the server: ~12 µs against ~23 µs for one patient)
PACKED_LIST_MAX = 256


def _order(names: tuple[str, ...], task: RiskTask) -> np.ndarray:
    """Column permutation from the request's feature_names to the card's order (cached per layout)."""
    order = task.cached_order(names)
    if order is not None:
        return order
    card = task.card
    for i, name in enumerate(names):
        if name not in task.index:
            raise InvalidInput(f"feature_names[{i}]: unknown feature {name!r}; the model takes "
                               f"{list(card.feature_names)}", field=f"feature_names[{i}]")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InvalidInput(f"feature_names: {dup!r} given twice", field="feature_names")
    missing = [n for n in card.feature_names if n not in set(names)]
    if missing:
        raise InvalidInput(f"feature_names: missing {missing}", field="feature_names")
    order = np.array([names.index(n) for n in card.feature_names])
    task.remember_order(names, order)
    return order


def feature_matrix(request: risk_pb2.ScoreRequest, task: RiskTask, max_patients: int) -> np.ndarray:
    """[patients x F] float32 in the card's order, finite; InvalidInput naming the field otherwise.
    The card's feature domains are checked by the risk task, once per batch (``RiskTask.run``)."""
    card = task.card
    names = tuple(request.feature_names)
    order = task.cached_order(names) if names else None
    # feature_names that leave out card features: the server derives them (age_risk, primary_dx_*,
    # charlson_*) with the training code, from the given columns and `diagnoses`
    derive = bool(names) and order is None and not set(card.feature_names) <= set(names)
    if names and order is None and not derive:
        order = _order(names, task)
    f = len(names) if derive else card.n_features
    raw = request.features_raw
    packed = len(request.features)
    if raw and packed:
        raise InvalidInput("features_raw: give features or features_raw, not both", field="features_raw")
    if len(raw) % 4:
        raise InvalidInput(f"features_raw: {len(raw)} bytes is not a whole number of float32 values",
                           field="features_raw")
    count = len(raw) // 4 if raw else packed
    if count == 0:
        raise InvalidInput("features: empty; give patients x features values", field="features")
    if count % f:
        raise InvalidInput(f"features: {count} values is not a multiple of the {f} features per patient",
                           field="features")
    n = count // f
    if n > max_patients:
        raise InvalidInput(f"features: {n} patients is over the limit of {max_patients} per request",
                           field="features")
    finite = False  # True once every value is known to be finite
    if raw:
        x = np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False).reshape(n, f)
    elif count >= PACKED_FAST_MIN:
        x = packed_float32(request, "features", count).reshape(n, f)
    elif count <= PACKED_LIST_MAX:  # a few patients: Python floats checked, then one NumPy call
        values = list(request.features)
        finite = all(map(math.isfinite, values))
        x = np.array(values, np.float32).reshape(n, f)
    else:
        x = np.fromiter(request.features, dtype=np.float32, count=count).reshape(n, f)
    if derive:
        flags = card.imputation.flag_sources(tuple(card.feature_names)) if card.imputation else ()
        x = derive_features(card.feature_names, names, x, diagnoses=request.diagnoses, flags=flags)
        finite = False  # the derived columns are new values
    elif order is not None:
        x = x[:, order]
    if card.imputation is not None:
        x = card.imputation.derive_flags(x)  # a flag follows its feature's value (0 where present)
        if not finite:
            x = card.imputation.fill(x)  # NaN where the card's cohort spec allows missing: as training did
    if not finite and not np.isfinite(x).all():
        i, j = np.argwhere(~np.isfinite(x))[0]
        hint = _missing_hint(card) if np.isnan(x[i, j]) else ""
        raise InvalidInput(f"features[{i}].{card.feature_names[j]}: non-finite value {x[i, j]}{hint}",
                           field=f"features[{i}].{card.feature_names[j]}")
    return x


def _missing_hint(card: RiskCard) -> str:
    """How to send a missing value of a feature this model does not fill."""
    if card.imputation is None:
        return (" (this model fills no missing value: send the feature's baseline from its model card, and "
                "set its <name>_missing flag to 1 where the card has one)")
    filled = ", ".join(card.feature_names[c] for c in card.imputation.columns.tolist())
    return f" (this model fills a missing value only for {filled}; send any other feature's value)"


def _check_charlson(x: np.ndarray, task: RiskTask, request: risk_pb2.ScoreRequest, charlson: list[int],
                    available: list[bool]) -> None:
    """A charlson_index feature the caller sent must be the one its diagnoses give (the response reports
    the codes' index beside a probability computed from the feature). Derived ones come from the codes."""
    column = task.index.get(CHARLSON_INDEX)
    if column is None or (request.feature_names and CHARLSON_INDEX not in request.feature_names):
        return
    sent = x[:, column]
    off = np.asarray(available) & (sent != np.asarray(charlson, dtype=np.float32))
    if off.any():
        i = int(np.argmax(off))
        field = f"features[{i}].{CHARLSON_INDEX}"
        raise InvalidInput(f"{field}={float(sent[i]):g} disagrees with diagnoses[{i}], whose codes give "
                           f"{CHARLSON_INDEX}={charlson[i]}: send the patient's codes and features alike, or "
                           "leave the charlson_* features out and the server derives them from the codes",
                           field=field)


class RiskServicer(risk_pb2_grpc.RiskServicer):
    def __init__(self, manager: ModelManager, settings: ServingSettings) -> None:
        self.manager = manager
        self.settings = settings

    def _task(self, loaded: LoadedVersion) -> RiskTask:
        task = loaded.extras.get("risk")
        if task is None:
            raise InvalidInput(f"model_name: {loaded.name!r} is not a risk model", field="model_name")
        return task

    async def Describe(self, request: risk_pb2.DescribeRequest,
                       context: grpc.aio.ServicerContext) -> risk_pb2.DescribeResponse:
        if not request.model_name:
            raise InvalidInput("model_name: required (e.g. 'risk_readmission')", field="model_name")
        loaded = self.manager.resolve(request.model_name, request.model_version)
        return describe(self._task(loaded).card, loaded.card, loaded.name, loaded.version)

    async def Score(self, request: risk_pb2.ScoreRequest,
                    context: grpc.aio.ServicerContext) -> risk_pb2.ScoreResponse:
        if not request.model_name:
            raise InvalidInput("model_name: required (e.g. 'risk_readmission')", field="model_name")
        loaded = self.manager.resolve(request.model_name, request.model_version)
        task = self._task(loaded)
        card = task.card
        x = feature_matrix(request, task, self.settings.max_patients_per_request)
        n = len(x)
        note(patients=n)  # the audit line's count (never an identifier)
        if request.diagnoses and len(request.diagnoses) != n:
            raise InvalidInput(f"diagnoses: {len(request.diagnoses)} entries for {n} patients",
                               field="diagnoses")
        charlson, available = charlson_indices(request.diagnoses, n)
        if request.diagnoses:
            _check_charlson(x, task, request, charlson, available)
        k = request.top_features if request.HasField("top_features") else self.settings.default_top_features
        k = min(int(k), card.n_features)
        result = await loaded.scheduler.infer(task.request(x, k), timeout=context.time_remaining())
        response = risk_pb2.ScoreResponse(
            model_name=loaded.name, model_version=loaded.version, top_k=k,
            probability=result["probability"].tolist(),
            risk_band=names(task.band_names, result["band"]),
            charlson_index=charlson, charlson_available=available)
        if k:
            response.top_feature_name.extend(names(card.names_array, result["top_index"].reshape(-1)))
            response.top_feature_contribution.extend(result["top_contribution"].reshape(-1).tolist())
        return response


def names(table: np.ndarray, index: np.ndarray) -> list[str]:
    """``table[index]`` as a list: Python indexing for a few (one patient's bands and top features),
    one NumPy gather for many."""
    if len(index) <= 16:
        return [table[i] for i in index.tolist()]
    return table[index].tolist()  # type: ignore[no-any-return]
