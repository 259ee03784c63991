"""Normalization: clinical records in (FHIR R4 JSON, flat/Arrow tables) → coded, pseudonymized rows.

One library used by the ingest service *and* by training (one definition of every feature).

Entry points
------------
- ``context.NormalizeContext.create(key=... | key_file=..., snomed_map_nlm=... | omop_concept=...,
  omop_relationship=..., reference_date=None, strict_fhir=False)`` — build once at start-up
  (loads the ICD-10-CM code set, ~0.2 s, and the map if given). Thread-safe to share.
- ``fhir.normalize_fhir(payload: bytes | str | dict | list, *, ctx, source) -> NormalizedBatch`` —
  Bundle / single resource / JSON array. Bad top level → ``healthai.errors.InvalidInput``.
  Selective validation by default (``fhir_patient``, ``fhir_condition``, ``fhir_observation``);
  ``strict_fhir`` adds full ``fhir.resources`` R4B validation (``fhir_strict``).
- ``flat.normalize_table(kind, table: pa.Table, *, ctx, source) -> NormalizedBatch`` — typed flat
  records, vectorized (columns per kind: ``flat.INPUT_COLUMNS`` / ``flat.REQUIRED_COLUMNS``).
  Missing required column → ``InvalidInput`` naming it. A null ``unit`` means the canonical unit.
  ``flat.normalize_tables(tables, *, ctx, source)`` — the kinds of one request, patients first: a row
  without a place of its own takes its patient's from the same request.

Results (``records``)
---------------------
``NormalizedBatch(outcomes, tables)``: one ``RecordOutcome(index, resource_type, source_id, status,
issues)`` per input record, in input order; ``tables[kind]`` (kind ∈ ``records.KINDS``: patient,
encounter, condition, observation) in ``records.SCHEMAS[kind]``. ``Status``: ACCEPTED,
ACCEPTED_WITH_WARNINGS, REJECTED (a rejected record has no row). ``Issue(code, message, field_path,
severity)`` with ``code`` from ``records.IssueCode``. Store dedup key: ``(source, record_key)``.
``resource_id``/``patient_id``/``encounter_id``/``source_id`` are keyed pseudonyms, never raw ids.
Field paths: ``entry[12].resource.valueQuantity.unit`` (Bundle), ``[3].status`` (JSON array),
``resource.status`` (single resource), ``[7].unit`` (flat row 7, column unit). Messages never carry
identifiers, names or birth dates: they quote an input value only through ``redact`` (codes of a
strict syntax, known units, enumerated codes, numbers); JSON keys in paths must be FHIR element names.

Building blocks
---------------
- ``codes``: ICD-10-CM code set + ``canonical_icd10``, ICD-9-CM ``canonical_icd9``, LOINC
  ``loinc_valid``, system URIs, ``SnomedIcd10Map.load_nlm`` / ``.load_omop`` (from ``maps``).
- ``units``: ``convert(loinc, value, unit)`` to the code's canonical UCUM unit, ``ucum`` spellings,
  possible ranges (``VALUE_IMPOSSIBLE``).
- ``redact``: may a value be quoted in a message (``describe``, ``echoable``, ``field_key``); the
  FHIR element names it allows in paths are in ``fhir_elements``.
- ``identity``: ``Pseudonymizer`` (HMAC-SHA-256), ``region_code`` (ISO 3166-2), date generalization.
- ``features``: age, age risk, SBP trend, BMI, latest labs, utilisation, ``patient_features``
  (one patient, the Risk RPC); ``features_batch.features_frame`` (many patients, vectorized);
  ``charlson``: Quan 2005 ICD-10 / ICD-9-CM groups and the index; ``diag_groups``: Strack 2014
  ICD-9 groups.
"""
