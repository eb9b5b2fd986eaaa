"""The Kafka ACLs stream-ctr's principal needs, and nothing more: its topics and its consumer groups.

Every topic the service reads, writes or creates is named ``<STREAM_CTR_TOPIC_PREFIX>ctr.*`` (declared in
``topics/``) or ``<STREAM_CTR_APP_ID>-*`` (the Faust apps' changelogs and their assignor topics); every consumer
group is ``<STREAM_CTR_APP_ID>-<role>``. :func:`service_acls` allows exactly these, as prefixed ACLs, so a broker
with an authorizer can give the service's principal these and no other resource. ``stream-ctr acls`` prints them
(and applies them with ``--apply``, as a principal allowed to create ACLs).

>>> from stream_ctr.config import Settings
>>> for acl in service_acls(Settings(), "User:svc"):
...     print(acl.resource_pattern.resource_type.name, acl.resource_pattern.resource_name, acl.operation.name)
TOPIC ctr. READ
TOPIC ctr. WRITE
TOPIC ctr. CREATE
TOPIC ctr. DESCRIBE
TOPIC ctr. DESCRIBE_CONFIGS
TOPIC stream-ctr- READ
TOPIC stream-ctr- WRITE
TOPIC stream-ctr- CREATE
TOPIC stream-ctr- DESCRIBE
TOPIC stream-ctr- DESCRIBE_CONFIGS
GROUP stream-ctr- READ
GROUP stream-ctr- DESCRIBE
"""

from __future__ import annotations

from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

from stream_ctr.broker.connection import Kafka, KafkaTarget
from stream_ctr.config import Settings

__all__ = ["apply_acls", "describe_acl", "service_acls"]

_TOPIC_OPS = (
    ACLOperation.READ,
    ACLOperation.WRITE,
    ACLOperation.CREATE,
    ACLOperation.DESCRIBE,
    ACLOperation.DESCRIBE_CONFIGS,
)
_GROUP_OPS = (ACLOperation.READ, ACLOperation.DESCRIBE)


def service_acls(settings: Settings, principal: str) -> list[ACL]:
    """The ACLs of ``principal`` (``User:<name>``) for the service configured by ``settings``."""

    def allow(kind: ResourceType, prefix: str, op: ACLOperation) -> ACL:
        pattern = ResourcePattern(kind, prefix, pattern_type=ACLResourcePatternType.PREFIXED)
        return ACL(principal, "*", op, ACLPermissionType.ALLOW, pattern)

    apps = f"{settings.app_id}-"
    return (
        [allow(ResourceType.TOPIC, settings.topic("ctr."), op) for op in _TOPIC_OPS]
        + [allow(ResourceType.TOPIC, apps, op) for op in _TOPIC_OPS]
        + [allow(ResourceType.GROUP, apps, op) for op in _GROUP_OPS]
    )


def describe_acl(acl: ACL) -> str:
    """One line, as ``kafka-acls --list`` would describe it."""
    pattern = acl.resource_pattern
    return (
        f"{acl.permission_type.name} {acl.principal} {acl.operation.name} on {pattern.resource_type.name} "
        f"{pattern.resource_name}* (prefixed)"
    )


def apply_acls(kafka: KafkaTarget, acls: list[ACL]) -> None:
    """Create ``acls`` on the broker (idempotent: an existing ACL is not duplicated)."""
    admin = Kafka.of(kafka).admin(request_timeout_ms=30000)
    try:
        result = admin.create_acls(acls)
        if result["failed"]:
            raise RuntimeError(
                "creating ACLs failed: " + "; ".join(f"{describe_acl(a)}: {e}" for a, e in result["failed"])
            )
    finally:
        admin.close()
