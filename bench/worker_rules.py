"""The rules-evaluation part of the worker benchmark, timed in the benchmark's own process.

One lead with three documents, as the `ai_evaluation` job reads them: a pay stub as a
one-page PDF (built here, Helvetica text with an exact xref table), an employment letter
and a bank statement as plain text. One run is what the job does after reading the blobs:
`extract_text` of each document, then `evaluate_rules` (the coroutine is driven by hand,
so no event loop's overhead is counted; it never awaits). The same-run reference is
`json.dumps` of the lead with its documents' text, alternated with it run by run.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from bench.measure import median, percentile
from worker.evaluation.documents import extract_text
from worker.evaluation.model import DocumentInput, Evaluation, LeadInput
from worker.evaluation.rules import evaluate_rules, score_lead

T = TypeVar("T")

PAY_STUB_LINES: Final = (
    "ACME LOGISTICS INC - EARNINGS STATEMENT",
    "Employee: Maria Lopez",
    "Employer: Acme Logistics Inc",
    "Pay frequency: Biweekly",
    "Pay period: 03/01/2025 - 03/14/2025",
    "Gross pay: $3,000.00    Net pay: $2,310.00",
    "Gross pay YTD: $18,000.00",
)
LETTER: Final = """To whom it may concern,
This letter confirms that Maria Lopez is employed by Acme Logistics Inc as a supervisor.
She has worked with us for 4 years, with an annual salary of $78,000.
"""
BANK: Final = """First Bank - statement for March 2025
Account holder: Maria Lopez
03/07 Payroll deposit ACME LOGISTICS 3,000.00
03/15 Rent payment -1,800.00
03/21 Payroll deposit ACME LOGISTICS 3,000.00
Closing balance: 9,420.55
"""
LEAD: Final = LeadInput(
    lead_id="lead_1",
    fields={
        "first_name": "Maria",
        "last_name": "Lopez",
        "email": "maria@example.com",
        "monthly_rent": 1800,
    },
)


def pdf(lines: tuple[str, ...]) -> bytes:
    """A minimal valid one-page PDF showing `lines` in Helvetica."""
    shown = " ".join(f"({_escape(line)}) Tj T*" for line in lines)
    content = f"BT /F1 12 Tf 14 TL 72 712 Td {shown} ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
        b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> "
        b"/Contents 4 0 R >>",
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


BLOBS: Final = (
    ("doc_pay_stub", "pay_stub", "application/pdf", pdf(PAY_STUB_LINES)),
    ("doc_letter", "employment_letter", "text/plain; charset=utf-8", LETTER.encode()),
    ("doc_bank", "bank_statement", "text/plain", BANK.encode()),
)


def read_documents() -> list[DocumentInput]:
    """The three documents with their text extracted, as the job hands them to evaluators."""
    return [
        DocumentInput(
            id=doc_id,
            document_type=doc_type,
            mime_type=mime,
            data=data,
            text=extract_text(mime, data),
        )
        for doc_id, doc_type, mime, data in BLOBS
    ]


_CACHED: Final[list[DocumentInput]] = []


def read_documents_cached() -> list[DocumentInput]:
    if not _CACHED:
        _CACHED.extend(read_documents())
    return _CACHED


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its result, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("the coroutine suspended; it needs an event loop")


def evaluate_once() -> Evaluation:
    return drive(evaluate_rules(LEAD, read_documents()))


def dumps_once() -> str:
    documents = read_documents_cached()  # the texts: dumps does no extraction
    return json.dumps(
        {
            "lead_id": LEAD.lead_id,
            "fields": LEAD.fields,
            "documents": [
                {"id": d.id, "document_type": d.document_type, "text": d.text} for d in documents
            ],
        }
    )


def _ms(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1000


def check() -> Evaluation:
    """The evaluation must have read every document, the PDF's income included."""
    documents = read_documents()
    pay_stub = documents[0].text or ""
    if "Gross pay" not in pay_stub or "Maria Lopez" not in pay_stub:
        raise RuntimeError(f"the PDF pay stub's text was not extracted: {pay_stub!r}")
    verdict = evaluate_once()
    if "missing_income_proof" in verdict.risk_flags or verdict.score < 80:
        raise RuntimeError(f"the benchmark lead was not evaluated as expected: {verdict}")
    return verdict


def measure(runs: int) -> dict[str, Any]:
    """Median and p99 (ms) of whole evaluations, of their parts, and of the json.dumps."""
    verdict = check()
    for _ in range(10):  # warm: imports, compiled patterns, pypdf's first-use caches
        evaluate_once()
        dumps_once()
    documents = read_documents_cached()
    pdf_bytes = BLOBS[0][3]
    whole: list[float] = []
    baseline: list[float] = []
    pdf_only: list[float] = []
    score_only: list[float] = []
    gc.collect()
    for i in range(runs):
        pair = [(whole, evaluate_once), (baseline, dumps_once)]
        for out, fn in pair if i % 2 == 0 else pair[::-1]:
            out.append(_ms(fn))
        pdf_only.append(_ms(lambda: extract_text("application/pdf", pdf_bytes)))
        score_only.append(_ms(lambda: score_lead(LEAD, documents)))
    return {
        "runs": runs,
        "median_ms": median(whole),
        "p99_ms": percentile(whole, 99),
        "max_ms": max(whole),
        "pdf_extract_median_ms": median(pdf_only),
        "score_lead_median_ms": median(score_only),
        "json_dumps_median_ms": median(baseline),
        "json_dumps_p99_ms": percentile(baseline, 99),
        "ratio_to_json_dumps": median(whole) / median(baseline),
        "pdf_bytes": len(pdf_bytes),
        "verdict": f"{verdict.score} {verdict.label} {verdict.recommendation}",
    }
