"""Offline checks of infra/template.yaml: SAM translation, cfn-lint and least privilege.

cfn-lint 1.58 validates the untranslated SAM template without checking the properties of
function ``Events``, so a misspelled or invalid stream setting passes there. The template
is therefore also translated with aws-sam-translator and the resulting CloudFormation is
linted.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint
from cfnlint.config import ManualArgs
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"
REGION = "us-east-1"

# `sam package` uploads a local CodeUri and writes its S3 URI in its place, and the
# translator accepts only that packaged form.
PACKAGED_CODE_URI = "s3://bucket/key.zip"

# Rule id -> reason for ignoring it. Empty: the template passes every error and warning rule.
IGNORED_LINT_RULES: dict[str, str] = {}

# The only AWS managed policies a function role may attach, by name.
ALLOWED_MANAGED_POLICY_ARNS: dict[str, str] = {
    # CloudWatch Logs for every function.
    "AWSLambdaBasicExecutionRole": (
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ),
    # `Tracing: Active` sends X-Ray segments.
    "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    # SAM attaches it for a DynamoDB stream event. It allows reading every stream in the
    # account (Resource "*"), and SAM offers nothing narrower short of a hand-written role.
    "AWSLambdaDynamoDBExecutionRole": (
        "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole"
    ),
    # SAM attaches it for an SQS event: receive and delete on every queue (Resource "*").
    "AWSLambdaSQSQueueExecutionRole": (
        "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"
    ),
}

# SAM policy templates whose fixed action sets are wider than any function here needs
# (aws-sam-translator 1.115): DynamoDBCrudPolicy and DynamoDBReadPolicy include Scan, and
# DynamoDBCrudPolicy and DynamoDBWritePolicy include BatchWriteItem. List actions inline.
BROAD_SAM_POLICY_TEMPLATES = frozenset(
    {
        "DynamoDBCrudPolicy",
        "DynamoDBReadPolicy",
        "DynamoDBWritePolicy",
        "DynamoDBRestoreFromBackupPolicy",
        "DynamoDBReconfigurePolicy",
        "DynamoDBBackupFullAccessPolicy",
    }
)

STREAM_MAPPING_ID = "ProjectorFunctionEventsStream"

EXPECTED_RESOURCES = [
    ("ApiFunction", "AWS::Lambda::Function"),
    ("ProjectorFunction", "AWS::Lambda::Function"),
    ("EventsTable", "AWS::DynamoDB::Table"),
    ("OrderSummariesTable", "AWS::DynamoDB::Table"),
    ("ProjectorDeadLetterQueue", "AWS::SQS::Queue"),
    ("OrdersApi", "AWS::ApiGateway::RestApi"),
    (STREAM_MAPPING_ID, "AWS::Lambda::EventSourceMapping"),
]

EXPECTED_HANDLERS = [
    ("ApiFunction", "lambdas.api.handler"),
    ("ProjectorFunction", "lambdas.projector.handler"),
]

Template = dict[str, Any]


class OfflineManagedPolicyLoader:
    """Stand-in for samtranslator's ManagedPolicyLoader that never calls IAM.

    ``transform`` calls ``load()`` only for a policy name missing from the map bundled
    with the translator, and expects a mapping of policy name to ARN.
    """

    def load(self) -> dict[str, str]:
        return dict(ALLOWED_MANAGED_POLICY_ARNS)


def load_sam_template() -> Template:
    template: Template = yaml_parse(TEMPLATE_PATH.read_text())
    return template


def with_packaged_code(sam: Template) -> Template:
    """Return a copy of ``sam`` with every local CodeUri replaced by an S3 URI."""
    packaged = copy.deepcopy(sam)
    function_globals = packaged.get("Globals", {}).get("Function", {})
    if "CodeUri" in function_globals:
        function_globals["CodeUri"] = PACKAGED_CODE_URI
    for resource in packaged["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function" and "CodeUri" in properties:
            properties["CodeUri"] = PACKAGED_CODE_URI
    return packaged


def translate(sam: Template) -> Template:
    """Translate a SAM template to CloudFormation. AWS_DEFAULT_REGION must be set."""
    cloudformation: Template = transform(with_packaged_code(sam), {}, OfflineManagedPolicyLoader())
    return cloudformation


def lint_findings(template_text: str) -> list[str]:
    """Run cfn-lint's error (E) and warning (W) rules, its default set, on a template."""
    config = ManualArgs(regions=[REGION], ignore_checks=list(IGNORED_LINT_RULES))
    findings = []
    for match in lint(template_text, config=config):
        # The template path names the translated resource, where a line number of the
        # generated JSON would not. Parse errors carry no path.
        location = getattr(match, "path_string", "") or f"line {match.linenumber}"
        findings.append(f"{match.rule.id} at {location}: {match.message}")
    return findings


def lint_rule_ids(template_text: str) -> set[str]:
    config = ManualArgs(regions=[REGION])
    return {match.rule.id for match in lint(template_text, config=config)}


def to_json(cloudformation: Template) -> str:
    # Indented so that a finding without a template path still gets a useful line number.
    return json.dumps(cloudformation, indent=2)


def stream_event_properties(sam: Template) -> dict[str, Any]:
    function = sam["Resources"]["ProjectorFunction"]
    properties: dict[str, Any] = function["Properties"]["Events"]["EventsStream"]["Properties"]
    return properties


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def iam_statements(cloudformation: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, statement) for every statement of every IAM role and policy."""
    for logical_id, resource in cloudformation["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            documents = [
                (f"{logical_id}/{policy['PolicyName']}", policy["PolicyDocument"])
                for policy in properties.get("Policies", [])
            ]
        elif resource["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            documents = [(logical_id, properties["PolicyDocument"])]
        else:
            continue
        for location, document in documents:
            for index, statement in enumerate(as_list(document["Statement"])):
                yield f"{location}/{statement.get('Sid', index)}", statement


def lowest_allowed_value(cloudformation: Template, value: Any) -> int:
    """Return the lowest value a numeric property can take, following a parameter Ref.

    A missing value and a parameter without MinValue count as -1: for MaximumRetryAttempts
    on a stream, Lambda then retries a failed record until it expires (24 hours).
    """
    if value is None:
        return -1
    if isinstance(value, dict):
        parameter = cloudformation["Parameters"][value["Ref"]]
        return int(parameter.get("MinValue", -1))
    return int(value)


TABLE_IDS = [
    logical_id
    for logical_id, resource in load_sam_template()["Resources"].items()
    if resource["Type"] in {"AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"}
]


@pytest.fixture(scope="module", autouse=True)
def aws_region() -> Iterator[None]:
    # The translator reads the region through boto3 to pick the ARN partition.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        yield


@pytest.fixture(scope="module")
def sam_template() -> Template:
    return load_sam_template()


@pytest.fixture(scope="module")
def cloudformation(sam_template: Template) -> Template:
    return translate(sam_template)


@pytest.fixture(scope="module")
def resources(cloudformation: Template) -> dict[str, dict[str, Any]]:
    translated_resources: dict[str, dict[str, Any]] = cloudformation["Resources"]
    return translated_resources


@pytest.fixture(scope="module")
def stream_mapping(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    properties: dict[str, Any] = resources[STREAM_MAPPING_ID]["Properties"]
    return properties


@pytest.fixture(scope="module")
def raw_lint_findings() -> list[str]:
    return lint_findings(TEMPLATE_PATH.read_text())


@pytest.fixture(scope="module")
def translated_lint_findings(cloudformation: Template) -> list[str]:
    return lint_findings(to_json(cloudformation))


# Translation


@pytest.mark.parametrize(("logical_id", "resource_type"), EXPECTED_RESOURCES)
def test_translation_has_resource(
    resources: dict[str, dict[str, Any]], logical_id: str, resource_type: str
) -> None:
    assert resources.get(logical_id, {}).get("Type") == resource_type


@pytest.mark.parametrize(("logical_id", "handler"), EXPECTED_HANDLERS)
def test_function_handler(
    resources: dict[str, dict[str, Any]], logical_id: str, handler: str
) -> None:
    assert resources[logical_id]["Properties"]["Handler"] == handler


def test_stream_mapping_reads_events_table_stream(stream_mapping: dict[str, Any]) -> None:
    assert stream_mapping["EventSourceArn"] == {"Fn::GetAtt": ["EventsTable", "StreamArn"]}


def test_stream_mapping_invokes_projector(stream_mapping: dict[str, Any]) -> None:
    assert stream_mapping["FunctionName"] == {"Ref": "ProjectorFunction"}


def test_stream_mapping_reports_batch_item_failures(stream_mapping: dict[str, Any]) -> None:
    assert stream_mapping.get("FunctionResponseTypes") == ["ReportBatchItemFailures"]


def test_stream_mapping_bisects_failed_batches(stream_mapping: dict[str, Any]) -> None:
    assert stream_mapping.get("BisectBatchOnFunctionError") is True


def test_stream_mapping_retries_are_bounded(
    cloudformation: Template, stream_mapping: dict[str, Any]
) -> None:
    retries = stream_mapping.get("MaximumRetryAttempts")
    assert lowest_allowed_value(cloudformation, retries) >= 0


def test_stream_mapping_sends_failures_to_dlq(stream_mapping: dict[str, Any]) -> None:
    on_failure = stream_mapping.get("DestinationConfig", {}).get("OnFailure", {})
    assert on_failure.get("Destination") == {"Fn::GetAtt": ["ProjectorDeadLetterQueue", "Arn"]}


def test_stream_mapping_selects_only_tip_items(stream_mapping: dict[str, Any]) -> None:
    patterns = [
        json.loads(stream_filter["Pattern"])
        for stream_filter in stream_mapping["FilterCriteria"]["Filters"]
    ]
    tip_kinds = [
        pattern.get("dynamodb", {}).get("NewImage", {}).get("kind") for pattern in patterns
    ]
    assert tip_kinds == [{"S": ["tip"]}]


# cfn-lint


def test_raw_template_passes_lint(raw_lint_findings: list[str]) -> None:
    assert raw_lint_findings == []


def test_translated_template_passes_lint(translated_lint_findings: list[str]) -> None:
    assert translated_lint_findings == []


def test_translator_rejects_misspelled_stream_property(sam_template: Template) -> None:
    broken = copy.deepcopy(sam_template)
    properties = stream_event_properties(broken)
    properties["BisectBatchOnFunctionErrors"] = properties.pop("BisectBatchOnFunctionError", True)

    with pytest.raises(InvalidDocumentException, match="BisectBatchOnFunctionErrors"):
        translate(broken)


INVALID_STREAM_VALUES = [
    ("StartingPosition", "OLDEST", "E3031"),
    ("FunctionResponseTypes", ["ReportBatchItemFailure"], "E3030"),
]


@pytest.fixture(scope="module")
def invalid_stream_lint_rule_ids(sam_template: Template) -> set[str]:
    # One broken copy carries every invalid value, so cfn-lint runs once for all cases.
    broken = copy.deepcopy(sam_template)
    for property_name, invalid_value, _ in INVALID_STREAM_VALUES:
        stream_event_properties(broken)[property_name] = invalid_value
    return lint_rule_ids(to_json(translate(broken)))


@pytest.mark.parametrize(
    "rule_id",
    [rule_id for _, _, rule_id in INVALID_STREAM_VALUES],
    ids=[property_name for property_name, _, _ in INVALID_STREAM_VALUES],
)
def test_lint_rejects_invalid_stream_value(
    invalid_stream_lint_rule_ids: set[str], rule_id: str
) -> None:
    assert rule_id in invalid_stream_lint_rule_ids


# Least privilege and data safety


def test_no_wildcard_actions(cloudformation: Template) -> None:
    wildcards = [
        f"{location}: {action}"
        for location, statement in iam_statements(cloudformation)
        for action in as_list(statement.get("Action", []))
        if action == "*" or action.endswith(":*")
    ]
    assert wildcards == []


def test_no_wildcard_resource_for_dynamodb_or_sqs(cloudformation: Template) -> None:
    wildcards = [
        f"{location}: {resource}"
        for location, statement in iam_statements(cloudformation)
        if any(action.startswith(("dynamodb:", "sqs:")) for action in as_list(statement["Action"]))
        for resource in as_list(statement.get("Resource", []))
        if isinstance(resource, str) and "*" in resource
    ]
    assert wildcards == []


def test_no_broad_sam_policy_templates(sam_template: Template) -> None:
    broad = [
        f"{logical_id}: {template_name}"
        for logical_id, resource in sam_template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
        for policy in as_list(resource["Properties"].get("Policies", []))
        if isinstance(policy, dict)
        for template_name in policy
        if template_name in BROAD_SAM_POLICY_TEMPLATES
    ]
    assert broad == []


def test_only_allowed_managed_policies(cloudformation: Template) -> None:
    allowed = set(ALLOWED_MANAGED_POLICY_ARNS.values())
    unexpected = [
        f"{logical_id}: {arn}"
        for logical_id, resource in cloudformation["Resources"].items()
        if resource["Type"] == "AWS::IAM::Role"
        for arn in resource["Properties"].get("ManagedPolicyArns", [])
        if arn not in allowed
    ]
    assert unexpected == []


@pytest.mark.parametrize("table_id", TABLE_IDS)
def test_table_has_point_in_time_recovery(
    resources: dict[str, dict[str, Any]], table_id: str
) -> None:
    recovery = resources[table_id]["Properties"].get("PointInTimeRecoverySpecification", {})
    assert recovery.get("PointInTimeRecoveryEnabled") is True


@pytest.mark.parametrize("table_id", TABLE_IDS)
def test_table_has_server_side_encryption(
    resources: dict[str, dict[str, Any]], table_id: str
) -> None:
    encryption = resources[table_id]["Properties"].get("SSESpecification", {})
    assert encryption.get("SSEEnabled") is True


def test_events_table_streams_new_images(resources: dict[str, dict[str, Any]]) -> None:
    stream = resources["EventsTable"]["Properties"].get("StreamSpecification", {})
    assert stream.get("StreamViewType") == "NEW_IMAGE"
