"""LlmEvaluator against a fake OpenAI-compatible server: a Starlette app on a real uvicorn.

The fake records every request and answers as the test sets `fake.reply`, so each case
checks both what we sent and what we make of the answer: verdicts, timeouts, malformed
answers and HTTP errors.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.uvicorn_client import served
from worker.evaluation.llm import LlmConfig, LlmEvaluator, normalize_flags
from worker.evaluation.model import (
    DocumentInput,
    Evaluator,
    LeadInput,
    ModelTimeout,
    ProcessingError,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

API_KEY = "sk-test-key-0123456789"
MODEL = "test-model"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
PAY_STUB = "ACME GmbH pay stub, March. Net pay 4,200.00 EUR. Employee: Ada Lovelace."

LEAD = LeadInput(
    lead_id="lead_1",
    fields={
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "monthly_rent": 1450,
        "move_in_date": "2026-12-01",
    },
)
DOCUMENTS = [
    DocumentInput(
        id="doc_1",
        document_type="pay_stub",
        mime_type="text/plain",
        data=PAY_STUB.encode(),
        text=PAY_STUB,
    ),
    DocumentInput(
        id="doc_2", document_type="id_document", mime_type="image/png", data=PNG, text=None
    ),
]


def verdict(**overrides: Any) -> str:
    """The model's JSON verdict, with fields replaced or (given None) left out."""
    answer: dict[str, Any] = {
        "score": 72,
        "summary": "Income about 2.9x the rent; pay stub consistent with the application.",
        "risk_flags": ["income_below_3x_rent"],
        "fraud_signals": [],
    }
    answer.update(overrides)
    return json.dumps({k: v for k, v in answer.items() if v is not None})


@dataclass
class Reply:
    """How the fake answers: a completion of `content`, or `body` as is, late or dripping."""

    content: str | None = field(default_factory=verdict)
    model: str | None = "test-model-2026-01-01"
    status: int = 200
    body: bytes | None = None
    delay: float = 0.0  # seconds before answering
    drip: float = 0.0  # seconds between the bytes of the answer


@dataclass
class Received:
    headers: dict[str, str]
    body: Any


@dataclass
class FakeLlm:
    url: str = ""
    reply: Reply = field(default_factory=Reply)
    requests: list[Received] = field(default_factory=list)
    release: anyio.Event = field(default_factory=anyio.Event)  # ends delays at teardown

    def config(self, **overrides: Any) -> LlmConfig:
        settings: dict[str, Any] = {"url": self.url, "model": MODEL, "api_key": API_KEY}
        return LlmConfig(**(settings | overrides))

    def sent(self) -> Any:
        """The one request the fake received, as JSON."""
        assert len(self.requests) == 1
        return self.requests[0].body


def fake_app(fake: FakeLlm) -> Starlette:
    """An OpenAI-compatible `/v1/chat/completions` that answers `fake.reply`."""

    async def completions(request: Request) -> Response:
        fake.requests.append(Received(dict(request.headers), json.loads(await request.body())))
        reply = fake.reply
        if reply.delay:
            with anyio.move_on_after(reply.delay):
                await fake.release.wait()
        body = reply.body
        if body is None:
            choice = {"index": 0, "message": {"role": "assistant", "content": reply.content}}
            completion = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice]}
            if reply.model is not None:
                completion["model"] = reply.model
            body = json.dumps(completion).encode()
        if not reply.drip:
            return Response(body, status_code=reply.status, media_type="application/json")

        async def dripping() -> AsyncIterator[bytes]:
            for byte in body:
                if fake.release.is_set():
                    return
                yield bytes([byte])
                await anyio.sleep(reply.drip)

        return StreamingResponse(dripping(), reply.status, media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@pytest.fixture
async def fake() -> AsyncIterator[FakeLlm]:
    fake = FakeLlm()
    async with served(fake_app(fake), within=10, timeout_graceful_shutdown=5) as url:
        fake.url = f"{url}/v1"
        try:
            yield fake
        finally:
            fake.release.set()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_valid_answer_becomes_an_evaluation(fake: FakeLlm, client: httpx.AsyncClient) -> None:
    fake.reply.content = verdict(
        score=72,
        label="A",  # the model's own label and recommendation are not trusted
        recommendation="approve",
        risk_flags=["Income below 3x rent", "income_below_3x_rent", "missingBankStatement"],
        fraud_signals=["Name-Mismatch", ""],
    )
    evaluate: Evaluator = LlmEvaluator(fake.config(), client)

    evaluation = await evaluate(LEAD, DOCUMENTS)

    assert evaluation.score == 72
    assert evaluation.label == "B"
    assert evaluation.recommendation == "review"
    assert evaluation.summary.startswith("Income about 2.9x the rent")
    assert evaluation.risk_flags == ["income_below_3x_rent", "missing_bank_statement"]
    assert evaluation.fraud_signals == ["name_mismatch"]
    assert evaluation.model_version == MODEL  # not the snapshot the answer names


@pytest.mark.parametrize(
    ("score", "label", "recommendation"),
    [(100, "A", "approve"), (80, "A", "approve"), (64, "C", "review"), (0, "D", "reject")],
)
async def test_label_and_recommendation_follow_the_score(
    fake: FakeLlm, client: httpx.AsyncClient, score: int, label: str, recommendation: str
) -> None:
    fake.reply.content = verdict(score=score, label="B")
    evaluation = await LlmEvaluator(fake.config(), client)(LEAD, DOCUMENTS)
    assert (evaluation.score, evaluation.label, evaluation.recommendation) == (
        score,
        label,
        recommendation,
    )


async def test_request_carries_model_key_lead_text_and_images(
    fake: FakeLlm, client: httpx.AsyncClient
) -> None:
    await LlmEvaluator(fake.config(), client)(LEAD, DOCUMENTS)

    assert fake.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    sent = fake.sent()
    assert sent["model"] == MODEL
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["temperature"] == 0
    system, user = sent["messages"]
    assert system["role"] == "system"
    assert "0 to 100" in system["content"]
    assert all(key in system["content"] for key in ("risk_flags", "fraud_signals", "JSON"))
    assert user["role"] == "user"
    text_part, image_part = user["content"]
    assert text_part["type"] == "text"
    for expected in ("lead_1", "Ada", "Lovelace", "ada@example.com", "1450", "2026-12-01"):
        assert expected in text_part["text"]
    assert "pay_stub" in text_part["text"]
    assert PAY_STUB in text_part["text"]
    assert "id_document (image/png): attached as image 1" in text_part["text"]
    assert image_part == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
    }


async def test_text_only_request_is_a_string_and_sends_no_key_when_none_is_set(
    fake: FakeLlm, client: httpx.AsyncClient
) -> None:
    await LlmEvaluator(fake.config(api_key=None), client)(LEAD, DOCUMENTS[:1])

    assert "authorization" not in fake.requests[0].headers
    user = fake.sent()["messages"][1]
    assert isinstance(user["content"], str)
    assert PAY_STUB in user["content"]


async def test_long_document_text_is_truncated(fake: FakeLlm, client: httpx.AsyncClient) -> None:
    long_text = "Statement line.\n" * 5_000 + "END-OF-STATEMENT-MARKER"
    statement = DocumentInput(
        id="doc_3",
        document_type="bank_statement",
        mime_type="application/pdf",
        data=b"%PDF-1.7",
        text=long_text,
    )

    await LlmEvaluator(fake.config(), client)(LEAD, [statement])

    content = fake.sent()["messages"][1]["content"]
    assert "Statement line." in content
    assert "END-OF-STATEMENT-MARKER" not in content
    assert "more characters not shown" in content
    assert len(content) < len(long_text) // 4


async def test_model_version_is_the_configured_model_when_the_answer_names_none(
    fake: FakeLlm, client: httpx.AsyncClient
) -> None:
    fake.reply.model = None
    evaluation = await LlmEvaluator(fake.config(), client)(LEAD, DOCUMENTS)
    assert evaluation.model_version == MODEL


@pytest.mark.parametrize(
    "content",
    [
        "```json\n" + verdict(score=85) + "\n```",
        "Here is my assessment:\n```\n" + verdict(score=85) + "\n```\nHope this helps.",
        "  " + verdict(score=85.0) + "\n",
    ],
    ids=["json-fence", "bare-fence-in-prose", "float-score"],
)
async def test_fenced_and_loose_answers_are_accepted(
    fake: FakeLlm, client: httpx.AsyncClient, content: str
) -> None:
    fake.reply.content = content
    evaluation = await LlmEvaluator(fake.config(), client)(LEAD, DOCUMENTS)
    assert (evaluation.score, evaluation.label) == (85, "A")


async def test_slow_answer_is_a_model_timeout_within_the_timeout(
    fake: FakeLlm, client: httpx.AsyncClient
) -> None:
    fake.reply.delay = 20
    evaluate = LlmEvaluator(fake.config(timeout=0.3), client)

    started = anyio.current_time()
    with pytest.raises(ModelTimeout) as raised:
        await evaluate(LEAD, DOCUMENTS)
    elapsed = anyio.current_time() - started

    assert 0.25 <= elapsed < 2
    assert raised.value.code == "ModelTimeout"
    assert raised.value.retryable
    assert "0.3 s" in raised.value.message


async def test_dripping_answer_is_a_model_timeout_at_the_overall_deadline(
    fake: FakeLlm, client: httpx.AsyncClient
) -> None:
    """Every byte comes in time for httpx's read timeout; the whole answer does not."""
    fake.reply.drip = 0.05
    fake.reply.content = verdict(summary="x" * 400)
    evaluate = LlmEvaluator(fake.config(timeout=0.5), client)

    started = anyio.current_time()
    with pytest.raises(ModelTimeout):
        await evaluate(LEAD, DOCUMENTS)
    assert 0.45 <= anyio.current_time() - started < 2.5


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("The applicant looks fine to me.", "not a JSON object"),
        (verdict(score=150), "<= 100"),
        (verdict(score=-1), ">= 0"),
        (verdict(score=72.5), "Expected `int`"),
        (verdict(score="high"), "Expected `int`"),
        (verdict(summary=None), "missing required field `summary`"),
        (verdict(fraud_signals=None), "missing required field `fraud_signals`"),
        (verdict(risk_flags="income_low"), "Expected `array`"),
        ("[72]", "Expected `object`"),
        (verdict(summary="   "), "empty summary"),
        (None, "no content"),
        ("", "no content"),
    ],
    ids=[
        "prose",
        "score-150",
        "score-negative",
        "score-fraction",
        "score-word",
        "no-summary",
        "no-fraud-signals",
        "flags-not-a-list",
        "array",
        "blank-summary",
        "null-content",
        "empty-content",
    ],
)
async def test_malformed_content_is_a_processing_error(
    fake: FakeLlm, client: httpx.AsyncClient, content: str | None, complaint: str
) -> None:
    fake.reply.content = content
    with pytest.raises(ProcessingError) as raised:
        await LlmEvaluator(fake.config(), client)(LEAD, DOCUMENTS)
    assert complaint in raised.value.message
    assert raised.value.retryable


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"<html><body>Bad gateway</body></html>", "not JSON"),
        (b'{"choices": []}', "no choices"),
        (b'{"id": "chatcmpl-1", "object": "chat.completion"}', "not a chat completion"),
        (b'{"choices": [{"message": "hi"}]}', "not a chat completion"),
    ],
    ids=["html", "no-choices", "no-choices-field", "message-not-an-object"],
)
async def test_malformed_completion_is_a_processing_error(
    fake: FakeLlm, client: httpx.AsyncClient, body: bytes, complaint: str
) -> None:
    fake.reply.body = body
    with pytest.raises(ProcessingError, match=complaint):
        await LlmEvaluator(fake.config(), client)(LEAD, DOCUMENTS)


@pytest.mark.parametrize("status", [500, 502, 503, 429, 400, 404])
async def test_http_error_status_is_a_retryable_processing_error(
    fake: FakeLlm, client: httpx.AsyncClient, status: int
) -> None:
    fake.reply.status = status
    fake.reply.body = b'{"error": {"message": "upstream is having a bad day"}}'
    with pytest.raises(ProcessingError) as raised:
        await LlmEvaluator(fake.config(), client)(LEAD, DOCUMENTS)
    assert f"answered {status}" in raised.value.message
    assert "upstream is having a bad day" in raised.value.message
    assert raised.value.retryable


async def test_error_messages_show_neither_the_key_nor_document_text(
    fake: FakeLlm, client: httpx.AsyncClient
) -> None:
    evaluate = LlmEvaluator(fake.config(), client)
    fake.reply.status = 401
    fake.reply.body = json.dumps(
        {"error": {"message": f"Incorrect API key provided: {API_KEY}", "type": "auth"}}
    ).encode()
    with pytest.raises(ProcessingError) as raised:
        await evaluate(LEAD, DOCUMENTS)
    assert "401" in raised.value.message
    assert "Incorrect API key provided" in raised.value.message
    assert API_KEY not in str(raised.value)

    fake.reply.status = 500
    fake.reply.body = f"proxy error while forwarding: {PAY_STUB} {API_KEY}".encode()
    with pytest.raises(ProcessingError) as raised:
        await evaluate(LEAD, DOCUMENTS)
    assert "500" in raised.value.message
    assert "Net pay" not in str(raised.value)
    assert API_KEY not in str(raised.value)
    assert API_KEY not in repr(fake.config())


async def test_unreachable_endpoint_is_a_processing_error(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port that nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = LlmConfig(url=f"http://127.0.0.1:{port}/v1", model=MODEL, timeout=5)
    with pytest.raises(ProcessingError, match="model endpoint failed: ConnectError"):
        await LlmEvaluator(config, client)(LEAD, DOCUMENTS)


async def test_url_that_already_names_chat_completions(
    fake: FakeLlm, client: httpx.AsyncClient
) -> None:
    config = fake.config(url=fake.url + "/chat/completions/")
    evaluation = await LlmEvaluator(config, client)(LEAD, DOCUMENTS)
    assert evaluation.score == 72
    assert len(fake.requests) == 1


async def test_open_brings_its_own_client(fake: FakeLlm) -> None:
    async with LlmEvaluator.open(fake.config()) as evaluate:
        evaluation = await evaluate(LEAD, DOCUMENTS)
    assert evaluation.score == 72


def test_from_env_is_none_without_a_url() -> None:
    assert LlmConfig.from_env({}) is None
    assert LlmConfig.from_env({"JOBTRAIL_LLM_URL": "  ", "JOBTRAIL_LLM_MODEL": "m"}) is None


def test_from_env_defaults_and_values() -> None:
    assert LlmConfig.from_env({"JOBTRAIL_LLM_URL": "http://127.0.0.1:9000/v1"}) == LlmConfig(
        url="http://127.0.0.1:9000/v1", model="gpt-4o-mini", api_key=None, timeout=60.0
    )
    env = {
        "JOBTRAIL_LLM_URL": "https://llm.example.com/v1",
        "JOBTRAIL_LLM_MODEL": "llama-3.1-8b",
        "JOBTRAIL_LLM_API_KEY": API_KEY,
        "JOBTRAIL_LLM_TIMEOUT": "2.5",
    }
    config = LlmConfig.from_env(env)
    assert config == LlmConfig(
        url="https://llm.example.com/v1", model="llama-3.1-8b", api_key=API_KEY, timeout=2.5
    )
    assert config.endpoint == "https://llm.example.com/v1/chat/completions"
    assert LlmConfig.from_env(env | {"JOBTRAIL_LLM_TIMEOUT": "90s"}) == msgspec.structs.replace(
        config, timeout=90.0
    )


@pytest.mark.parametrize("timeout", ["abc", "0", "-5", "nan", "inf", "1e999", "s", "10m"])
def test_from_env_rejects_a_bad_timeout(timeout: str) -> None:
    env = {"JOBTRAIL_LLM_URL": "http://127.0.0.1:9000/v1", "JOBTRAIL_LLM_TIMEOUT": timeout}
    with pytest.raises(ValueError, match="JOBTRAIL_LLM_TIMEOUT must be a positive number"):
        LlmConfig.from_env(env)


@pytest.mark.parametrize("url", ["127.0.0.1:9000/v1", "ftp://llm.example.com", "http://"])
def test_from_env_rejects_a_url_that_is_not_http(url: str) -> None:
    with pytest.raises(ValueError, match="JOBTRAIL_LLM_URL"):
        LlmConfig.from_env({"JOBTRAIL_LLM_URL": url})


def test_flags_become_snake_case_once_each() -> None:
    flags = ["Income Mismatch", "income_mismatch", "newAccount", "  ", "PDF-edited!", "new account"]
    assert normalize_flags(flags) == ["income_mismatch", "new_account", "pdf_edited"]
