"""Read the SAM template so the local stack runs what it declares, nothing listed twice.

Only the parts the local stack needs are interpreted: parameters (their defaults),
DynamoDB tables, SQS queues, EventBridge buses and rules, and serverless functions with
their environment and event sources. ``Ref``, ``Fn::GetAtt`` and ``Fn::Sub`` are resolved
against the local names of those resources, as CloudFormation would: ``Ref`` of a queue
is its URL once the stack has created it (``queue_urls``), ``Ref`` of a bus its name,
``AWS::StackName`` the stack's name.

ARNs carry ``LOCAL_ACCOUNT``, which is moto's default account, so an ARN resolved here
names the same queue or bus as the ARN moto reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "template.yaml"
LOCAL_REGION = "us-east-1"
# moto's DEFAULT_ACCOUNT_ID, the account moto uses unless MOTO_ACCOUNT_ID names another.
LOCAL_ACCOUNT = "123456789012"
DEFAULT_STACK_NAME = "orders-local"

_SUB_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


class TemplateError(ValueError):
    """The template uses something the local stack cannot interpret."""


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    handler: str
    timeout: int
    environment: dict[str, str]
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory_size: int = 128
    code_dir: Path | None = None
    reserved_concurrency: int | None = None

    def events_of_type(self, event_type: str) -> dict[str, dict[str, Any]]:
        return {
            name: event["Properties"]
            for name, event in self.events.items()
            if event.get("Type") == event_type
        }


@dataclass
class Template:
    """The parsed template plus the local name of every table and queue."""

    body: dict[str, Any]
    name_prefix: str = ""
    path: Path | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    """Parameter values that win over the template's defaults, like ``--parameter-overrides``."""
    stack_name: str = ""
    """``AWS::StackName``; empty means the name prefix without its trailing dash, or
    ``orders-local`` without a prefix."""
    queue_urls: dict[str, str] = field(default_factory=dict)
    """Logical id -> URL of the queues created so far; ``Ref`` of a queue resolves to it."""

    @classmethod
    def load(
        cls,
        path: Path = TEMPLATE_PATH,
        name_prefix: str = "",
        parameters: Mapping[str, str] | None = None,
        stack_name: str = "",
    ) -> Template:
        return cls(
            body=yaml_parse(path.read_text()),
            name_prefix=name_prefix,
            path=path,
            parameters=dict(parameters or {}),
            stack_name=stack_name,
        )

    @property
    def resolved_stack_name(self) -> str:
        return self.stack_name or self.name_prefix.strip("-_") or DEFAULT_STACK_NAME

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.body["Resources"]
        return resources

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.resources.items()
            if resource["Type"] == resource_type
        }

    def local_name(self, logical_id: str) -> str:
        """Name a table or queue locally: the prefix plus the logical id."""
        if logical_id not in self.resources:
            raise TemplateError(f"the template has no resource {logical_id!r}")
        return f"{self.name_prefix}{logical_id}"

    def table_names(self) -> dict[str, str]:
        return {
            logical_id: self.local_name(logical_id)
            for logical_id in self.resources_of_type("AWS::DynamoDB::Table")
        }

    def queue_names(self) -> dict[str, str]:
        """Name each queue locally; a FIFO queue's name must end in ``.fifo``."""
        names = {}
        for logical_id, resource in self.resources_of_type("AWS::SQS::Queue").items():
            fifo = bool(resource.get("Properties", {}).get("FifoQueue"))
            names[logical_id] = self.local_name(logical_id) + (".fifo" if fifo else "")
        return names

    def event_bus_names(self) -> dict[str, str]:
        """Logical id -> name of each ``AWS::Events::EventBus``."""
        return {
            logical_id: self._bus_name(logical_id)
            for logical_id in self.resources_of_type("AWS::Events::EventBus")
        }

    def _bus_name(self, logical_id: str) -> str:
        properties = self.resources[logical_id].get("Properties", {})
        if "Name" not in properties:
            raise TemplateError(f"{logical_id}: an AWS::Events::EventBus needs a Name")
        return str(self.resolve(properties["Name"]))

    def rule_name(self, logical_id: str) -> str:
        properties = self.resources[logical_id].get("Properties", {})
        return str(self.resolve(properties.get("Name") or self.local_name(logical_id)))

    def parameter_problems(self) -> list[str]:
        """Check each parameter's value as CloudFormation would; describe what is wrong."""
        problems = []
        for name, declaration in self.body.get("Parameters", {}).items():
            value = self.parameters.get(name, declaration.get("Default"))
            if value is None:
                problems.append(f"parameter {name} has no default; give it a value")
                continue
            problems.extend(_parameter_value_problems(name, declaration, str(value)))
        return problems

    def api_stage(self, rest_api_id: str | None) -> str:
        """The stage of the API that ``rest_api_id`` (a resolved ``RestApiId``) names.

        Events without ``RestApiId`` belong to SAM's implicit API, whose stage is ``Prod``.
        """
        for logical_id, resource in self.resources_of_type("AWS::Serverless::Api").items():
            if self.local_name(logical_id) == rest_api_id:
                return str(self.resolve(resource.get("Properties", {}).get("StageName", "Prod")))
        return "Prod"

    # Intrinsic functions ----------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """Resolve the intrinsic functions in ``value`` against the local resources."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._resolve_ref(argument)
            if key == "Fn::GetAtt":
                logical_id, attribute = (
                    argument.split(".", 1) if isinstance(argument, str) else argument
                )
                return self._resolve_get_att(logical_id, attribute)
            if key == "Fn::Sub":
                return self._resolve_sub(argument)
        return {key: self.resolve(item) for key, item in value.items()}

    def _resolve_ref(self, name: str) -> str:
        parameters = self.body.get("Parameters", {})
        if name in parameters:
            if name in self.parameters:
                return self.parameters[name]
            return str(parameters[name].get("Default", ""))
        if name == "AWS::Region":
            return LOCAL_REGION
        if name == "AWS::AccountId":
            return LOCAL_ACCOUNT
        if name == "AWS::StackName":
            return self.resolved_stack_name
        if name == "AWS::Partition":
            return "aws"
        resource_type = self.resources.get(name, {}).get("Type")
        if resource_type == "AWS::SQS::Queue":
            # Before the stack created it, the queue's name is all there is to give.
            return self.queue_urls.get(name) or self.queue_names()[name]
        if resource_type == "AWS::Events::EventBus":
            return self._bus_name(name)
        if resource_type == "AWS::Events::Rule":
            return self.rule_name(name)
        return self.local_name(name)

    def _resolve_get_att(self, logical_id: str, attribute: str) -> str:
        resource_type = self.resources[logical_id]["Type"]
        name = self.local_name(logical_id)
        if resource_type == "AWS::DynamoDB::Table":
            if attribute == "Arn":
                return f"arn:aws:dynamodb:{LOCAL_REGION}:{LOCAL_ACCOUNT}:table/{name}"
            if attribute == "StreamArn":
                return f"arn:aws:dynamodb:{LOCAL_REGION}:{LOCAL_ACCOUNT}:table/{name}/stream"
        if resource_type == "AWS::SQS::Queue":
            name = self.queue_names()[logical_id]
            if attribute == "Arn":
                return f"arn:aws:sqs:{LOCAL_REGION}:{LOCAL_ACCOUNT}:{name}"
            if attribute == "QueueName":
                return name
        if resource_type == "AWS::Events::EventBus":
            bus = self._bus_name(logical_id)
            if attribute == "Arn":
                return f"arn:aws:events:{LOCAL_REGION}:{LOCAL_ACCOUNT}:event-bus/{bus}"
            if attribute == "Name":
                return bus
        if resource_type == "AWS::Events::Rule" and attribute == "Arn":
            return rule_arn(self, logical_id)
        raise TemplateError(f"cannot resolve Fn::GetAtt {logical_id}.{attribute} locally")

    def _resolve_sub(self, argument: str | list[Any]) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument

        def substitute(match: re.Match[str]) -> str:
            placeholder = match.group(1)
            if placeholder in variables:
                return str(self.resolve(variables[placeholder]))
            if "." in placeholder:
                logical_id, attribute = placeholder.split(".", 1)
                return self._resolve_get_att(logical_id, attribute)
            return self._resolve_ref(placeholder)

        return _SUB_PLACEHOLDER.sub(substitute, text)

    # Functions --------------------------------------------------------------------

    def functions(self) -> dict[str, FunctionSpec]:
        globals_ = self.body.get("Globals", {}).get("Function", {})
        specs = {}
        for logical_id, resource in self.resources_of_type("AWS::Serverless::Function").items():
            properties = {**globals_, **resource["Properties"]}
            environment = {
                **globals_.get("Environment", {}).get("Variables", {}),
                **resource["Properties"].get("Environment", {}).get("Variables", {}),
            }
            reserved = properties.get("ReservedConcurrentExecutions")
            specs[logical_id] = FunctionSpec(
                logical_id=logical_id,
                handler=properties["Handler"],
                timeout=int(properties.get("Timeout", 3)),
                environment={key: str(self.resolve(value)) for key, value in environment.items()},
                events=self.resolve(properties.get("Events", {})),
                memory_size=int(properties.get("MemorySize", 128)),
                code_dir=self._code_dir(properties.get("CodeUri")),
                reserved_concurrency=None if reserved is None else int(self.resolve(reserved)),
            )
        return specs

    def _code_dir(self, code_uri: Any) -> Path | None:
        """Resolve a local ``CodeUri`` against the template's folder, as ``sam build`` does."""
        if not isinstance(code_uri, str) or self.path is None or "://" in code_uri:
            return None
        return (self.path.parent / code_uri).resolve()

    # Tables -----------------------------------------------------------------------

    def create_table_requests(self) -> dict[str, dict[str, Any]]:
        """Return one ``CreateTable`` request per table, keyed by logical id."""
        requests = {}
        for logical_id, resource in self.resources_of_type("AWS::DynamoDB::Table").items():
            properties = resource["Properties"]
            request: dict[str, Any] = {
                "TableName": self.local_name(logical_id),
                "AttributeDefinitions": properties["AttributeDefinitions"],
                "KeySchema": properties["KeySchema"],
                "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
            }
            if "GlobalSecondaryIndexes" in properties:
                request["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
            stream = properties.get("StreamSpecification")
            if stream:
                request["StreamSpecification"] = {
                    "StreamEnabled": True,
                    "StreamViewType": stream["StreamViewType"],
                }
            requests[logical_id] = request
        return requests


def rule_arn(template: Template, logical_id: str) -> str:
    """A rule on a custom bus has the bus's name in its ARN; one on the default bus does not."""
    properties = template.resources[logical_id].get("Properties", {})
    bus = bus_name_of(template.resolve(properties.get("EventBusName", "default")))
    name = template.rule_name(logical_id)
    path = name if bus == "default" else f"{bus}/{name}"
    return f"arn:aws:events:{LOCAL_REGION}:{LOCAL_ACCOUNT}:rule/{path}"


def bus_name_of(name_or_arn: Any) -> str:
    """``EventBusName`` takes a bus's name or its ARN."""
    text = str(name_or_arn or "default")
    return text.split(":event-bus/", 1)[1] if ":event-bus/" in text else text


def _parameter_value_problems(name: str, declaration: Mapping[str, Any], value: str) -> list[str]:
    problems = []
    allowed = declaration.get("AllowedValues")
    if allowed is not None and value not in [str(item) for item in allowed]:
        problems.append(f"parameter {name}={value!r} is not one of {allowed}")
    pattern = declaration.get("AllowedPattern")
    if pattern is not None and re.fullmatch(str(pattern), value) is None:
        shown = "****" if declaration.get("NoEcho") else repr(value)
        problems.append(f"parameter {name}={shown} does not match {pattern}")
    if declaration.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            return [*problems, f"parameter {name}={value!r} is not a number"]
        low, high = declaration.get("MinValue"), declaration.get("MaxValue")
        if low is not None and number < float(low):
            problems.append(f"parameter {name}={value} is below its MinValue {low}")
        if high is not None and number > float(high):
            problems.append(f"parameter {name}={value} is above its MaxValue {high}")
    return problems


def create_tables(dynamodb_client: Any, template: Template) -> dict[str, str]:
    """Create every table the template declares, unless it exists; return logical id -> name."""
    existing = set(_list_table_names(dynamodb_client))
    for request in template.create_table_requests().values():
        if request["TableName"] not in existing:
            dynamodb_client.create_table(**request)
    for name in template.table_names().values():
        dynamodb_client.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
    return template.table_names()


def _list_table_names(dynamodb_client: Any) -> list[str]:
    names: list[str] = []
    paginator = dynamodb_client.get_paginator("list_tables")
    for page in paginator.paginate():
        names.extend(page["TableNames"])
    return names


def function_environment(spec: FunctionSpec, overrides: Mapping[str, str]) -> dict[str, str]:
    return {**spec.environment, **overrides}
