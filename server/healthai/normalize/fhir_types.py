"""FHIR R4 (4.0.1) resource type names, and small helpers to read FHIR JSON values."""

from __future__ import annotations

import datetime as dt
import re

R4_RESOURCE_TYPES = frozenset(
    [
        "Account",
        "ActivityDefinition",
        "AdverseEvent",
        "AllergyIntolerance",
        "Appointment",
        "AppointmentResponse",
        "AuditEvent",
        "Basic",
        "Binary",
        "BiologicallyDerivedProduct",
        "BodyStructure",
        "Bundle",
        "CapabilityStatement",
        "CarePlan",
        "CareTeam",
        "CatalogEntry",
        "ChargeItem",
        "ChargeItemDefinition",
        "Claim",
        "ClaimResponse",
        "ClinicalImpression",
        "CodeSystem",
        "Communication",
        "CommunicationRequest",
        "CompartmentDefinition",
        "Composition",
        "ConceptMap",
        "Condition",
        "Consent",
        "Contract",
        "Coverage",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "DetectedIssue",
        "Device",
        "DeviceDefinition",
        "DeviceMetric",
        "DeviceRequest",
        "DeviceUseStatement",
        "DiagnosticReport",
        "DocumentManifest",
        "DocumentReference",
        "EffectEvidenceSynthesis",
        "Encounter",
        "Endpoint",
        "EnrollmentRequest",
        "EnrollmentResponse",
        "EpisodeOfCare",
        "EventDefinition",
        "Evidence",
        "EvidenceVariable",
        "ExampleScenario",
        "ExplanationOfBenefit",
        "FamilyMemberHistory",
        "Flag",
        "Goal",
        "GraphDefinition",
        "Group",
        "GuidanceResponse",
        "HealthcareService",
        "ImagingStudy",
        "Immunization",
        "ImmunizationEvaluation",
        "ImmunizationRecommendation",
        "ImplementationGuide",
        "InsurancePlan",
        "Invoice",
        "Library",
        "Linkage",
        "List",
        "Location",
        "Measure",
        "MeasureReport",
        "Media",
        "Medication",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationKnowledge",
        "MedicationRequest",
        "MedicationStatement",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductIngredient",
        "MedicinalProductInteraction",
        "MedicinalProductManufactured",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "MessageDefinition",
        "MessageHeader",
        "MolecularSequence",
        "NamingSystem",
        "NutritionOrder",
        "Observation",
        "ObservationDefinition",
        "OperationDefinition",
        "OperationOutcome",
        "Organization",
        "OrganizationAffiliation",
        "Parameters",
        "Patient",
        "PaymentNotice",
        "PaymentReconciliation",
        "Person",
        "PlanDefinition",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
        "Provenance",
        "Questionnaire",
        "QuestionnaireResponse",
        "RelatedPerson",
        "RequestGroup",
        "ResearchDefinition",
        "ResearchElementDefinition",
        "ResearchStudy",
        "ResearchSubject",
        "RiskAssessment",
        "RiskEvidenceSynthesis",
        "Schedule",
        "SearchParameter",
        "ServiceRequest",
        "Slot",
        "Specimen",
        "SpecimenDefinition",
        "StructureDefinition",
        "StructureMap",
        "Subscription",
        "Substance",
        "SubstanceNucleicAcid",
        "SubstancePolymer",
        "SubstanceProtein",
        "SubstanceReferenceInformation",
        "SubstanceSourceMaterial",
        "SubstanceSpecification",
        "SupplyDelivery",
        "SupplyRequest",
        "Task",
        "TerminologyCapabilities",
        "TestReport",
        "TestScript",
        "ValueSet",
        "VerificationResult",
        "VisionPrescription",
    ]
)

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
# a dateTime whose seconds are 60 (R4's regex allows them: leap seconds), with any fraction
_LEAP_SECOND = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:)60(?:\.\d+)?(Z|[+-]\d{2}:\d{2})?$")


# the time zone of a date without a time: a local date, kept as its own midnight in UTC
DATE_ONLY = dt.timezone(dt.timedelta(0), "date")


def parse_datetime(text: object, *, keep_offset: bool = False) -> dt.datetime:
    """FHIR date / dateTime / instant → aware UTC datetime (partial dates → first instant).

    A leap second (``23:59:60``, valid R4) is read as ``23:59:59.999999``: the same day, in order.

    ``keep_offset``: a dateTime keeps the offset it was written in (the same instant; its local date
    is the date as written). A date without a time has the time zone ``DATE_ONLY`` (UTC midnight).
    Raises ValueError (message never echoes the value: it may be a birth date).
    """
    if not isinstance(text, str):
        raise ValueError("expected a FHIR date/dateTime string")
    if _DATE.match(text):
        parts = [int(p) for p in text.split("-")]
        parts += [1] * (3 - len(parts))
        try:
            return dt.datetime(parts[0], parts[1], parts[2], tzinfo=DATE_ONLY)
        except ValueError:
            raise ValueError("not a valid calendar date") from None
    if len(text) < 16 or text[10] != "T":
        raise ValueError("not a FHIR date/dateTime (YYYY-MM-DDThh:mm:ss+zz:zz)")
    leap = _LEAP_SECOND.match(text)
    if leap:  # R4 allows second 60 (a leap second); Python has none: kept as the last instant of :59
        text = f"{leap[1]}59.999999{leap[2] or ''}"
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not a FHIR date/dateTime (YYYY-MM-DDThh:mm:ss+zz:zz)") from None
    if value.tzinfo is None:
        raise ValueError("a dateTime with a time must carry a time zone")
    return value if keep_offset else value.astimezone(dt.UTC)


def utc_offset_minutes(value: dt.datetime | None) -> int | None:
    """The UTC offset (minutes) a parsed time was written in; None for a date without a time."""
    if value is None or value.tzinfo is DATE_ONLY:
        return None
    offset = value.utcoffset()
    return None if offset is None else int(offset.total_seconds()) // 60


def partial_date_end(text: object) -> dt.datetime | None:
    """For a date without a time (YYYY, YYYY-MM, YYYY-MM-DD): the first instant after the year, month or
    day it names (UTC), since a Period's end "includes all of that unit"; None for anything else."""
    if not isinstance(text, str) or not _DATE.match(text):
        return None
    try:
        start = parse_datetime(text)
        if len(text) == 4:
            return start.replace(year=start.year + 1)
        if len(text) == 7:
            return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        return start + dt.timedelta(days=1)
    except (ValueError, OverflowError):  # not a calendar date (reported by the parser), or year 9999
        return None


# a date without a time is a local date: up to this far from UTC either way
LOCAL_DATE_SLACK = dt.timedelta(hours=14)
