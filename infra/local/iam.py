"""Check each function's AWS calls against its IAM statements in the template.

DynamoDB Local and moto accept every call, so a function whose role lacks a
permission works on the laptop and fails with ``AccessDeniedException`` once
deployed. The local stack closes that gap: each function host installs an
:class:`AccessGuard` on boto3's default session, built from the ``Allow`` and
``Deny`` statements of that function's ``Policies``, and a DynamoDB, SQS or
EventBridge call that the statements do not grant fails as AWS would fail it.

What is emulated: actions and resources with ``*`` and ``?`` wildcards, and an
explicit ``Deny`` over any ``Allow``. A request needs an action per resource, as
in AWS. A ``TransactWriteItems`` needs ``PutItem``, ``UpdateItem``, ``DeleteItem``
or ``ConditionCheckItem`` on each item's table, a ``Query`` on an index needs the
index's ARN, and a ``BatchWriteItem`` needs ``BatchWriteItem`` on each table.
What is not: ``Condition`` blocks (a statement with one counts as if it had
none), ``NotAction`` and ``NotResource`` (refused when the policy is read),
resource policies, and services other than those three (SES calls pass).
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import ClientError

from infra.local.template import LOCAL_ACCOUNT, LOCAL_REGION, Template, TemplateError

ENFORCED_SERVICES = frozenset({"dynamodb", "sqs", "events"})
_TRANSACT_WRITE_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
_SQS_BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_DENIED_CODES = {"dynamodb": "AccessDeniedException", "sqs": "AccessDenied"}


@dataclass(frozen=True)
class Permission:
    """One action on one resource, as IAM evaluates a request."""

    action: str
    resource: str

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}"


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> Statement:
        unsupported = {"NotAction", "NotResource", "NotPrincipal"} & set(raw)
        if unsupported:
            raise TemplateError(f"{where}: {', '.join(sorted(unsupported))} is not emulated")
        effect = raw.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise TemplateError(f"{where}: Effect must be Allow or Deny, not {effect!r}")
        actions = _strings(raw.get("Action"), f"{where}: Action")
        resources = _strings(raw.get("Resource", "*"), f"{where}: Resource")
        return cls(effect=effect, actions=actions, resources=resources)

    def matches(self, permission: Permission) -> bool:
        # Action names are case-insensitive in IAM; resource ARNs are not.
        action = permission.action.lower()
        return any(_glob(pattern.lower(), action) for pattern in self.actions) and any(
            _glob(pattern, permission.resource) for pattern in self.resources
        )


@dataclass(frozen=True)
class FunctionPolicy:
    """The identity-based statements of one function's execution role: its inline
    statements and the SAM policy templates it names, resolved to local ARNs."""

    function_id: str
    statements: tuple[Statement, ...]

    @classmethod
    def from_template(cls, template: Template, function_id: str) -> FunctionPolicy:
        resource = template.resources_of_type("AWS::Serverless::Function").get(function_id)
        if resource is None:
            raise TemplateError(f"the template has no function {function_id!r}")
        statements: list[Statement] = []
        for index, policy in enumerate(_as_list(resource["Properties"].get("Policies", []))):
            document = _policy_document(policy)
            for number, raw in enumerate(_as_list(document.get("Statement", []))):
                where = f"{function_id} policy {index} statement {raw.get('Sid', number)}"
                statements.append(Statement.parse(template.resolve(raw), where))
        return cls(function_id=function_id, statements=tuple(statements))

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"Effect": s.effect, "Action": list(s.actions), "Resource": list(s.resources)}
            for s in self.statements
        ]

    @classmethod
    def from_json(cls, function_id: str, raw: Sequence[Mapping[str, Any]]) -> FunctionPolicy:
        return cls(
            function_id=function_id,
            statements=tuple(
                Statement.parse(item, f"{function_id} statement {n}") for n, item in enumerate(raw)
            ),
        )

    def allows(self, permission: Permission) -> bool:
        matching = [s.effect for s in self.statements if s.matches(permission)]
        return "Allow" in matching and "Deny" not in matching


def required_permissions(
    service: str,
    operation: str,
    params: Mapping[str, Any],
    *,
    region: str = LOCAL_REGION,
    account: str = LOCAL_ACCOUNT,
) -> list[Permission]:
    """Return what IAM checks for one API call (empty for a service not emulated)."""
    if service == "dynamodb":
        return _dynamodb_permissions(operation, params, region, account)
    if service == "sqs":
        # SQS has no IAM actions for its batch calls: SendMessageBatch needs
        # sqs:SendMessage, and so on (Amazon SQS Developer Guide, "batch actions").
        action = _SQS_BATCH_ACTIONS.get(operation, operation)
        return [Permission(f"sqs:{action}", _queue_arn(params, region, account))]
    if service == "events":
        if operation == "PutEvents":
            buses = {entry.get("EventBusName") or "default" for entry in params.get("Entries", [])}
            return [
                Permission("events:PutEvents", _bus_arn(bus, region, account))
                for bus in sorted(buses)
            ]
        return [Permission(f"events:{operation}", "*")]
    return []


def _dynamodb_permissions(
    operation: str, params: Mapping[str, Any], region: str, account: str
) -> list[Permission]:
    def table(name: str) -> str:
        return (
            name if name.startswith("arn:") else f"arn:aws:dynamodb:{region}:{account}:table/{name}"
        )

    if operation in ("BatchWriteItem", "BatchGetItem"):
        return [
            Permission(f"dynamodb:{operation}", table(name))
            for name in sorted(params.get("RequestItems", {}))
        ]
    if operation == "TransactWriteItems":
        permissions = []
        for item in params.get("TransactItems", []):
            for kind, action in _TRANSACT_WRITE_ACTIONS.items():
                if kind in item:
                    permissions.append(
                        Permission(f"dynamodb:{action}", table(item[kind]["TableName"]))
                    )
        return _unique(permissions)
    if operation == "TransactGetItems":
        return _unique(
            Permission("dynamodb:GetItem", table(item["Get"]["TableName"]))
            for item in params.get("TransactItems", [])
        )
    name = params.get("TableName") or params.get("ResourceArn")
    if not name:
        return [Permission(f"dynamodb:{operation}", "*")]
    resource = table(str(name))
    if operation in ("Query", "Scan") and params.get("IndexName"):
        resource = f"{resource}/index/{params['IndexName']}"
    return [Permission(f"dynamodb:{operation}", resource)]


def _queue_arn(params: Mapping[str, Any], region: str, account: str) -> str:
    url = params.get("QueueUrl")
    if url:
        parts = [part for part in urlparse(str(url)).path.split("/") if part]
        if len(parts) >= 2:
            return f"arn:aws:sqs:{region}:{parts[-2]}:{parts[-1]}"
    name = params.get("QueueName")
    return f"arn:aws:sqs:{region}:{account}:{name}" if name else "*"


def _bus_arn(bus: str, region: str, account: str) -> str:
    return bus if bus.startswith("arn:") else f"arn:aws:events:{region}:{account}:event-bus/{bus}"


@dataclass
class AccessGuard:
    """Checks every boto3 call of a session against a function's policy.

    With ``enforce``, a call that needs a permission the policy does not grant
    raises the ``ClientError`` AWS would return, and nothing is sent. Without it
    the call goes through and the permission is only recorded in ``denied``.
    """

    policy: FunctionPolicy
    enforce: bool = True
    checked: list[Permission] = field(default_factory=list)
    denied: list[Permission] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def install(self, session: Any) -> None:
        """Register on a boto3 ``Session``; clients created from it afterwards are checked."""
        session.events.register("before-parameter-build", self._before_call)

    def _before_call(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        if service not in ENFORCED_SERVICES:
            return
        needed = required_permissions(service, model.name, params)
        denied = [permission for permission in needed if not self.policy.allows(permission)]
        with self._lock:
            self.checked.extend(needed)
            self.denied.extend(denied)
        if denied and self.enforce:
            response: Any = {
                "Error": {
                    "Code": _DENIED_CODES.get(service, "AccessDeniedException"),
                    "Message": self.message(denied[0]),
                },
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
            raise ClientError(response, model.name)

    def message(self, permission: Permission) -> str:
        role = f"{self.policy.function_id}Role"
        return (
            f"User: arn:aws:sts::{LOCAL_ACCOUNT}:assumed-role/{role}/{self.policy.function_id} "
            f"is not authorized to perform: {permission.action} on resource: "
            f"{permission.resource} because no identity-based policy allows the "
            f"{permission.action} action (local check of the template's Policies for "
            f"{self.policy.function_id})"
        )


def _policy_document(policy: Any) -> Mapping[str, Any]:
    """Return the statements of an inline policy or of a SAM policy template."""
    if isinstance(policy, Mapping) and "Statement" in policy:
        return policy
    if isinstance(policy, Mapping) and len(policy) == 1:
        from samtranslator.policy_template_processor.processor import PolicyTemplatesProcessor

        ((name, parameters),) = policy.items()
        processor = PolicyTemplatesProcessor(
            PolicyTemplatesProcessor.get_default_policy_templates_json()
        )
        if processor.has(name):
            document: Mapping[str, Any] = processor.convert(name, parameters or {})
            return document
    # NOTE: a managed policy (an ARN or AWS name) cannot be read offline, so what it
    # grants is missing here. The template attaches only the basic execution role,
    # which grants CloudWatch Logs, a service this check leaves alone.
    return {}


def _glob(pattern: str, value: str) -> bool:
    # IAM wildcards: * is any run of characters (slashes included), ? is one character.
    # fnmatch would also read [...] as a character class, which IAM does not.
    return re.fullmatch(fnmatch.translate(pattern.replace("[", "[[]")), value) is not None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    values = _as_list(value)
    if not values or not all(isinstance(item, str) for item in values):
        raise TemplateError(f"{where} must be a string or a list of strings, not {value!r}")
    return tuple(values)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _unique(permissions: Iterable[Permission]) -> list[Permission]:
    return list(dict.fromkeys(permissions))
