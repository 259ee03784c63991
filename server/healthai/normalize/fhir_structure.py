"""The element tree of the FHIR R4B types we normalize, for UNKNOWN_ELEMENT warnings.

``STRUCTURE[type]`` maps each JSON key of the type to the type of its value when that is a complex
type we walk into (None for primitives and for ``Extension`` / contained resources / ``Narrative``,
which are open-ended and not walked). Generated once from the ``fhir.resources`` 8.x R4B models
(``tests/normalize/test_data_quality.py`` regenerates it and fails on drift); static because
importing those models takes seconds.
"""

from __future__ import annotations

_RAW: dict[str, str] = {
    "Address": (
        "_city _country _district _line _postalCode _state _text _type _use city country district "
        "extension:Extension id line period:Period postalCode state text type use "
    ),
    "Age": (
        "_code _comparator _system _unit _value code comparator extension:Extension id system "
        "unit value "
    ),
    "Annotation": (
        "_authorString _text _time authorReference:Reference authorString extension:Extension id "
        "text time "
    ),
    "Attachment": (
        "_contentType _creation _data _hash _language _size _title _url contentType creation data "
        "extension:Extension hash id language size title url "
    ),
    "CodeableConcept": (
        "_text coding:Coding extension:Extension id text "
    ),
    "Coding": (
        "_code _display _system _userSelected _version code display extension:Extension id system "
        "userSelected version "
    ),
    "Condition": (
        "_abatementDateTime _abatementString _implicitRules _language _onsetDateTime _onsetString "
        "_recordedDate abatementAge:Age abatementDateTime abatementPeriod:Period "
        "abatementRange:Range abatementString asserter:Reference bodySite:CodeableConcept "
        "category:CodeableConcept clinicalStatus:CodeableConcept code:CodeableConcept "
        "contained:Resource encounter:Reference evidence:ConditionEvidence extension:Extension id "
        "identifier:Identifier implicitRules language meta:Meta modifierExtension:Extension "
        "note:Annotation onsetAge:Age onsetDateTime onsetPeriod:Period onsetRange:Range "
        "onsetString recordedDate recorder:Reference severity:CodeableConcept "
        "stage:ConditionStage subject:Reference text:Narrative verificationStatus:CodeableConcept "
    ),
    "ConditionEvidence": (
        "code:CodeableConcept detail:Reference extension:Extension id modifierExtension:Extension "
    ),
    "ConditionStage": (
        "assessment:Reference extension:Extension id modifierExtension:Extension "
        "summary:CodeableConcept type:CodeableConcept "
    ),
    "ContactPoint": (
        "_rank _system _use _value extension:Extension id period:Period rank system use value "
    ),
    "Duration": (
        "_code _comparator _system _unit _value code comparator extension:Extension id system "
        "unit value "
    ),
    "Encounter": (
        "_implicitRules _language _status account:Reference appointment:Reference "
        "basedOn:Reference class:Coding classHistory:EncounterClassHistory contained:Resource "
        "diagnosis:EncounterDiagnosis episodeOfCare:Reference extension:Extension "
        "hospitalization:EncounterHospitalization id identifier:Identifier implicitRules language "
        "length:Duration location:EncounterLocation meta:Meta modifierExtension:Extension "
        "partOf:Reference participant:EncounterParticipant period:Period priority:CodeableConcept "
        "reasonCode:CodeableConcept reasonReference:Reference serviceProvider:Reference "
        "serviceType:CodeableConcept status statusHistory:EncounterStatusHistory "
        "subject:Reference text:Narrative type:CodeableConcept "
    ),
    "EncounterClassHistory": (
        "class:Coding extension:Extension id modifierExtension:Extension period:Period "
    ),
    "EncounterDiagnosis": (
        "_rank condition:Reference extension:Extension id modifierExtension:Extension rank "
        "use:CodeableConcept "
    ),
    "EncounterHospitalization": (
        "admitSource:CodeableConcept destination:Reference dietPreference:CodeableConcept "
        "dischargeDisposition:CodeableConcept extension:Extension id modifierExtension:Extension "
        "origin:Reference preAdmissionIdentifier:Identifier reAdmission:CodeableConcept "
        "specialArrangement:CodeableConcept specialCourtesy:CodeableConcept "
    ),
    "EncounterLocation": (
        "_status extension:Extension id location:Reference modifierExtension:Extension "
        "period:Period physicalType:CodeableConcept status "
    ),
    "EncounterParticipant": (
        "extension:Extension id individual:Reference modifierExtension:Extension period:Period "
        "type:CodeableConcept "
    ),
    "EncounterStatusHistory": (
        "_status extension:Extension id modifierExtension:Extension period:Period status "
    ),
    "HumanName": (
        "_family _given _prefix _suffix _text _use extension:Extension family given id "
        "period:Period prefix suffix text use "
    ),
    "Identifier": (
        "_system _use _value assigner:Reference extension:Extension id period:Period system "
        "type:CodeableConcept use value "
    ),
    "Meta": (
        "_lastUpdated _profile _source _versionId extension:Extension id lastUpdated profile "
        "security:Coding source tag:Coding versionId "
    ),
    "Observation": (
        "_effectiveDateTime _effectiveInstant _implicitRules _issued _language _status "
        "_valueBoolean _valueDateTime _valueInteger _valueString _valueTime basedOn:Reference "
        "bodySite:CodeableConcept category:CodeableConcept code:CodeableConcept "
        "component:ObservationComponent contained:Resource dataAbsentReason:CodeableConcept "
        "derivedFrom:Reference device:Reference effectiveDateTime effectiveInstant "
        "effectivePeriod:Period effectiveTiming:Timing encounter:Reference extension:Extension "
        "focus:Reference hasMember:Reference id identifier:Identifier implicitRules "
        "interpretation:CodeableConcept issued language meta:Meta method:CodeableConcept "
        "modifierExtension:Extension note:Annotation partOf:Reference performer:Reference "
        "referenceRange:ObservationReferenceRange specimen:Reference status subject:Reference "
        "text:Narrative valueBoolean valueCodeableConcept:CodeableConcept valueDateTime "
        "valueInteger valuePeriod:Period valueQuantity:Quantity valueRange:Range valueRatio:Ratio "
        "valueSampledData:SampledData valueString valueTime "
    ),
    "ObservationComponent": (
        "_valueBoolean _valueDateTime _valueInteger _valueString _valueTime code:CodeableConcept "
        "dataAbsentReason:CodeableConcept extension:Extension id interpretation:CodeableConcept "
        "modifierExtension:Extension referenceRange:ObservationReferenceRange valueBoolean "
        "valueCodeableConcept:CodeableConcept valueDateTime valueInteger valuePeriod:Period "
        "valueQuantity:Quantity valueRange:Range valueRatio:Ratio valueSampledData:SampledData "
        "valueString valueTime "
    ),
    "ObservationReferenceRange": (
        "_text age:Range appliesTo:CodeableConcept extension:Extension high:Quantity id "
        "low:Quantity modifierExtension:Extension text type:CodeableConcept "
    ),
    "Patient": (
        "_active _birthDate _deceasedBoolean _deceasedDateTime _gender _implicitRules _language "
        "_multipleBirthBoolean _multipleBirthInteger active address:Address birthDate "
        "communication:PatientCommunication contact:PatientContact contained:Resource "
        "deceasedBoolean deceasedDateTime extension:Extension gender "
        "generalPractitioner:Reference id identifier:Identifier implicitRules language "
        "link:PatientLink managingOrganization:Reference maritalStatus:CodeableConcept meta:Meta "
        "modifierExtension:Extension multipleBirthBoolean multipleBirthInteger name:HumanName "
        "photo:Attachment telecom:ContactPoint text:Narrative "
    ),
    "PatientCommunication": (
        "_preferred extension:Extension id language:CodeableConcept modifierExtension:Extension "
        "preferred "
    ),
    "PatientContact": (
        "_gender address:Address extension:Extension gender id modifierExtension:Extension "
        "name:HumanName organization:Reference period:Period relationship:CodeableConcept "
        "telecom:ContactPoint "
    ),
    "PatientLink": (
        "_type extension:Extension id modifierExtension:Extension other:Reference type "
    ),
    "Period": (
        "_end _start end extension:Extension id start "
    ),
    "Quantity": (
        "_code _comparator _system _unit _value code comparator extension:Extension id system "
        "unit value "
    ),
    "Range": (
        "extension:Extension high:Quantity id low:Quantity "
    ),
    "Ratio": (
        "denominator:Quantity extension:Extension id numerator:Quantity "
    ),
    "Reference": (
        "_display _reference _type display extension:Extension id identifier:Identifier reference "
        "type "
    ),
    "SampledData": (
        "_data _dimensions _factor _lowerLimit _period _upperLimit data dimensions "
        "extension:Extension factor id lowerLimit origin:Quantity period upperLimit "
    ),
    "Timing": (
        "_event code:CodeableConcept event extension:Extension id modifierExtension:Extension "
        "repeat:TimingRepeat "
    ),
    "TimingRepeat": (
        "_count _countMax _dayOfWeek _duration _durationMax _durationUnit _frequency "
        "_frequencyMax _offset _period _periodMax _periodUnit _timeOfDay _when "
        "boundsDuration:Duration boundsPeriod:Period boundsRange:Range count countMax dayOfWeek "
        "duration durationMax durationUnit extension:Extension frequency frequencyMax id offset "
        "period periodMax periodUnit timeOfDay when "
    ),
}


def _parse(spec: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in spec.split():
        name, _, child = item.partition(":")
        out[name] = child or None
    return out


STRUCTURE: dict[str, dict[str, str | None]] = {name: _parse(spec) for name, spec in _RAW.items()}
