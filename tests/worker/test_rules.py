"""The `jobtrail-rules-1` evaluator: golden leads with exact scores (docs/evaluation.md)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from worker.evaluation.model import RULES_MODEL, DocumentInput, LeadInput
from worker.evaluation.rules import evaluate_rules, read_facts, score_lead

PAY_STUB = """ACME LOGISTICS INC - EARNINGS STATEMENT
Employee: Maria Lopez
Employer: Acme Logistics Inc
Pay frequency: Biweekly
Pay period: 03/01/2025 - 03/14/2025
Gross pay: $3,000.00    Net pay: $2,310.00
Gross pay YTD: $18,000.00
"""
LETTER = """To whom it may concern,
This letter confirms that Maria Lopez is employed by Acme Logistics Inc as a supervisor.
She has worked with us for 4 years, with an annual salary of $78,000.
"""
BANK = """First Bank - statement for March 2025
Account holder: Maria Lopez
03/07 Payroll deposit ACME LOGISTICS 3,000.00
03/15 Rent payment -1,800.00
03/21 Payroll deposit ACME LOGISTICS 3,000.00
Closing balance: 9,420.55
"""
SHORT_LETTER = """Dear landlord,
We certify that Maria Lopez works at Brightside Dental LLC as a receptionist.
She has been with us for 6 months, on a monthly salary of $6,000.00.
"""
LOW_PAY_STUB = """Employee: Maria Lopez
Company: Corner Cafe
Paid monthly
Gross pay: $4,000.00  Net pay: $3,200.00
"""
TAX_RETURN = """Form 1040 - 2024
Taxpayer: Maria Lopez
Wages, salaries, tips: $78,000
Total income: $80,000
"""


def lead(**fields: Any) -> LeadInput:
    base = {"first_name": "Maria", "last_name": "Lopez", "email": "maria@example.com"}
    return LeadInput(lead_id="lead_1", fields={**base, "monthly_rent": 1800, **fields})


def text(document_type: str, body: str) -> DocumentInput:
    return DocumentInput(
        id=f"doc_{document_type}",
        document_type=document_type,
        mime_type="text/plain",
        data=body.encode(),
        text=body,
    )


def image(document_type: str) -> DocumentInput:
    """An image the rules evaluator counts, unread; bytes differ per type (no duplicates)."""
    return DocumentInput(
        id=f"img_{document_type}",
        document_type=document_type,
        mime_type="image/jpeg",
        data=b"\xff\xd8\xff\xe0" + document_type.encode(),
        text=None,
    )


def strong_documents() -> list[DocumentInput]:
    return [
        text("pay_stub", PAY_STUB),
        text("employment_letter", LETTER),
        text("bank_statement", BANK),
        image("id_document"),
    ]


def replaced(body: str, old: str, new: str) -> str:
    assert old in body
    return body.replace(old, new)


class Golden(NamedTuple):
    name: str
    lead: LeadInput
    documents: list[DocumentInput]
    score: int
    label: str
    recommendation: str
    risk_flags: list[str]
    fraud_signals: list[str]


# Each row is a row of the golden table in docs/evaluation.md: keep them in step.
GOLDEN = [
    Golden(
        "strong",
        lead(),
        strong_documents(),
        100,
        "A",
        "approve",
        ["images_not_reviewed"],
        [],
    ),
    Golden(
        "no_employment_letter",
        lead(monthly_rent=2100),
        [text("pay_stub", PAY_STUB), text("bank_statement", BANK), image("id_document")],
        75,
        "B",
        "review",
        ["unverified_employment", "images_not_reviewed"],
        [],
    ),
    Golden(
        "short_tenure",
        lead(monthly_rent=2300),
        [text("employment_letter", SHORT_LETTER)],
        60,
        "C",
        "review",
        ["employment_duration_short", "missing_id_document"],
        [],
    ),
    Golden(
        "high_rent",
        lead(monthly_rent=3000),
        [text("pay_stub", LOW_PAY_STUB)],
        35,
        "D",
        "reject",
        ["high_rent_to_income", "unverified_employment", "missing_id_document"],
        [],
    ),
    Golden(
        "name_mismatch",
        lead(),
        [
            text("pay_stub", replaced(PAY_STUB, "Employee: Maria Lopez", "Employee: Mark Jensen")),
            *strong_documents()[1:],
        ],
        65,
        "B",
        "review",
        ["images_not_reviewed"],
        ["name_mismatch"],
    ),
    Golden(
        "income_mismatch",
        lead(),
        [
            text(
                "pay_stub",
                replaced(replaced(PAY_STUB, "Biweekly", "Monthly"), "$3,000.00", "$8,500.00"),
            ),
            text("employment_letter", LETTER),
        ],
        55,
        "C",
        "review",
        ["missing_id_document"],
        ["income_mismatch"],
    ),
    Golden(
        "no_documents",
        lead(monthly_income=6000),
        [],
        30,
        "D",
        "reject",
        [
            "missing_income_proof",
            "unverified_employment",
            "no_documents",
            "missing_id_document",
            "identity_unverified",
        ],
        [],
    ),
    Golden(
        "images_only",
        lead(monthly_income="6,000"),
        [image("pay_stub"), image("employment_letter"), image("id_document")],
        55,
        "C",
        "review",
        [
            "missing_income_proof",
            "unverified_employment",
            "images_not_reviewed",
            "identity_unverified",
        ],
        [],
    ),
    Golden(
        "duplicate_document",
        lead(),
        [
            text("pay_stub", PAY_STUB),
            text("bank_statement", PAY_STUB),
            text("employment_letter", LETTER),
        ],
        60,
        "C",
        "review",
        ["missing_id_document"],
        ["duplicate_document"],
    ),
    Golden(
        "net_exceeds_gross",
        lead(),
        [
            text("pay_stub", replaced(PAY_STUB, "$2,310.00", "$3,900.00")),
            text("employment_letter", LETTER),
            text("bank_statement", BANK),
        ],
        60,
        "C",
        "review",
        ["missing_id_document"],
        ["net_pay_exceeds_gross"],
    ),
    Golden(
        "employer_mismatch",
        lead(),
        [
            text("pay_stub", replaced(PAY_STUB, "Employer: Acme", "Employer: Northwind")),
            *strong_documents()[1:],
        ],
        65,
        "B",
        "review",
        ["images_not_reviewed"],
        ["employer_mismatch"],
    ),
    Golden(
        "no_rent",
        lead(monthly_rent=None),
        [text("tax_return", TAX_RETURN)],
        25,
        "D",
        "reject",
        ["missing_rent", "unverified_employment", "missing_id_document"],
        [],
    ),
    Golden(
        "everything_wrong",
        lead(monthly_rent=5000),
        [
            text("pay_stub", replaced(LOW_PAY_STUB, "Maria Lopez", "Mark Jensen")),
            text("bank_statement", replaced(LOW_PAY_STUB, "Maria Lopez", "Mark Jensen")),
            text("employment_letter", LETTER),
        ],
        0,
        "D",
        "reject",
        ["high_rent_to_income", "missing_id_document"],
        [
            "name_mismatch",
            "income_mismatch",
            "employer_mismatch",
            "duplicate_document",
        ],
    ),
]


@pytest.mark.parametrize("golden", GOLDEN, ids=[g.name for g in GOLDEN])
def test_golden_leads(golden: Golden) -> None:
    result = score_lead(golden.lead, golden.documents)
    assert (
        result.score,
        result.label,
        result.recommendation,
        result.risk_flags,
        result.fraud_signals,
    ) == (
        golden.score,
        golden.label,
        golden.recommendation,
        golden.risk_flags,
        golden.fraud_signals,
    )
    assert result.model_version == RULES_MODEL


def test_the_summary_gives_the_verdict_the_rent_share_and_what_to_look_at() -> None:
    strong = score_lead(lead(), strong_documents())
    assert strong.summary == (
        "Score 100 (A, approve): rent is 30% of the documented income of 6,000 a month. "
        "Risk flags: images_not_reviewed."
    )
    stated = score_lead(lead(monthly_income=6000), [])
    assert "stated income of 6,000 a month, unproven" in stated.summary
    mismatch = score_lead(GOLDEN[4].lead, GOLDEN[4].documents)
    assert "Fraud signals: name_mismatch; risk flags: images_not_reviewed." in mismatch.summary


def test_a_clean_lead_says_so() -> None:
    documents = [*strong_documents()[:3], text("id_document", "Name: MARIA LOPEZ\nID 123")]
    result = score_lead(lead(), documents)
    assert (result.score, result.risk_flags, result.fraud_signals) == (100, [], [])
    assert result.summary.endswith("No risk flags or fraud signals.")


def test_incomes_are_read_per_month_from_each_document() -> None:
    incomes = {
        doc.document_type: read_facts(doc).monthly_income
        for doc in [
            text("pay_stub", PAY_STUB),
            text("employment_letter", LETTER),
            text("bank_statement", BANK),
            text("tax_return", TAX_RETURN),
        ]
    }
    assert incomes == {
        "pay_stub": 6500.0,  # 3,000 biweekly: 26 pays a year
        "employment_letter": 6500.0,  # 78,000 a year
        "bank_statement": 6000.0,  # two payroll deposits in the month
        "tax_return": 6500.0,  # the first income line, a year
    }


@pytest.mark.parametrize(
    ("line", "income"),
    [
        ("Gross pay: $2,000.00 weekly", 8666.67),
        ("Salary: 2,500.00 semi-monthly", 5000.0),
        ("Income: $60,000 per year", 5000.0),
        ("Hourly wage: $25.00 per hour", None),
        ("Income tax: $12,000.00", None),
        ("Net pay: $2,000.00", None),
        ("Salary review date 2024", None),
        ("YTD salary: $40,000.00", None),
    ],
)
def test_income_lines(line: str, income: float | None) -> None:
    assert read_facts(text("pay_stub", line)).monthly_income == income


def test_names_match_with_accents_initials_and_double_surnames() -> None:
    def signals(name: str, **fields: Any) -> list[str]:
        doc = text("pay_stub", f"Employee: {name}\nGross pay: $6,000.00")
        return score_lead(lead(**fields), [doc]).fraud_signals

    assert signals("LOPEZ, MARIA") == []
    assert signals("M. Lopez") == []
    assert signals("José García", first_name="Jose", last_name="Garcia") == []
    assert signals("Maria Garcia", last_name="Lopez-Garcia") == []
    assert signals("Maria Lopez-Garcia", last_name="Lopez") == []
    assert signals("Marta Lopez") == ["name_mismatch"]
    assert signals("Maria Lopes") == ["name_mismatch"]


def test_a_stated_income_well_above_the_documents_is_an_income_mismatch() -> None:
    documents = [text("employment_letter", LETTER)]  # 6,500 a month
    assert score_lead(lead(monthly_income=7800), documents).fraud_signals == []
    assert score_lead(lead(monthly_income=7900), documents).fraud_signals == ["income_mismatch"]


def test_the_same_file_twice_under_one_type_is_only_flagged() -> None:
    documents = [text("pay_stub", PAY_STUB), text("pay_stub", PAY_STUB)]
    result = score_lead(lead(), documents)
    assert "duplicate_upload" in result.risk_flags
    assert result.fraud_signals == []


def test_odd_lead_fields_are_ignored_not_fatal() -> None:
    fields = {"first_name": 7, "monthly_rent": "lots", "monthly_income": True}
    result = score_lead(lead(**fields), strong_documents())
    assert "missing_rent" in result.risk_flags and "identity_unverified" in result.risk_flags
    assert 0 <= result.score <= 100


def test_the_same_lead_always_gets_the_same_evaluation() -> None:
    first = score_lead(lead(), strong_documents())
    assert all(score_lead(lead(), strong_documents()) == first for _ in range(5))
    assert score_lead(lead(), list(reversed(strong_documents()))).score == first.score


@pytest.mark.anyio
async def test_evaluate_rules_is_the_async_face_of_score_lead() -> None:
    for golden in GOLDEN:
        assert await evaluate_rules(golden.lead, golden.documents) == score_lead(
            golden.lead, golden.documents
        )


def test_three_documents_take_well_under_50_ms() -> None:
    documents = strong_documents()[:3]
    timings = []
    for _ in range(21):
        start = time.perf_counter()
        score_lead(lead(), documents)
        timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.05


def test_a_hostile_document_stays_bounded() -> None:
    lines = [f"Employer: Company {i}\nName: Person {i}\nIncome: ${i},000.00" for i in range(20_000)]
    body = "\n".join(lines)[:200_000]
    start = time.perf_counter()
    result = score_lead(lead(), [text("pay_stub", body), text("employment_letter", body)])
    assert time.perf_counter() - start < 2.0
    assert "employer_mismatch" in result.fraud_signals


def test_the_golden_table_in_the_docs_matches_these_leads() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    table = doc.split("## Golden leads", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]

    def listed(cell: str) -> list[str]:
        return [item.strip() for item in cell.split(",") if item.strip()]

    documented = [
        (int(cells[1].split()[0]), cells[2], cells[3], listed(cells[4]), listed(cells[5]))
        for cells in ([c.strip() for c in row.split("|")[1:-1]] for row in rows)
    ]
    assert documented == [
        (g.score, g.label, g.recommendation, g.risk_flags, g.fraud_signals) for g in GOLDEN
    ]
