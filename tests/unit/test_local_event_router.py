"""Routing EventBridge events to the template's rules with our pattern matcher."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.local.event_router import (
    EventRouter,
    envelope,
    event_rules,
    matching_targets,
    target_body,
)
from infra.local.template import LOCAL_ACCOUNT, Template, TemplateError


def template_with_rules(*rules: dict[str, Any]) -> Template:
    resources: dict[str, Any] = {
        "Bus": {
            "Type": "AWS::Events::EventBus",
            "Properties": {"Name": {"Fn::Sub": "${AWS::StackName}-bus"}},
        },
        "MugQueue": {"Type": "AWS::SQS::Queue"},
        "AllQueue": {"Type": "AWS::SQS::Queue"},
    }
    for index, properties in enumerate(rules):
        resources[f"Rule{index}"] = {
            "Type": "AWS::Events::Rule",
            "Properties": {"EventBusName": {"Ref": "Bus"}, **properties},
        }
    return Template(body={"Resources": resources}, name_prefix="u-")


def sqs_target(queue: str, **more: Any) -> dict[str, Any]:
    return {"Id": queue, "Arn": {"Fn::GetAtt": [queue, "Arn"]}, **more}


MUG_RULE = {
    "EventPattern": {"source": ["orders.order"], "detail": {"lines": {"sku": ["MUG-RED"]}}},
    "Targets": [sqs_target("MugQueue")],
}
DELIVERED = {
    "id": "7f1c",
    "time": "2026-12-04T10:00:00Z",
    "version": "0",
    "detail-type": "OrderPlaced",
    "source": "orders.order",
    "region": "us-east-1",
    "resources": [],
    "detail": {
        "order_id": "o-1",
        "lines": [{"sku": "TEA-GREEN", "quantity": 1}, {"sku": "MUG-RED", "quantity": 2}],
    },
}


class RecordingSqs:
    """Fake of boto3's SQS client that records what the router sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **request: Any) -> dict[str, Any]:
        self.sent.append(request)
        return {"MessageId": str(len(self.sent))}


def router_for(template: Template, sqs: RecordingSqs) -> EventRouter:
    return EventRouter(
        bus_name="u-bus",
        router_queue_url="http://127.0.0.1:1/123456789012/router",
        rules=event_rules(template),
        sqs_client=sqs,
        queue_urls_by_name={"u-MugQueue": "url-mug", "u-AllQueue": "url-all"},
    )


def test_rule_on_array_field_routes_event() -> None:
    sqs = RecordingSqs()

    done = router_for(template_with_rules(MUG_RULE), sqs).route(json.dumps(DELIVERED))

    assert done
    assert [request["QueueUrl"] for request in sqs.sent] == ["url-mug"]


def test_event_without_sku_not_routed() -> None:
    sqs = RecordingSqs()
    event = {**DELIVERED, "detail": {"order_id": "o-2", "lines": [{"sku": "TEA-GREEN"}]}}

    done = router_for(template_with_rules(MUG_RULE), sqs).route(json.dumps(event))

    assert done
    assert sqs.sent == []


def test_routed_body_is_the_full_envelope_with_account() -> None:
    sqs = RecordingSqs()

    router_for(template_with_rules(MUG_RULE), sqs).route(json.dumps(DELIVERED))

    body = json.loads(sqs.sent[0]["MessageBody"])
    assert list(body) == [
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    ]
    assert body["account"] == LOCAL_ACCOUNT


def test_every_matching_rule_gets_the_event() -> None:
    everything = {
        "EventPattern": {"source": [{"prefix": "orders."}]},
        "Targets": [sqs_target("AllQueue")],
    }
    rules = event_rules(template_with_rules(MUG_RULE, everything))

    matched = matching_targets(envelope(DELIVERED), rules, "u-bus")

    assert [target.queue_name for _, target in matched] == ["u-MugQueue", "u-AllQueue"]


def test_rule_of_another_bus_does_not_match() -> None:
    rules = event_rules(template_with_rules(MUG_RULE))

    assert matching_targets(envelope(DELIVERED), rules, "default") == []


def test_disabled_rule_is_not_read() -> None:
    assert event_rules(template_with_rules({**MUG_RULE, "State": "DISABLED"})) == []


def test_input_path_sends_part_of_the_event() -> None:
    rule = {**MUG_RULE, "Targets": [sqs_target("MugQueue", InputPath="$.detail")]}
    (parsed,) = event_rules(template_with_rules(rule))

    body = target_body(envelope(DELIVERED), parsed.targets[0])

    assert json.loads(body) == DELIVERED["detail"]


def test_constant_input_replaces_the_event() -> None:
    rule = {**MUG_RULE, "Targets": [sqs_target("MugQueue", Input='{"kind": "wake-up"}')]}
    (parsed,) = event_rules(template_with_rules(rule))

    assert target_body(envelope(DELIVERED), parsed.targets[0]) == '{"kind": "wake-up"}'


def test_non_sqs_target_is_left_out() -> None:
    rule = {**MUG_RULE, "Targets": [{"Id": "fn", "Arn": "arn:aws:lambda:us-east-1:1:function:f"}]}

    (parsed,) = event_rules(template_with_rules(rule))

    assert parsed.targets == ()


def test_invalid_pattern_names_the_rule() -> None:
    rule = {**MUG_RULE, "EventPattern": {"source": "orders.order"}}

    with pytest.raises(TemplateError, match="Rule0"):
        event_rules(template_with_rules(rule))


def test_real_template_routes_order_events_to_the_saga_queue() -> None:
    template = Template.load(name_prefix="r-")
    (rule,) = event_rules(template)
    placed = envelope({**DELIVERED, "detail": {"order_id": "o-1"}})
    saga_event = envelope({**DELIVERED, "source": "orders.saga", "detail-type": "Finished"})

    assert (rule.bus_name, [target.queue_name for target in rule.targets]) == (
        "r-orders",
        ["r-SagaQueue"],
    )
    assert (
        rule.arn
        == f"arn:aws:events:us-east-1:{LOCAL_ACCOUNT}:rule/r-orders/r-OrderEventsToSagaRule"
    )
    assert [
        bool(matching_targets(event, [rule], "r-orders")) for event in (placed, saga_event)
    ] == [
        True,
        False,
    ]


def test_body_that_is_not_json_is_dropped_not_retried() -> None:
    sqs = RecordingSqs()

    assert router_for(template_with_rules(MUG_RULE), sqs).route("not json")
    assert sqs.sent == []
