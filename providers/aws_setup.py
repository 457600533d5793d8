"""Per-region prerequisites of an AWS launch: image, key pair, firewall, subnets.

Each helper is idempotent (find, else create, tagged gpuctl:managed=true) so key pairs
and security groups are created once and reused by every later launch. They take a
ready botocore EC2 client and raise botocore/gpuctl errors; the provider maps them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuctl.errors import ConfigError

from .aws_catalog import GpuFacts

MANAGED_TAG = {"Key": "gpuctl:managed", "Value": "true"}
SECURITY_GROUP_NAME = "gpuctl-ssh"
KEY_FILE = "aws_ed25519"
CHECKIP_URL = "https://checkip.amazonaws.com"

# Deep Learning AMIs by name pattern, best first; owner "amazon". The date at the end
# of each name orders releases. (pattern, ssh user). PyTorch images on Ubuntu first:
# the trainer needs torch and the agent prefers apt-based images.
DLAMI_X86: tuple[tuple[str, str], ...] = (
    ("Deep Learning OSS Nvidia Driver AMI GPU PyTorch * (Ubuntu 22.04) *", "ubuntu"),
    ("Deep Learning OSS Nvidia Driver AMI GPU PyTorch * (Ubuntu 24.04) *", "ubuntu"),
    ("Deep Learning OSS Nvidia Driver AMI GPU PyTorch * (Amazon Linux 2023) *", "ec2-user"),
    ("Deep Learning AMI GPU PyTorch * (Ubuntu 20.04) *", "ubuntu"),
    ("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *", "ubuntu"),
)
DLAMI_ARM: tuple[tuple[str, str], ...] = (
    ("Deep Learning ARM64 AMI OSS Nvidia Driver GPU PyTorch * (Ubuntu 22.04) *", "ubuntu"),
    ("Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *", "ubuntu"),
)
# Tiers: the PyTorch images (first three x86 patterns) rank above the older and base ones.
_TIER = {
    DLAMI_X86[0][0]: 0,
    DLAMI_X86[1][0]: 0,
    DLAMI_X86[2][0]: 1,
    DLAMI_X86[3][0]: 2,
    DLAMI_X86[4][0]: 3,
    DLAMI_ARM[0][0]: 0,
    DLAMI_ARM[1][0]: 1,
}


@dataclass(frozen=True)
class Image:
    """The AMI a launch uses, with what the launch needs to know about it."""

    id: str
    name: str
    ssh_user: str
    root_device: str
    root_size_gb: int


def ssh_user_for(name: str) -> str:
    """Login user implied by an AMI name (Ubuntu: ubuntu, Amazon Linux: ec2-user...)."""
    lowered = name.lower()
    for needle, user in (
        ("ubuntu", "ubuntu"),
        ("amazon linux", "ec2-user"),
        ("amzn", "ec2-user"),
        ("al2023", "ec2-user"),
        ("debian", "admin"),
        ("rocky", "rocky"),
        ("centos", "centos"),
        ("fedora", "fedora"),
    ):
        if needle in lowered:
            return user
    return "ec2-user"


def _glob_match(pattern: str, name: str) -> bool:
    regex = "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"
    return re.match(regex, name) is not None


def _image_from(item: dict[str, Any], user: str) -> Image:
    root = item.get("RootDeviceName") or "/dev/sda1"
    size = 0
    for mapping in item.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == root:
            size = int(mapping.get("Ebs", {}).get("VolumeSize") or 0)
    return Image(
        id=item["ImageId"],
        name=item.get("Name") or item["ImageId"],
        ssh_user=user,
        root_device=root,
        root_size_gb=size,
    )


def find_image(
    ec2: Any,
    region: str,
    facts: GpuFacts,
    *,
    image: str | None = None,
    owners: list[str] | None = None,
) -> Image:
    """The AMI to launch: `image` (an id or a name pattern) or the newest Deep Learning AMI.

    Raises ConfigError when nothing matches, naming what was looked for.
    """
    arch = "arm64" if facts.architectures == ("arm64",) else "x86_64"
    if image and image.startswith("ami-"):
        found = ec2.describe_images(ImageIds=[image]).get("Images", [])
        if not found:
            raise ConfigError(
                f"image {image} not found in {region}",
                hint="AMIs are regional: pass one from that region, or omit --image",
            )
        return _image_from(found[0], ssh_user_for(found[0].get("Name") or ""))
    if image:
        patterns: tuple[tuple[str, str], ...] = ((image, ssh_user_for(image)),)
        owner_list = owners or ["self", "amazon"]
    else:
        if facts.manufacturer and facts.manufacturer.upper() != "NVIDIA":
            raise ConfigError(
                f"no Deep Learning AMI for {facts.instance_type} "
                f"({facts.manufacturer} {facts.gpu_name})",
                hint="pass --image with an AMI id or name pattern for that GPU",
            )
        patterns = DLAMI_ARM if arch == "arm64" else DLAMI_X86
        owner_list = owners or ["amazon"]
    response = ec2.describe_images(
        Owners=owner_list,
        Filters=[
            {"Name": "name", "Values": [p for p, _ in patterns]},
            {"Name": "state", "Values": ["available"]},
            {"Name": "architecture", "Values": [arch]},
        ],
    )
    best: tuple[int, str, dict[str, Any], str] | None = None
    for item in response.get("Images", []):
        name = item.get("Name") or ""
        for pattern, user in patterns:
            if not _glob_match(pattern, name):
                continue
            tier = _TIER.get(pattern, 0)
            created = item.get("CreationDate") or ""  # ISO 8601: sorts as text
            if best is None or tier < best[0] or (tier == best[0] and created > best[1]):
                best = (tier, created, item, user)
            break
    if best is None:
        wanted = image or "Deep Learning AMI (PyTorch, NVIDIA)"
        raise ConfigError(
            f"no image matching '{wanted}' ({arch}) owned by {', '.join(owner_list)} in {region}",
            hint="pass --image ami-... (or a name pattern), or set image_owners in the profile",
        )
    return _image_from(best[2], best[3])


# -- key pair ---------------------------------------------------------------------


@dataclass(frozen=True)
class LocalKey:
    """gpuctl's own SSH key: one private key, imported into every region as one name."""

    path: Path
    public_openssh: str

    @property
    def name(self) -> str:
        """Key pair name in AWS, derived from the public key so machines never collide."""
        digest = hashlib.sha256(self.public_openssh.split()[1].encode()).hexdigest()
        return f"gpuctl-{digest[:10]}"


def local_key(keys_dir: Path, *, create: bool = True) -> LocalKey | None:
    """Load (or create once, mode 0400) the ed25519 key gpuctl uses for AWS machines."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = keys_dir / KEY_FILE
    if not path.exists():
        if not create:
            return None
        keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(keys_dir, 0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        tmp = keys_dir / f".{KEY_FILE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o400)
        try:
            os.link(tmp, path)  # atomic, and never replaces a key another process made
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    private = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return LocalKey(path=path, public_openssh=public.decode())


def ensure_key_pair(ec2: Any, key: LocalKey, installation: str | None = None) -> str:
    """Import gpuctl's public key into this region once; returns the key pair name.

    The key lives in one data directory, so its pair is tagged with that installation."""
    from botocore.exceptions import ClientError

    try:
        ec2.describe_key_pairs(KeyNames=[key.name])
        return key.name
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "InvalidKeyPair.NotFound":
            raise
    tags = [MANAGED_TAG]
    if installation:
        tags.append({"Key": "gpuctl:installation", "Value": installation})
    try:
        ec2.import_key_pair(
            KeyName=key.name,
            PublicKeyMaterial=key.public_openssh.encode(),
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}],
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "InvalidKeyPair.Duplicate":
            raise
    return key.name


def check_key_pair(ec2: Any, name: str, region: str) -> None:
    """The user's own --key-name must exist in the region we launch in."""
    from botocore.exceptions import ClientError

    try:
        ec2.describe_key_pairs(KeyNames=[name])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "InvalidKeyPair.NotFound":
            raise ConfigError(
                f"key pair '{name}' does not exist in {region}",
                hint="key pairs are regional: import it there, or omit --key-name to let "
                "gpuctl manage its own key",
            ) from None
        raise


# -- network ------------------------------------------------------------------------


def normalise_cidr(value: str) -> str:
    """'1.2.3.4' -> '1.2.3.4/32'; rejects anything that is not an address or network."""
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ConfigError(
            f"--ssh-cidr '{value}' is not an IP address or CIDR block",
            hint="use your public address, e.g. 203.0.113.7/32",
        ) from None


# Narrower than this is "one site"; wider opens SSH to much of the internet.
OPEN_PREFIX = {4: 24, 6: 48}


def wide_cidr(cidr: str) -> bool:
    """True for blocks wider than one site (0.0.0.0/0, ::/0, a /16...)."""
    net = ipaddress.ip_network(cidr, strict=False)
    return net.prefixlen < OPEN_PREFIX[net.version]


def check_ssh_cidr(cidr: str, *, allow_open: bool) -> str | None:
    """Refuse an SSH source wider than one site unless allowed; the warning to show if so."""
    if not wide_cidr(cidr):
        return None
    if not allow_open:
        raise ConfigError(
            f"--ssh-cidr {cidr} opens SSH to a large part of the internet",
            hint="use your own address (e.g. 203.0.113.7/32), or pass --allow-open-ssh "
            "if you really mean it",
        )
    return f"SSH is open to {cidr}: anyone there can try to log in (keys only)"


def caller_cidr(timeout: float = 3.0, url: str = CHECKIP_URL) -> str:
    """This machine's public IPv4 as a /32, from checkip.amazonaws.com (or `url`)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read(64).decode("ascii", "replace").strip()
        return str(ipaddress.ip_network(f"{ipaddress.ip_address(text)}", strict=False))
    except (OSError, ValueError):
        raise ConfigError(
            f"could not detect your public IP address ({url} did not answer)",
            hint="pass --ssh-cidr YOUR.PUBLIC.IP/32 (or set ssh_cidr in the profile) so SSH "
            "is opened to you only",
        ) from None


def default_vpc(ec2: Any, region: str) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}]).get("Vpcs", [])
    if not vpcs:
        raise ConfigError(
            f"region {region} has no default VPC",
            hint=f"create one with `aws ec2 create-default-vpc --region {region}`",
        )
    return str(vpcs[0]["VpcId"])


def default_subnets(ec2: Any, vpc_id: str) -> dict[str, str]:
    """AZ -> default subnet id (default subnets give instances a public IP)."""
    subnets = ec2.describe_subnets(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "default-for-az", "Values": ["true"]},
        ]
    ).get("Subnets", [])
    return {s["AvailabilityZone"]: s["SubnetId"] for s in subnets}


def ensure_security_group(
    ec2: Any, vpc_id: str, cidr: str, installation: str | None = None, *, retry: bool = True
) -> str:
    """The reusable gpuctl-ssh group, with an SSH rule for `cidr` (added if missing).

    The group is shared by every installation on the account (one per VPC); it carries the
    installation that made it, and each SSH rule names the installation that added it, so a
    colleague can tell whose address a rule lets in.
    """
    from botocore.exceptions import ClientError

    groups = ec2.describe_security_groups(
        Filters=[
            {"Name": "group-name", "Values": [SECURITY_GROUP_NAME]},
            {"Name": "vpc-id", "Values": [vpc_id]},
        ]
    ).get("SecurityGroups", [])
    tags = [MANAGED_TAG]
    if installation:
        tags.append({"Key": "gpuctl:installation", "Value": installation})
    if groups:
        group = groups[0]
    else:
        try:
            created = ec2.create_security_group(
                GroupName=SECURITY_GROUP_NAME,
                Description="gpuctl: SSH from the launching machine only",
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
            )
            group = {"GroupId": created["GroupId"], "IpPermissions": []}
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidGroup.Duplicate" or not retry:
                raise
            return ensure_security_group(ec2, vpc_id, cidr, installation, retry=False)
    group_id = str(group["GroupId"])
    if not _has_ssh_rule(group.get("IpPermissions", []), cidr):
        v6 = ":" in cidr
        note = f"gpuctl caller, installation {installation}" if installation else "gpuctl caller"
        ranges = (
            {"Ipv6Ranges": [{"CidrIpv6": cidr, "Description": note}]}
            if v6
            else {"IpRanges": [{"CidrIp": cidr, "Description": note}]}
        )
        try:
            ec2.authorize_security_group_ingress(
                GroupId=group_id,
                IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges}],
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidPermission.Duplicate":
                raise
    return group_id


def revoke_ssh_rules(ec2: Any, group_id: str, cidrs: Sequence[str]) -> list[str]:
    """Drop the SSH rules for `cidrs` that the group still has; returns those dropped.

    For the caller's earlier addresses: one it no longer holds may be someone else's now.
    """
    from botocore.exceptions import ClientError

    if not cidrs:
        return []
    groups = ec2.describe_security_groups(GroupIds=[group_id]).get("SecurityGroups", [])
    permissions = groups[0].get("IpPermissions", []) if groups else []
    dropped = []
    for cidr in cidrs:
        if not _has_ssh_rule(permissions, cidr):
            continue
        key, field = ("Ipv6Ranges", "CidrIpv6") if ":" in cidr else ("IpRanges", "CidrIp")
        try:
            ec2.revoke_security_group_ingress(
                GroupId=group_id,
                IpPermissions=[
                    {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, key: [{field: cidr}]}
                ],
            )
            dropped.append(cidr)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidPermission.NotFound":
                raise
    return dropped


def _has_ssh_rule(permissions: list[dict[str, Any]], cidr: str) -> bool:
    for perm in permissions:
        if perm.get("IpProtocol") != "tcp" or perm.get("FromPort") != 22:
            continue
        cidrs = [r.get("CidrIp") for r in perm.get("IpRanges", [])]
        cidrs += [r.get("CidrIpv6") for r in perm.get("Ipv6Ranges", [])]
        if cidr in cidrs:
            return True
    return False
