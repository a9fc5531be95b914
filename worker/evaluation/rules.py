"""The built-in evaluator `jobtrail-rules-1`: fixed rules an operator can check by hand.

Four parts add up to at most 100 points (affordability 40, employment 20, documents 20,
consistency 20) and each fraud signal takes 15 off, so a lead with a fraud signal is never
approved. Only document text is read; images count toward completeness, unread.
docs/evaluation.md explains every rule with its points.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any, Final, NamedTuple

from .model import (
    RULES_MODEL,
    DocumentInput,
    Evaluation,
    Label,
    LeadInput,
    label_for,
    recommendation_for,
)

# (highest rent share of monthly income in percent, points); above the last: 0 points.
RENT_BANDS: Final = ((30.0, 40), (35.0, 30), (40.0, 20), (50.0, 10))
HIGH_RENT_PERCENT: Final = 40.0
# Incomes that differ by more than this factor disagree (bonuses, rounding and pay
# periods that straddle months stay inside it).
INCOME_TOLERANCE: Final = 1.2
EMPLOYER_LETTER_POINTS: Final = 15
EMPLOYER_OTHER_POINTS: Final = 10
TENURE_POINTS: Final = 5
MIN_TENURE_MONTHS: Final = 12
EMPLOYMENT_MAX: Final = 20
KNOWN_TYPES: Final = frozenset(
    {"pay_stub", "bank_statement", "employment_letter", "id_document", "tax_return"}
)
POINTS_PER_TYPE: Final = 5
DOCUMENTS_MAX: Final = 20
CONSISTENT_POINTS: Final = 20
UNNAMED_POINTS: Final = 10
FRAUD_PENALTY: Final = 15

# A line is read as labels and amounts in order; each label takes the first amount after it.
_OTHER_LABEL = r"\bnet\b|\btaxable\b|\bdeductions?\b|\bincome\s+tax\b|\btax(?:es)?\s+withheld\b"
_INCOME_LABEL = (
    r"\bgross\b|\bsalary\b|\bwages?\b|\bincome\b|\bearnings\b|\bpayroll\b|\bdirect\s+deposit\b"
)
# An amount alone on its digits: not part of a word, a date (03/07) or a negative (-1,800).
_MONEY = (
    r"(?<![\w.,/-])(?P<cur>[$£€]\s?)?(?P<num>\d{1,3}(?:,\d{3}){1,4}|\d{1,12})(?P<dec>\.\d{2})?"
    r"(?![\w/]|[.,]\d)"
)
LINE_TOKEN: Final = re.compile(
    f"(?P<other>{_OTHER_LABEL})|(?P<income>{_INCOME_LABEL})|{_MONEY}", re.IGNORECASE
)
YEAR_TO_DATE: Final = re.compile(r"\bytd\b|\byear[\s-]to[\s-]date\b", re.IGNORECASE)
# Months of income per amount, first match wins; hourly rates (0) are not read.
PERIODS: Final = tuple(
    (re.compile(pattern, re.IGNORECASE), factor)
    for pattern, factor in (
        (r"\bhour(?:ly)?\b|\bper\s+hr\b", 0.0),
        (r"\bbi-?weekly\b|\bevery\s+(?:two|2)\s+weeks\b|\bfortnight(?:ly)?\b", 26 / 12),
        (r"\bsemi-?monthly\b|\btwice\s+a\s+month\b", 2.0),
        (r"\bweekly\b|\bper\s+week\b|\ba\s+week\b", 52 / 12),
        (r"\bannual(?:ly)?\b|\byearly\b|\bper\s+(?:year|annum)\b|\ba\s+year\b", 1 / 12),
        (r"\bmonthly\b|\bper\s+month\b|\ba\s+month\b", 1.0),
    )
)
FREQUENCY_LINE: Final = re.compile(r"\b(?:frequency|schedule|paid)\b", re.IGNORECASE)
ANNUAL_TYPES: Final = frozenset({"tax_return"})
SUMMED_TYPES: Final = frozenset({"bank_statement"})

_LABEL_END = r"[ \t]*:[ \t]*(?P<value>.+)$"
NAME_LINE: Final = re.compile(
    r"^[ \t]*(?:employee|applicant|tenant|taxpayer|account\s+holder|full\s+name|name)"
    r"(?:[ \t]+name)?" + _LABEL_END,
    re.IGNORECASE | re.MULTILINE,
)
_CAPITALISED = r"[A-ZÀ-Þ][^\W\d_]*"
NAME_PHRASE: Final = re.compile(
    r"\b(?i:confirms?|certif(?:y|ies)|verif(?:y|ies))\s+(?i:that)\s+(?:(?:Mr|Mrs|Ms|Mx|Dr)\.?\s+)?"
    rf"(?P<value>{_CAPITALISED}(?:[ '’-]{_CAPITALISED}){{1,3}})"
)
EMPLOYER_LINE: Final = re.compile(
    r"^[ \t]*(?:employer|company)(?:[ \t]+name)?" + _LABEL_END, re.IGNORECASE | re.MULTILINE
)
EMPLOYER_PHRASE: Final = re.compile(
    r"\b(?i:employed\s+(?:by|at|with)|works\s+(?:at|for))\s+"
    r"(?P<value>[A-Z0-9][\w&'’.-]*(?:[ \t]+[A-Z0-9&][\w&'’.-]*)*)"
)
# A labelled value ends at a column gap, a separator or the next `Label:` on the line.
VALUE_END: Final = re.compile(r"\s{2,}|[\t;|(]|\s+[^\W\d_]+\s*:")
TENURE: Final = re.compile(
    r"\bfor\s+(?:the\s+(?:past|last)\s+)?(?P<n>\d{1,2})\s+(?P<unit>year|month)s?\b"
    r"|\b(?P<n2>\d{1,2})\s+(?P<unit2>year|month)s?\s+of\s+(?:employment|service)\b",
    re.IGNORECASE,
)
# Names and employers read per document and way of writing them, and characters per value:
# enough for any real document, and no quadratic work on a hostile one.
MAX_VALUES: Final = 10
MAX_VALUE_CHARS: Final = 200
COMPANY_WORDS: Final = frozenset(
    {"inc", "llc", "ltd", "limited", "corp", "corporation", "co", "company", "plc", "gmbh", "the"}
)


class Facts(NamedTuple):
    """What the rules read from one document's text."""

    document_type: str
    monthly_income: float | None
    names: tuple[frozenset[str], ...]
    employers: tuple[frozenset[str], ...]
    tenure_months: int | None
    net_exceeds_gross: bool


class Part(NamedTuple):
    """One part of the score: its points, the risk flags it raised, a clause for the summary."""

    points: int
    flags: tuple[str, ...] = ()
    note: str = ""


class Applicant(NamedTuple):
    """The lead's name as word tokens, to look for in documents."""

    first: tuple[str, ...]
    last: tuple[str, ...]


async def evaluate_rules(lead: LeadInput, documents: Sequence[DocumentInput]) -> Evaluation:
    """The `jobtrail-rules-1` evaluator: deterministic, offline, a few milliseconds."""
    return score_lead(lead, documents)


def score_lead(lead: LeadInput, documents: Sequence[DocumentInput]) -> Evaluation:
    """Add up the four parts, take off the fraud penalty, and clamp to 0-100."""
    facts = [read_facts(doc) for doc in documents]
    applicant = _applicant(lead.fields)
    stated = _amount(lead.fields.get("monthly_income"))
    incomes = [f.monthly_income for f in facts if f.monthly_income is not None]
    signals = _fraud_signals(facts, documents, applicant, incomes, stated)
    affordability = _affordability(
        _amount(lead.fields.get("monthly_rent"), zero=True), incomes, stated
    )
    parts = (
        affordability,
        _employment(facts),
        _completeness(documents),
        _consistency(facts, applicant, signals),
    )
    total = sum(part.points for part in parts) - FRAUD_PENALTY * len(signals)
    score = max(0, min(100, total))
    flags = list(dict.fromkeys(flag for part in parts for flag in part.flags))
    label = label_for(score)
    return Evaluation(
        score=score,
        label=label,
        recommendation=recommendation_for(label),
        summary=_summary(label, score, affordability.note, flags, signals),
        risk_flags=flags,
        fraud_signals=signals,
        model_version=RULES_MODEL,
    )


def read_facts(doc: DocumentInput) -> Facts:
    """Income, names, employers and tenure found in a document's text (nothing for images)."""
    text = doc.text or ""
    gross, net = _first_amount(text, "gross"), _first_amount(text, "net")
    return Facts(
        document_type=doc.document_type,
        monthly_income=_monthly_income(text, doc.document_type),
        names=_values(text, NAME_LINE, NAME_PHRASE),
        employers=tuple(
            words
            for value in _values(text, EMPLOYER_LINE, EMPLOYER_PHRASE)
            if (words := value - COMPANY_WORDS)
        ),
        tenure_months=_tenure_months(text),
        net_exceeds_gross=gross is not None and net is not None and net > gross,
    )


# Affordability, employment, documents, consistency: one function per part.


def _affordability(rent: float | None, incomes: list[float], stated: float | None) -> Part:
    """Rent as a share of the lowest documented monthly income (half points if only stated)."""
    proof = () if incomes else ("missing_income_proof",)
    if rent is None:
        return Part(0, ("missing_rent", *proof), "the lead has no monthly rent to compare")
    income = min(incomes) if incomes else stated
    if income is None:
        return Part(0, proof, "no income was found in the documents or the lead")
    percent = round(rent / income * 100, 1)
    points = next((p for limit, p in RENT_BANDS if percent <= limit), 0)
    high = ("high_rent_to_income",) if percent > HIGH_RENT_PERCENT else ()
    if incomes:
        note = f"rent is {percent:g}% of the documented income of {income:,.0f} a month"
        return Part(points, high, note)
    note = f"rent is {percent:g}% of the stated income of {income:,.0f} a month, unproven"
    return Part(points // 2, (*proof, *high), note)


def _employment(facts: list[Facts]) -> Part:
    """An employer named by a letter (15) or elsewhere (10), +5 for 12 months or more."""
    letters = [f for f in facts if f.document_type == "employment_letter"]
    flags: list[str] = []
    if any(f.employers for f in letters):
        points = EMPLOYER_LETTER_POINTS
    else:
        named = letters or any(f.employers for f in facts)
        points = EMPLOYER_OTHER_POINTS if named else 0
        flags.append("unverified_employment")
    tenures = [f.tenure_months for f in facts if f.tenure_months is not None]
    if tenures and max(tenures) >= MIN_TENURE_MONTHS:
        points += TENURE_POINTS
    elif tenures:
        flags.append("employment_duration_short")
    return Part(min(points, EMPLOYMENT_MAX), tuple(flags))


def _completeness(documents: Sequence[DocumentInput]) -> Part:
    """5 points per kind of document the lead has (other excluded), at most 20."""
    types = {doc.document_type for doc in documents}
    flags = [
        flag
        for flag, raised in (
            ("no_documents", not documents),
            ("missing_id_document", "id_document" not in types),
            ("images_not_reviewed", any(doc.text is None for doc in documents)),
            ("duplicate_upload", any(len(t) > len(set(t)) for t in _same_content(documents))),
        )
        if raised
    ]
    points = min(DOCUMENTS_MAX, POINTS_PER_TYPE * len(types & KNOWN_TYPES))
    return Part(points, tuple(flags))


def _consistency(facts: list[Facts], applicant: Applicant | None, signals: list[str]) -> Part:
    """20 when a document names the applicant, 10 when none names anyone; 0 with a signal."""
    named = applicant is not None and any(
        _is_applicant(name, applicant) for f in facts for name in f.names
    )
    flags = () if named else ("identity_unverified",)
    if signals:
        return Part(0, flags)
    return Part(CONSISTENT_POINTS if named else UNNAMED_POINTS, flags)


def _fraud_signals(
    facts: list[Facts],
    documents: Sequence[DocumentInput],
    applicant: Applicant | None,
    incomes: list[float],
    stated: float | None,
) -> list[str]:
    """Documents that contradict the lead or each other, in a fixed order."""
    names = [name for f in facts for name in f.names]
    employers = [e for f in facts for e in f.employers]
    checks = (
        (
            "name_mismatch",
            applicant is not None and not all(_is_applicant(n, applicant) for n in names),
        ),
        ("income_mismatch", _incomes_disagree(incomes, stated)),
        ("employer_mismatch", any(not (a <= b or b <= a) for a in employers for b in employers)),
        ("duplicate_document", any(len(set(t)) > 1 for t in _same_content(documents))),
        ("net_pay_exceeds_gross", any(f.net_exceeds_gross for f in facts)),
    )
    return [signal for signal, raised in checks if raised]


def _incomes_disagree(incomes: list[float], stated: float | None) -> bool:
    """Two documents more than 20% apart, or a stated income 20% above every document."""
    if not incomes:
        return False
    if max(incomes) > min(incomes) * INCOME_TOLERANCE:
        return True
    return stated is not None and stated > max(incomes) * INCOME_TOLERANCE


def _same_content(documents: Sequence[DocumentInput]) -> Iterator[list[str]]:
    """The document types of each group of two or more documents with identical bytes."""
    groups: dict[bytes, list[str]] = {}
    for doc in documents:
        if doc.data:
            groups.setdefault(doc.data, []).append(doc.document_type)
    return (types for types in groups.values() if len(types) > 1)


# Reading text: amounts, periods, names, employers, tenure.


def _monthly_income(text: str, document_type: str) -> float | None:
    """The first income amount (a bank statement's sum of them), per month."""
    default = _period(text.splitlines(), FREQUENCY_LINE)
    if default is None:
        default = 1 / 12 if document_type in ANNUAL_TYPES else 1.0
    amounts = [
        amount * _line_period(line, default)
        for line in _income_lines(text)
        for label, amount in _labelled_amounts(line)
        if label == "income"
    ]
    amounts = [a for a in amounts if a > 0]
    if not amounts:
        return None
    return round(sum(amounts) if document_type in SUMMED_TYPES else amounts[0], 2)


def _income_lines(text: str) -> Iterator[str]:
    """Lines that may carry a current income: year-to-date totals are skipped."""
    return (line for line in text.splitlines() if not YEAR_TO_DATE.search(line))


def _labelled_amounts(line: str) -> Iterator[tuple[str, float]]:
    """("income" or the other label's word, amount) for each label followed by an amount."""
    label: str | None = None
    for match in LINE_TOKEN.finditer(line):
        if match["other"] or match["income"]:
            label = "income" if match["income"] else match["other"].lower()
        elif label is not None and _is_money(match):
            yield label, float(match["num"].replace(",", ""))
            label = None


def _is_money(match: re.Match[str]) -> bool:
    """An amount written as money ($2,500, 2,500 or 2500.00), not a year or a day."""
    return bool(match["cur"] or match["dec"] or "," in match["num"])


def _first_amount(text: str, word: str) -> float | None:
    """The first current amount labelled `word` ("gross" or "net"), for the pay check."""
    for line in _income_lines(text):
        for match in LINE_TOKEN.finditer(line):
            if (match["income"] or match["other"] or "").lower() == word:
                return next((a for _, a in _labelled_amounts(line[match.start() :])), None)
    return None


def _line_period(line: str, default: float) -> float:
    """The line's own period (`annual salary`), else the document's."""
    factor = _period([line])
    return default if factor is None else factor


def _period(lines: list[str], only: re.Pattern[str] | None = None) -> float | None:
    """Months-per-amount factor of the first period word in `lines` (those matching `only`)."""
    for line in lines:
        if only is not None and not only.search(line):
            continue
        for pattern, factor in PERIODS:
            if pattern.search(line):
                return factor
    return None


def _values(
    text: str, line: re.Pattern[str], phrase: re.Pattern[str]
) -> tuple[frozenset[str], ...]:
    """Word tokens of the first labelled (`Name: ...`) and phrased (`confirms that ...`) values."""
    labelled = (
        VALUE_END.split(m["value"], maxsplit=1)[0][:MAX_VALUE_CHARS] for m in line.finditer(text)
    )
    phrased = (m["value"][:MAX_VALUE_CHARS] for m in phrase.finditer(text))
    found = itertools.chain(
        itertools.islice(labelled, MAX_VALUES), itertools.islice(phrased, MAX_VALUES)
    )
    return tuple(dict.fromkeys(tokens for value in found if (tokens := frozenset(_tokens(value)))))


def _tenure_months(text: str) -> int | None:
    """The longest stated time in the job ("for 3 years", "18 months of service")."""
    months = [
        int(m["n"] or m["n2"]) * (12 if (m["unit"] or m["unit2"]).lower() == "year" else 1)
        for m in TENURE.finditer(text)
    ]
    return max(months, default=None)


def _tokens(text: str) -> list[str]:
    """Lower-case words without accents, so `José` matches `JOSE`."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.findall(r"[^\W_]+", plain.casefold())


def _applicant(fields: dict[str, Any]) -> Applicant | None:
    """The lead's first and last name as tokens, or None if either is missing."""
    first, last = fields.get("first_name"), fields.get("last_name")
    if not isinstance(first, str) or not isinstance(last, str):
        return None
    applicant = Applicant(tuple(_tokens(first)), tuple(_tokens(last)))
    return applicant if applicant.first and applicant.last else None


def _is_applicant(name: frozenset[str], applicant: Applicant) -> bool:
    """A word of the last name, and the whole first name or its initial, are in `name`."""
    has_last = any(token in name for token in applicant.last)
    has_first = set(applicant.first) <= name or applicant.first[0][0] in name
    return has_last and has_first


def _amount(value: object, *, zero: bool = False) -> float | None:
    """A lead field read as money: a number or a string like "$6,000"; else None."""
    if isinstance(value, str):
        try:
            value = float(value.replace(",", "").replace("$", "").strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if value > 0 or (zero and value == 0) else None


def _summary(label: Label, score: int, note: str, flags: list[str], signals: list[str]) -> str:
    """Score and affordability in one sentence, then what an operator should look at."""
    first = f"Score {score} ({label}, {recommendation_for(label)}): {note}."
    found = [
        f"{kind}: {', '.join(items)}"
        for kind, items in (("fraud signals", signals), ("risk flags", flags))
        if items
    ]
    if not found:
        return f"{first} No risk flags or fraud signals."
    details = "; ".join(found)
    return f"{first} {details[0].upper()}{details[1:]}."
