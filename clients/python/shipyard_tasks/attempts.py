"""The sends of one call: after each, whether to send again and when, or what to return or
raise. The clients' loops only send and sleep; every decision is here, once for both."""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx
from pydantic import BaseModel, ValidationError

from shipyard_tasks import retries
from shipyard_tasks.calls import Call
from shipyard_tasks.errors import ApiError, TransportError, UnexpectedAnswer, error_from


@dataclass(frozen=True)
class Resend:
    after_seconds: float


class Attempts:
    def __init__(self, call: Call, policy: retries.RetryPolicy, rng: random.Random | None = None):
        self.call, self.policy, self.rng = call, policy, rng
        self.count = 0

    @property
    def _idempotent(self) -> bool:
        return self.call.idempotent

    def after_error(self, error: httpx.TransportError, url: str) -> Resend:
        """A send that got no answer: a ``Resend``, or raises ``TransportError``."""
        self.count += 1
        wait = None
        if retries.may_resend_after_error(self.call.method, self._idempotent, error):
            wait = self.policy.delay(self.count, None, self.rng)
        if wait is None:
            raise TransportError(self.call.method, url, self.count, error) from error
        return Resend(wait)

    def after_answer(self, response: httpx.Response) -> BaseModel | Resend:
        """A send that got an answer: the call's model, a ``Resend``, or raises the ``ApiError``."""
        self.count += 1
        if response.is_success:
            try:
                return self.call.answer.model_validate_json(response.content)
            except ValidationError as invalid:
                raise UnexpectedAnswer(response, f"{invalid.error_count()} error(s), first: "
                                                 f"{invalid.errors()[0]['msg']}") from invalid
        error: ApiError = error_from(response)
        if retries.may_resend_after_answer(self.call.method, self._idempotent, error.status, error.code):
            wait = self.policy.delay(self.count, error.retry_after, self.rng)
            if wait is not None:
                return Resend(wait)
        raise error
