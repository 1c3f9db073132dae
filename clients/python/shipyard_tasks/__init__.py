"""The official Python client of Shipyard's task platform API (``clients/python/README.md``)."""

from shipyard_tasks.async_client import AsyncClient
from shipyard_tasks.calls import NewTask
from shipyard_tasks.errors import (ApiError, Conflict, Forbidden, InvalidRequest, NotFound, PayloadTooLarge,
                                   RateLimited, ServerError, ShipyardError, TransportError, Unauthorized, Unavailable,
                                   UnexpectedAnswer, WaitTimeout)
from shipyard_tasks.models import (FINISHED, ApiKey, ApiKeyList, CallbackSecret, CreatedApiKey, CreatedWebhook, Delivery,
                                   DeliveryAttempt, DeliveryPage, ErrorBody, Task, TaskBatch, TaskBatchItem, TaskPage,
                                   TaskStatus, Webhook, WebhookPage)
from shipyard_tasks.retries import RetryPolicy
from shipyard_tasks.session import VERSION as __version__
from shipyard_tasks.sync_client import Client

__all__ = ["AsyncClient", "Client", "RetryPolicy", "NewTask", "Task", "TaskBatch", "TaskBatchItem", "TaskPage",
           "TaskStatus", "FINISHED", "ApiKey", "ApiKeyList", "CreatedApiKey", "Webhook", "CreatedWebhook", "WebhookPage",
           "CallbackSecret", "Delivery", "DeliveryAttempt", "DeliveryPage", "ErrorBody", "ShipyardError", "ApiError",
           "InvalidRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict", "PayloadTooLarge", "RateLimited",
           "Unavailable", "ServerError", "TransportError", "UnexpectedAnswer", "WaitTimeout", "__version__"]
