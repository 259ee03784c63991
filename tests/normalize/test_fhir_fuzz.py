"""Property tests on the FHIR path: arbitrary JSON in the fields we read never crashes the normalizer,
every entry gets exactly one outcome, and rejected entries leave no rows."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.records import Status
from tests.normalize.fhir_builders import bp_panel, bundle, condition, encounter, observation, patient

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        ["2020-01-01", "2020-01-01T00:00:00Z", "male", "final", "8480-6", "urn:uuid:x", "Patient/1"]
    ),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                ["reference", "code", "coding", "system", "value", "unit", "start", "end", "state"]
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)
_TEMPLATES = {
    "Patient": patient(),
    "Encounter": encounter(),
    "Condition": condition("http://hl7.org/fhir/sid/icd-10-cm", "E11.9"),
    "Observation": observation("8480-6", 120, "mm[Hg]"),
    "Panel": bp_panel("85354-9", 120, 80),
}
_FIELDS = [
    "id",
    "gender",
    "birthDate",
    "deceasedDateTime",
    "deceasedBoolean",
    "address",
    "identifier",
    "status",
    "class",
    "subject",
    "encounter",
    "period",
    "code",
    "clinicalStatus",
    "onsetDateTime",
    "onsetPeriod",
    "recordedDate",
    "effectiveDateTime",
    "effectivePeriod",
    "valueQuantity",
    "valueCodeableConcept",
    "valueInteger",
    "component",
    "category",
    "contained",
    "resourceType",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(sorted(_TEMPLATES)), st.sampled_from(_FIELDS), _JSON), max_size=6
    ),
)
def test_arbitrary_field_values_never_crash(ctx, edits) -> None:
    resources = [json.loads(json.dumps(t)) for t in _TEMPLATES.values()]
    names = list(_TEMPLATES)
    for name, field, value in edits:
        resources[names.index(name)][field] = value
    doc = bundle(*[r for r in resources if isinstance(r.get("resourceType"), str)])
    doc["entry"] += [{"resource": r} for r in resources if not isinstance(r.get("resourceType"), str)]
    batch = normalize_fhir(json.dumps(doc), ctx=ctx, source="fuzz")
    assert [o.index for o in batch.outcomes] == list(range(len(doc["entry"])))
    kept = {o.index for o in batch.outcomes if o.status is not Status.REJECTED}
    assert all(o.issues for o in batch.outcomes if o.status is not Status.ACCEPTED)
    assert batch.tables["patient"].num_rows <= 1
    if 0 not in kept:
        assert batch.tables["patient"].num_rows == 0
