"""AWS SDK failures mapped to gpuctl errors, in one place.

Every botocore exception the AWS provider can meet goes through `map_error`, which
turns it into a one-line message plus a hint telling the user how to fix it. The
launch loop uses `classify` to decide whether a failure means "try the next zone or
region" or "stop now". botocore is only imported lazily (inside functions).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gpuctl.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    GpuctlError,
    NotFoundError,
    ProviderError,
    QuotaError,
)

QUOTAS_CONSOLE = "https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas"

# Error codes that mean "no room here right now": try the next zone, region or market.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacityOnHost",
        "SpotMaxPriceTooLow",
        "capacity-not-available",
        "capacity-oversubscribed",
        "price-too-low",
        "Unsupported",
        "UnfulfillableCapacity",
    }
)
# Account limits, counted per region and market: another region may still have room.
QUOTA_CODES = frozenset(
    {
        "VcpuLimitExceeded",
        "InstanceLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "SpotInstanceRequestLimitExceeded",
        "PendingVerification",
    }
)
# Problems with one region as a whole (image missing, region not enabled, type not sold).
REGION_CODES = frozenset(
    {
        "InvalidAMIID.NotFound",
        "InvalidAMIID.Malformed",
        "InvalidAMIID.Unavailable",
        "OptInRequired",
        "InvalidInstanceType",
        "InvalidSubnetID.NotFound",
        "VPCIdNotSpecified",
        "InvalidVpcID.NotFound",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InvalidAccessKeyId",
        "MissingAuthenticationToken",
    }
)
DENIED_CODES = frozenset(
    {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "Blocked"}
)
THROTTLE_CODES = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"}
)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def error_text(exc: BaseException, limit: int = 240) -> str:
    """The AWS message of an exception, squeezed onto one short line."""
    response = getattr(exc, "response", None)
    text = ""
    if isinstance(response, dict):
        text = str(response.get("Error", {}).get("Message", ""))
    text = text or str(exc)
    text = re.sub(r"\s+", " ", text).strip()
    # AWS appends a huge encoded authorization blob to UnauthorizedOperation messages.
    text = re.sub(r"Encoded authorization failure message: \S+", "", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify(exc: BaseException) -> str:
    """'capacity' | 'quota' | 'region' | 'fatal': what the launch loop does next."""
    code = error_code(exc)
    if code in CAPACITY_CODES:
        return "capacity"
    if code in QUOTA_CODES:
        return "quota"
    if code in REGION_CODES:
        return "region"
    if isinstance(exc, CapacityError):
        return "capacity"
    if isinstance(exc, QuotaError):
        return "quota"
    return "fatal"


def family_letter(instance_type: str | None) -> str:
    """'G', 'P', 'standard'...: the letter AWS's vCPU quotas are grouped by."""
    if not instance_type:
        return ""
    family = instance_type.split(".", 1)[0].lower()
    if family.startswith(("g", "vt")):
        return "G"
    if family.startswith("p"):
        return "P"
    if family.startswith(("inf",)):
        return "Inf"
    if family.startswith(("trn",)):
        return "Trn"
    if family.startswith(("dl",)):
        return "DL"
    if family.startswith(("f",)):
        return "F"
    if family.startswith(("x",)):
        return "X"
    return "standard"


def quota_name(instance_type: str | None, spot: bool) -> str:
    """The Service Quotas name a vCPU limit error refers to, e.g. 'All G and VT Spot ...'."""
    letter = family_letter(instance_type)
    names = {
        "G": ("Running On-Demand G and VT instances", "All G and VT Spot Instance Requests"),
        "P": ("Running On-Demand P instances", "All P Spot Instance Requests"),
        "Inf": ("Running On-Demand Inf instances", "All Inf Spot Instance Requests"),
        "Trn": ("Running On-Demand Trn instances", "All Trn Spot Instance Requests"),
        "DL": ("Running On-Demand DL instances", "All DL Spot Instance Requests"),
        "F": ("Running On-Demand F instances", "All F Spot Instance Requests"),
        "X": ("Running On-Demand X instances", "All X Spot Instance Requests"),
    }
    on_demand, spot_name = names.get(
        letter,
        (
            "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
            "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
        ),
    )
    return spot_name if spot else on_demand


def quota_hint(region: str | None, instance_type: str | None, spot: bool) -> str:
    where = f"?region={region}" if region else ""
    return (
        f"request a higher '{quota_name(instance_type, spot)}' quota (vCPUs) in "
        f"{region or 'that region'}: {QUOTAS_CONSOLE}{where} (new accounts start at 0 "
        "for GPU families), or try another region (--regions)"
    )


def credential_chain_hint(aws_profile: str | None) -> str:
    """Which places botocore looked in, and how to put credentials there."""
    config = os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")
    creds = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    profile = aws_profile or os.environ.get("AWS_PROFILE") or "default"
    return (
        f"tried env AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile '{profile}' in {creds} "
        f"and {config} (keys, SSO, credential_process), container and instance roles; "
        "run `aws configure` (or `aws sso login --profile NAME`) and set aws_profile "
        "in the gpuctl profile or AWS_PROFILE"
    )


def map_error(
    exc: BaseException,
    *,
    region: str | None = None,
    action: str = "",
    instance_type: str | None = None,
    spot: bool = False,
    aws_profile: str | None = None,
    endpoint: str | None = None,
) -> GpuctlError:
    """Turn any AWS SDK exception into the gpuctl error a user should see."""
    if isinstance(exc, GpuctlError):
        return exc
    import botocore.exceptions as bx

    where = f" in {region}" if region else ""
    doing = f" {action}" if action else ""
    text = error_text(exc)
    profile = aws_profile or os.environ.get("AWS_PROFILE") or "default"

    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return CredentialsError("no AWS credentials found", hint=credential_chain_hint(aws_profile))
    if isinstance(exc, bx.ProfileNotFound):
        config = os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")
        return CredentialsError(
            f"AWS profile '{profile}' is not configured",
            hint=f"add it to {config} with `aws configure --profile {profile}` "
            "(or `aws configure sso`), or fix aws_profile in the gpuctl profile",
        )
    if isinstance(exc, bx.SSOError | bx.TokenRetrievalError):
        return CredentialsError(
            f"the AWS SSO session for profile '{profile}' has expired or is missing",
            hint=f"run `aws sso login --profile {profile}` and try again",
        )
    if isinstance(exc, bx.CredentialRetrievalError):
        return CredentialsError(
            f"could not load AWS credentials: {text}",
            hint=credential_chain_hint(aws_profile),
        )
    if isinstance(exc, bx.NoRegionError):
        return ConfigError(
            "no AWS region configured",
            hint='set regions = ["us-east-1"] in the gpuctl profile or pass --regions',
        )
    if isinstance(exc, bx.ParamValidationError):
        return ConfigError(f"invalid AWS request{doing}: {text}", hint="check the flags")
    if isinstance(exc, bx.ConnectTimeoutError | bx.ReadTimeoutError):
        return ProviderError(
            f"AWS EC2{where} did not answer in time{doing}",
            hint="check your network (or the endpoint_url of an emulator); try again",
        )
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError | bx.HTTPClientError):
        target = endpoint or getattr(exc, "kwargs", {}).get("endpoint_url") or "AWS"
        return ProviderError(
            f"cannot reach {target}{where}{doing}",
            hint="check your network, proxy settings, or the endpoint_url / "
            "AWS_ENDPOINT_URL of an emulator",
        )
    if isinstance(exc, bx.ClientError):
        return _map_client_error(
            exc,
            region=region,
            doing=doing,
            instance_type=instance_type,
            spot=spot,
            profile=profile,
            aws_profile=aws_profile,
        )
    if isinstance(exc, bx.BotoCoreError):
        return ProviderError(f"AWS request failed{where}{doing}: {text}", hint="try again")
    return ProviderError(
        f"unexpected AWS failure{where}{doing}: {type(exc).__name__}: {text}",
        hint="try again; if it persists, report it with `gpuctl --json` output",
    )


def _map_client_error(
    exc: BaseException,
    *,
    region: str | None,
    doing: str,
    instance_type: str | None,
    spot: bool,
    profile: str,
    aws_profile: str | None,
) -> GpuctlError:
    code = error_code(exc)
    text = error_text(exc)
    where = f" in {region}" if region else ""
    market = "spot" if spot else "on-demand"
    what = f"{instance_type} ({market})" if instance_type else market
    if code in CREDENTIAL_CODES:
        if "xpired" in code or "xpired" in text:
            return CredentialsError(
                f"the AWS credentials for profile '{profile}' have expired",
                hint=f"refresh them (`aws sso login --profile {profile}` for SSO) and retry",
            )
        return CredentialsError(
            f"AWS rejected the credentials ({code})",
            hint=credential_chain_hint(aws_profile),
        )
    if code in DENIED_CODES:
        return CredentialsError(
            f"AWS denied{doing or ' the request'}{where}: {text or code}",
            hint="the IAM user/role needs ec2:Describe*, RunInstances, CreateTags, "
            "Create/ImportKeyPair, CreateSecurityGroup, AuthorizeSecurityGroupIngress, "
            "Start/Stop/TerminateInstances",
        )
    if code in QUOTA_CODES:
        return QuotaError(
            f"AWS quota reached for {what}{where}: {text or code}",
            hint=quota_hint(region, instance_type, spot),
        )
    if code == "SpotMaxPriceTooLow" or code == "price-too-low":
        return CapacityError(
            f"--max-price is below the current spot price for {what}{where}: {text}",
            hint="raise --max-price (or omit it: the default is the on-demand price)",
        )
    if code in CAPACITY_CODES:
        return CapacityError(
            f"no capacity for {what}{where}: {text or code}",
            hint="try another region (--regions), another type, or --fallback on-demand",
        )
    if code == "OptInRequired":
        return ConfigError(
            f"region {region or '?'} is not enabled for this AWS account",
            hint="enable it under Account > AWS Regions in the console, or drop it "
            "from the profile's regions",
        )
    if code == "InvalidInstanceType" or (
        code == "InvalidParameterValue" and "instance type" in text.lower()
    ):
        return ConfigError(
            f"unknown instance type '{instance_type or '?'}'{where}",
            hint="list the GPU types with `gpuctl offers --provider aws`",
        )
    if code.startswith("InvalidAMIID"):
        return ConfigError(
            f"image not found{where}: {text}",
            hint="AMIs are regional: pass an --image that exists there, or omit --image "
            "to use the newest Deep Learning AMI",
        )
    if code.startswith("InvalidInstanceID"):
        return NotFoundError(f"instance not found{where}: {text}", hint="see `gpuctl ls`")
    if code in THROTTLE_CODES:
        return ProviderError(
            f"AWS is throttling requests{where}{doing}",
            hint="wait a minute and retry; fewer regions in the profile make fewer calls",
        )
    if code in ("IncorrectInstanceState", "UnsupportedOperation", "IncorrectState"):
        return ProviderError(f"AWS refused{doing}{where}: {text}", hint=_state_hint(text))
    if code == "DryRunOperation":
        return ProviderError("dry run only", hint="")
    return ProviderError(
        f"AWS error{doing}{where}: {code}: {text}" if code else f"AWS error{doing}{where}: {text}",
        hint="check the AWS console for details; `gpuctl ls` shows what exists",
    )


def _state_hint(text: str) -> str:
    lowered = text.lower()
    if "spot" in lowered:
        return "spot instances launched by gpuctl are one-time: terminate instead of stop"
    if "instance store" in lowered:
        return "instance-store-backed instances cannot be stopped: terminate instead"
    return "wait until the instance has finished its current transition (`gpuctl ls`)"


@contextmanager
def aws_errors(**context: Any) -> Iterator[None]:
    """Re-raise any SDK exception inside the block as its mapped gpuctl error."""
    import botocore.exceptions as bx

    try:
        yield
    except (bx.BotoCoreError, bx.ClientError) as exc:
        raise map_error(exc, **context) from None
