"""Bad input and broken credentials: one line, one hint, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpuctl.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    NotFoundError,
    ProviderError,
    QuotaError,
)
from gpuctl.providers.aws_errors import classify, map_error, quota_name

from .helpers import client_error, inject
from .test_launch import drive, spec


def one_line(error: Any) -> None:
    assert error.message and error.hint
    assert "\n" not in error.message and "\n" not in error.hint
    assert "Traceback" not in error.one_line()


@pytest.fixture
def no_credentials(aws: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    empty = tmp_path / "aws-config"
    empty.write_text("")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return empty


def test_check_passes_with_credentials(make_provider: Any) -> None:
    make_provider().check()


def test_no_credentials_says_which_chain_was_tried(
    make_provider: Any, no_credentials: Path
) -> None:
    provider = make_provider()
    with pytest.raises(CredentialsError) as err:
        provider.check()
    one_line(err.value)
    assert err.value.message == "no AWS credentials found"
    assert "AWS_ACCESS_KEY_ID" in err.value.hint and str(no_credentials) in err.value.hint
    assert "aws configure" in err.value.hint and "aws sso login" in err.value.hint

    listing = provider.list_instances()  # beside other providers' results, not instead
    assert listing.instances == ()
    ((where, reason),) = listing.errors  # one problem, not one per region
    assert where == "us-east-1, us-west-2" and reason.startswith("no AWS credentials found (")

    with pytest.raises(CredentialsError):
        drive(provider.launch(spec()))


def test_expired_sso_session(make_provider: Any, no_credentials: Path) -> None:
    no_credentials.write_text(
        "[profile team]\n"
        "sso_start_url = https://example.awsapps.com/start\n"
        "sso_region = us-east-1\n"
        "sso_account_id = 123456789012\n"
        "sso_role_name = Trainer\n"
        "region = us-east-1\n"
    )
    provider = make_provider(aws_profile="team")
    with pytest.raises(CredentialsError) as err:
        provider.check()
    one_line(err.value)
    assert "SSO session for profile 'team'" in err.value.message
    assert err.value.hint == "run `aws sso login --profile team` and try again"


def test_unknown_aws_profile(make_provider: Any, no_credentials: Path) -> None:
    with pytest.raises(CredentialsError) as err:
        make_provider(aws_profile="nope").check()
    one_line(err.value)
    assert "AWS profile 'nope' is not configured" in err.value.message


def test_expired_keys_and_denied_calls_in_listing(make_provider: Any) -> None:
    provider = make_provider(regions=["us-east-1", "us-west-2"])

    def fail(region: str, params: dict[str, Any]) -> Exception:
        if region == "us-east-1":
            return client_error("RequestExpired", "Request has expired.", "DescribeInstances")
        return client_error(
            "UnauthorizedOperation",
            "You are not authorized to perform this operation. Encoded authorization failure "
            "message: AbCdEf0123456789",
            "DescribeInstances",
        )

    inject(provider, "DescribeInstances", fail)
    errors = dict(provider.list_instances().errors)
    assert "have expired" in errors["us-east-1"]
    assert "AWS denied" in errors["us-west-2"] and "AbCdEf" not in errors["us-west-2"]
    assert "ec2:Describe*" in errors["us-west-2"]


@pytest.mark.parametrize(
    ("code", "cls", "kind", "needle"),
    [
        ("InsufficientInstanceCapacity", CapacityError, "capacity", "no capacity"),
        ("Unsupported", CapacityError, "capacity", "no capacity"),
        ("VcpuLimitExceeded", QuotaError, "quota", "quota reached"),
        ("MaxSpotInstanceCountExceeded", QuotaError, "quota", "quota reached"),
        ("OptInRequired", ConfigError, "region", "not enabled"),
        ("InvalidAMIID.NotFound", ConfigError, "region", "image not found"),
        ("InvalidInstanceID.NotFound", NotFoundError, "fatal", "instance not found"),
        ("RequestLimitExceeded", ProviderError, "fatal", "throttling"),
        ("InternalError", ProviderError, "fatal", "InternalError"),
    ],
)
def test_error_map(code: str, cls: type, kind: str, needle: str) -> None:
    exc = client_error(code, "Something\n  happened.")
    mapped = map_error(exc, region="us-east-1", instance_type="p4d.24xlarge", spot=True)
    assert type(mapped) is cls and classify(exc) == kind
    assert needle in mapped.message
    one_line(mapped)


def test_connection_errors_and_quota_names() -> None:
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

    down = map_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), region="eu-west-1")
    assert isinstance(down, ProviderError) and "127.0.0.1:9" in down.message
    slow = map_error(ConnectTimeoutError(endpoint_url="https://x"), region="eu-west-1")
    assert "did not answer in time" in slow.message
    assert quota_name("g6e.xlarge", spot=False) == "Running On-Demand G and VT instances"
    assert quota_name("p5.48xlarge", spot=True) == "All P Spot Instance Requests"
    assert quota_name("p5.48xlarge", spot=False) == "Running On-Demand P instances"
    quota = map_error(
        client_error("VcpuLimitExceeded", "limit of 0"),
        region="us-west-2",
        instance_type="p5.48xlarge",
    )
    assert "Running On-Demand P instances" in quota.hint
    assert "servicequotas/home/services/ec2/quotas?region=us-west-2" in quota.hint
