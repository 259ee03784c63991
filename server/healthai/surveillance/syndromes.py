"""Syndrome definitions: which diagnosis codes count as a case.

Influenza-like illness (``ili``) — a condition counts when either

- its ICD-10-CM code (sent, or mapped from SNOMED CT by the operator's map) is in
  **J09** (influenza due to identified zoonotic or pandemic influenza virus),
  **J10** (influenza due to other identified influenza virus) or
  **J11** (influenza due to unidentified influenza virus), any subcode: the influenza categories of
  the ICD-10-CM block "Influenza and pneumonia" (J09-J18; the pneumonia codes J12-J18 are not
  counted); or
- its SNOMED CT code is one of: 6142004 Influenza (disorder); 95891005 Influenza-like illness
  (finding); 442438000 Influenza caused by Influenza A virus; 442696006 Influenza caused by
  Influenza A virus subtype H1N1; 24662006 Influenza caused by Influenza B virus; 719590007
  Influenza caused by seasonal influenza virus; 772810003 Influenza caused by Influenza A virus
  subtype H3N2; 772828001 Influenza caused by Influenza A virus subtype H5N1.

Lab-confirmed influenza (``flu_lab``) — an Observation counts when its LOINC code is an influenza A or
B test (RNA by NAA or antigen by rapid immunoassay, in respiratory, upper respiratory or nasopharyngeal
specimens: ``FLU_TESTS``, the single-pathogen influenza codes of CDC ReportStream's routing filter),
its status is final, amended or corrected, and its coded value is a positive result (``POSITIVE``:
SNOMED CT 260373001 Detected, 10828004 Positive, 52101004 Present, under the SNOMED CT system; LOINC
answers LA11882-0 Detected, LA6576-8 Positive, under the LOINC system — each system by its URI, OID or a
near miss of them, :func:`healthai.normalize.codes.system_name`; the same code under another system, a
laboratory's local one, is no positive result). It is dated by its effective time. Kept apart from
``ili``: a series must not change meaning the day a laboratory starts reporting.

COVID-19 (``covid``) — ICD-10-CM **U07.1** (COVID-19) or **J12.82** (pneumonia due to coronavirus
disease 2019), or SNOMED CT 840539006 (disease caused by SARS-CoV-2, the code Synthea writes).
Suspected COVID-19 (SNOMED CT 840544004) and post-COVID conditions (U09.9) are not cases.

Lab-confirmed COVID-19 (``covid_lab``) — a positive SARS-CoV-2 RNA (NAA) or antigen test, by the rules
of ``flu_lab``: ``COVID_TESTS`` (94309-2, 94500-6, 94759-8, 94845-5 RNA in unspecified, respiratory,
nasopharyngeal and saliva specimens; 94533-7, 94534-5 the N and RdRp genes; 94531-1 the respiratory RNA
panel, which Synthea reports with a coded result; 94558-4, 95209-3, 97097-0 antigen by rapid
immunoassay).

RSV (``rsv``) — ICD-10-CM **B97.4** (RSV as the cause of a disease classified elsewhere), **J12.1** (RSV
pneumonia), **J20.5** (acute bronchitis due to RSV), **J21.0** (acute bronchiolitis due to RSV), or
SNOMED CT 55735004 (RSV infection). Lab-confirmed RSV (``rsv_lab``): a positive RSV RNA test (92131-2
respiratory, 85479-4 upper respiratory specimen, NAA).

Symptom-only definitions (fever plus cough or sore throat) need chief-complaint text, which the
ingest path drops for privacy; they are out of scope.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Syndrome:
    name: str
    description: str
    icd10_prefixes: tuple[str, ...]  # dotted ICD-10-CM categories/prefixes, upper case
    snomed_codes: frozenset[str]
    lab_loincs: frozenset[str] = frozenset()  # tests whose positive result is a case

    def matches(self, icd10_code: str | None, snomed_code: str | None) -> bool:
        if icd10_code and icd10_code.upper().startswith(self.icd10_prefixes):
            return True
        return bool(snomed_code) and snomed_code in self.snomed_codes


ILI = Syndrome(
    name="ili",
    description="influenza-like illness: ICD-10-CM J09-J11 or the listed SNOMED CT influenza concepts",
    icd10_prefixes=("J09", "J10", "J11"),
    snomed_codes=frozenset({"6142004", "95891005", "442438000", "442696006", "24662006", "719590007",
                            "772810003", "772828001"}),
)

FLU_TESTS = frozenset({
    "92142-9", "92141-1",  # influenza A / B RNA, respiratory specimen, NAA with probe detection
    "85477-8", "85478-6",  # influenza A / B RNA, upper respiratory specimen, NAA
    "76078-5", "76080-1",  # influenza A / B RNA, nasopharynx, NAA
    "80382-5", "80383-3",  # influenza A / B antigen, upper respiratory specimen, rapid immunoassay
})
POSITIVE_SNOMED = frozenset({"260373001", "10828004", "52101004"})  # Detected, Positive, Present
POSITIVE_LOINC = frozenset({"LA11882-0", "LA6576-8"})  # LOINC answers Detected, Positive
POSITIVE = POSITIVE_SNOMED | POSITIVE_LOINC
RESULT_STATUS = frozenset({"final", "amended", "corrected"})


def _lab(name: str, description: str, tests: frozenset[str]) -> Syndrome:
    """A syndrome of laboratory results only: a positive coded result of one of ``tests`` is a case."""
    return Syndrome(name=name, description=description, icd10_prefixes=(), snomed_codes=frozenset(),
                    lab_loincs=tests)


FLU_LAB = _lab("flu_lab", "lab-confirmed influenza: a positive influenza A or B RNA or antigen test",
               FLU_TESTS)

COVID = Syndrome(
    name="covid",
    description="COVID-19: ICD-10-CM U07.1, J12.82 or SNOMED CT 840539006",
    icd10_prefixes=("U07.1", "J12.82"),
    snomed_codes=frozenset({"840539006"}),
)
COVID_TESTS = frozenset({
    "94309-2", "94500-6", "94759-8", "94845-5",  # SARS-CoV-2 RNA: unspecified, respiratory, NP, saliva
    "94533-7", "94534-5",  # N gene, RdRp gene, respiratory specimen
    "94531-1",  # SARS-CoV-2 RNA panel, respiratory specimen (Synthea codes its result)
    "94558-4", "95209-3", "97097-0",  # antigen, rapid immunoassay
})
COVID_LAB = _lab("covid_lab", "lab-confirmed COVID-19: a positive SARS-CoV-2 RNA or antigen test",
                 COVID_TESTS)
RSV = Syndrome(
    name="rsv",
    description="RSV: ICD-10-CM B97.4, J12.1, J20.5, J21.0 or SNOMED CT 55735004",
    icd10_prefixes=("B97.4", "J12.1", "J20.5", "J21.0"),
    snomed_codes=frozenset({"55735004"}),
)
RSV_LAB = _lab("rsv_lab", "lab-confirmed RSV: a positive RSV RNA test", frozenset({"92131-2", "85479-4"}))

SYNDROMES: dict[str, Syndrome] = {s.name: s for s in (ILI, FLU_LAB, COVID, COVID_LAB, RSV, RSV_LAB)}
