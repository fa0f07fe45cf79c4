"""How the local stack resolves the template: names, ARNs, parameters."""

from __future__ import annotations

from infra.local.template import DEFAULT_STACK_NAME, LOCAL_ACCOUNT, Template


def test_bus_name_uses_the_stack_name() -> None:
    template = Template.load(stack_name="shop")

    assert template.event_bus_names() == {"OrdersEventBus": "shop-orders"}


def test_stack_name_defaults_to_the_prefix_without_its_dash() -> None:
    assert Template.load(name_prefix="e2e1-").resolved_stack_name == "e2e1"


def test_stack_name_without_prefix_is_the_default() -> None:
    assert Template.load().resolved_stack_name == DEFAULT_STACK_NAME


def test_event_bus_name_reaches_the_functions() -> None:
    spec = Template.load(name_prefix="p-").functions()["PublisherFunction"]

    assert spec.environment["EVENT_BUS_NAME"] == "p-orders"


def test_queue_ref_is_the_url_once_the_queue_exists() -> None:
    template = Template.load(name_prefix="p-")
    template.queue_urls["ReservationQueue"] = "http://127.0.0.1:1/123456789012/p-ReservationQueue"

    spec = template.functions()["SagaFunction"]

    assert spec.environment["RESERVATION_QUEUE_URL"] == template.queue_urls["ReservationQueue"]


def test_queue_arn_names_moto_s_account() -> None:
    spec = Template.load(name_prefix="p-").functions()["SagaFunction"]
    (event,) = spec.events_of_type("SQS").values()

    assert event["Queue"] == f"arn:aws:sqs:us-east-1:{LOCAL_ACCOUNT}:p-SagaQueue"


def test_reserved_concurrency_is_read() -> None:
    assert Template.load().functions()["SagaFunction"].reserved_concurrency == 20


def test_parameters_without_default_are_reported() -> None:
    problems = Template.load().parameter_problems()

    assert [problem.split()[1] for problem in problems] == ["StripeApiKey", "CarrierApiUrl"]


def test_parameter_values_are_checked_against_the_template() -> None:
    template = Template.load(
        parameters={
            "StripeApiKey": "sk_test_local",
            "CarrierApiUrl": "http://127.0.0.1:9",
            "SagaRetries": "11",
        }
    )

    assert template.parameter_problems() == ["parameter SagaRetries=11 is above its MaxValue 10"]


def test_no_echo_parameter_value_is_not_shown() -> None:
    template = Template.load(
        parameters={"StripeApiKey": "not a key", "CarrierApiUrl": "http://127.0.0.1:9"}
    )

    (problem,) = template.parameter_problems()
    assert "not a key" not in problem
