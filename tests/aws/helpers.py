"""Helpers for the AWS tests: SDK-boundary fault injection and verification clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def client_error(code: str, message: str, operation: str = "RunInstances") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def inject(
    provider: Any, operation: str, decide: Callable[[str, dict[str, Any]], Exception | None]
) -> list[tuple[str, dict[str, Any]]]:
    """Fail chosen calls at the SDK boundary: a botocore before-call hook on the session.

    `decide(region, params)` gets the serialized query parameters and returns the
    exception to raise, or None to let the call through. Returns every call seen.
    """
    seen: list[tuple[str, dict[str, Any]]] = []

    def hook(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        region = context.get("client_region", "")
        body = params.get("body")  # the EC2 query form: {"InstanceMarketOptions.MarketType": ..}
        wire = body if isinstance(body, dict) else {}
        seen.append((region, wire))
        error = decide(region, wire)
        if error is not None:
            raise error

    on(provider, f"before-call.ec2.{operation}", hook)
    return seen


def on(provider: Any, event: str, handler: Callable[..., Any]) -> None:
    """Register a botocore event handler on the provider's session and existing clients."""
    provider._session().events.register(event, handler)
    for client in list(provider._clients.values()):
        client.meta.events.register(event, handler)


def boto(region: str) -> Any:
    """A plain boto3 client for verifying what the provider did (env points at moto)."""
    import boto3

    return boto3.client("ec2", region_name=region)
