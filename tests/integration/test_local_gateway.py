"""The local API gateway: requests become REST proxy events, proxy responses become HTTP."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from infra.local.gateway import MAX_REQUEST_BODY_BYTES
from infra.local.stack import LocalStack

pytestmark = pytest.mark.dynamodb

TIMEOUT = 10


def echo(stack: LocalStack, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = requests.request(method, f"{stack.api_url}{path}", timeout=TIMEOUT, **kwargs)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def raw_request(
    stack: LocalStack, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b""
) -> http.client.HTTPResponse:
    """Send a request with repeated headers, which requests cannot express."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.api_port, timeout=TIMEOUT)
    connection.putrequest(method, path)
    for name, value in headers:
        connection.putheader(name, value)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


# The request side -----------------------------------------------------------------


def test_path_parameters_keep_the_encoding_the_client_sent(local_stack: LocalStack) -> None:
    event = echo(local_stack, "GET", "/things/a%2Fb/parts/7")["event"]

    assert event["pathParameters"] == {"thing_id": "a%2Fb", "part_id": "7"}


def test_resource_is_the_route_template(local_stack: LocalStack) -> None:
    event = echo(local_stack, "GET", "/things/t-1/parts/7")["event"]

    assert event["resource"] == "/things/{thing_id}/parts/{part_id}"


def test_literal_route_wins_over_a_parameter(local_stack: LocalStack) -> None:
    event = echo(local_stack, "GET", "/things/special")["event"]

    assert event["resource"] == "/things/special"


def test_trailing_slash_matches_the_route(local_stack: LocalStack) -> None:
    event = echo(local_stack, "GET", "/things/")["event"]

    assert event["resource"] == "/things"


def test_query_string_values_are_decoded(local_stack: LocalStack) -> None:
    event = echo(local_stack, "GET", "/things?q=blue%20mug&empty=")["event"]

    assert event["queryStringParameters"] == {"q": "blue mug", "empty": ""}


def test_repeated_query_parameter_keeps_every_value(local_stack: LocalStack) -> None:
    event = echo(local_stack, "GET", "/things?tag=a&tag=b")["event"]

    assert (event["queryStringParameters"], event["multiValueQueryStringParameters"]) == (
        {"tag": "b"},
        {"tag": ["a", "b"]},
    )


def test_no_query_string_gives_null_parameters(local_stack: LocalStack) -> None:
    event = echo(local_stack, "GET", "/things")["event"]

    assert (event["queryStringParameters"], event["multiValueQueryStringParameters"]) == (
        None,
        None,
    )


def test_headers_reach_the_function(local_stack: LocalStack) -> None:
    event = echo(local_stack, "GET", "/things", headers={"X-Trace": "one"})["event"]

    assert event["headers"]["X-Trace"] == "one"


def test_repeated_headers_are_all_in_multi_value_headers(local_stack: LocalStack) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", local_stack.api_port, timeout=TIMEOUT)
    connection.putrequest("GET", "/things")
    connection.putheader("X-Multi", "1")
    connection.putheader("X-Multi", "2")
    connection.endheaders()
    event = json.loads(connection.getresponse().read())["event"]
    connection.close()

    assert (event["headers"]["X-Multi"], event["multiValueHeaders"]["X-Multi"]) == (
        "2",
        ["1", "2"],
    )


def test_text_body_arrives_as_sent(local_stack: LocalStack) -> None:
    body = json.dumps({"name": "mug", "price": 1250})
    event = echo(
        local_stack, "POST", "/things", data=body, headers={"Content-Type": "application/json"}
    )["event"]

    assert (event["httpMethod"], event["body"], event["isBase64Encoded"]) == ("POST", body, False)


def test_binary_body_arrives_base64_encoded(local_stack: LocalStack) -> None:
    payload = bytes([0xFF, 0xFE, 0x00, 0x80])
    event = echo(local_stack, "POST", "/things", data=payload)["event"]

    assert (event["isBase64Encoded"], base64.b64decode(event["body"])) == (True, payload)


def test_request_context_names_stage_resource_and_caller(local_stack: LocalStack) -> None:
    context = echo(local_stack, "GET", "/things/t-1")["event"]["requestContext"]

    assert {
        "stage": context["stage"],
        "resourcePath": context["resourcePath"],
        "httpMethod": context["httpMethod"],
        "path": context["path"],
        "sourceIp": context["identity"]["sourceIp"],
        "has_request_id": bool(context["requestId"]),
    } == {
        "stage": "test",
        "resourcePath": "/things/{thing_id}",
        "httpMethod": "GET",
        "path": "/test/things/t-1",
        "sourceIp": "127.0.0.1",
        "has_request_id": True,
    }


def test_handler_gets_a_lambda_context(local_stack: LocalStack) -> None:
    context = echo(local_stack, "GET", "/things")["context"]
    name = local_stack.template.local_name("EchoFunction")

    assert (
        context["function_name"],
        context["memory_limit_in_mb"],
        context["invoked_function_arn"].endswith(f":function:{name}"),
        bool(context["aws_request_id"]),
    ) == (name, 256, True, True)


def test_remaining_time_counts_down_from_the_template_timeout(local_stack: LocalStack) -> None:
    remaining = echo(local_stack, "GET", "/things")["context"]["remaining_time_in_millis"]

    assert 500 < remaining <= 1000


def test_function_sees_its_template_environment(local_stack: LocalStack) -> None:
    environment = echo(local_stack, "GET", "/things")["environment"]

    assert {
        "ITEMS_TABLE": environment["ITEMS_TABLE"],
        "AWS_ENDPOINT_URL_DYNAMODB": environment["AWS_ENDPOINT_URL_DYNAMODB"],
        "AWS_ENDPOINT_URL_SQS": environment["AWS_ENDPOINT_URL_SQS"],
        "AWS_DEFAULT_REGION": environment["AWS_DEFAULT_REGION"],
    } == {
        "ITEMS_TABLE": local_stack.table_names["ItemsTable"],
        "AWS_ENDPOINT_URL_DYNAMODB": local_stack.dynamodb_endpoint_url,
        "AWS_ENDPOINT_URL_SQS": local_stack.moto_endpoint_url,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def test_handler_module_is_imported_once_and_reused(local_stack: LocalStack) -> None:
    first = echo(local_stack, "GET", "/things")["process"]
    second = echo(local_stack, "GET", "/things")["process"]

    assert (second["init_pid"], second["invocations"]) == (
        first["init_pid"],
        first["invocations"] + 1,
    )


def test_function_runs_outside_the_test_process(local_stack: LocalStack) -> None:
    process = echo(local_stack, "GET", "/things")["process"]

    assert process["pid"] in local_stack.runners["EchoFunction"].process_ids


# The response side ----------------------------------------------------------------


def test_status_headers_and_body_come_back(local_stack: LocalStack) -> None:
    response = requests.get(f"{local_stack.api_url}/behave/headers", timeout=TIMEOUT)

    assert (response.status_code, response.headers["X-Single"], response.text) == (
        201,
        "one",
        "created",
    )


def test_multi_value_response_headers_come_back_as_repeated_headers(
    local_stack: LocalStack,
) -> None:
    response = raw_request(local_stack, "GET", "/behave/headers", [])

    assert response.msg.get_all("Set-Cookie") == ["a=1", "b=2"]


def test_base64_response_body_is_decoded(local_stack: LocalStack) -> None:
    response = requests.get(f"{local_stack.api_url}/behave/binary", timeout=TIMEOUT)

    assert response.content == bytes(range(256))


def test_any_method_route_accepts_every_method(local_stack: LocalStack) -> None:
    response = requests.patch(f"{local_stack.api_url}/behave/headers", timeout=TIMEOUT)

    assert response.status_code == 201


def test_concurrent_requests_are_all_answered(local_stack: LocalStack) -> None:
    def get(index: int) -> int:
        url = f"{local_stack.api_url}/things/t-{index}"
        return requests.get(url, timeout=TIMEOUT).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(get, range(12)))

    assert statuses == [200] * 12


# Errors ---------------------------------------------------------------------------


def test_unknown_path_is_404(local_stack: LocalStack) -> None:
    response = requests.get(f"{local_stack.api_url}/no/such/route", timeout=TIMEOUT)

    assert (response.status_code, response.json()) == (404, {"message": "Not Found"})


def test_known_path_with_another_method_is_405(local_stack: LocalStack) -> None:
    response = requests.delete(f"{local_stack.api_url}/things", timeout=TIMEOUT)

    assert (response.status_code, response.headers["Allow"], response.json()) == (
        405,
        "GET, POST",
        {"message": "Method Not Allowed"},
    )


def test_handler_exception_is_502(local_stack: LocalStack) -> None:
    response = requests.get(f"{local_stack.api_url}/behave/crash", timeout=TIMEOUT)

    assert (response.status_code, response.json()) == (
        502,
        {"message": "Internal server error"},
    )


def test_malformed_proxy_response_is_502(local_stack: LocalStack) -> None:
    response = requests.get(f"{local_stack.api_url}/behave/malformed", timeout=TIMEOUT)

    assert (response.status_code, response.json()) == (
        502,
        {"message": "Internal server error"},
    )


def test_handler_past_its_timeout_is_502_and_the_next_request_works(
    local_stack: LocalStack,
) -> None:
    slow = requests.get(f"{local_stack.api_url}/behave/slow", timeout=TIMEOUT)
    after = requests.get(f"{local_stack.api_url}/things", timeout=TIMEOUT)

    assert (slow.status_code, after.status_code) == (502, 200)


def test_body_over_ten_megabytes_is_413(local_stack: LocalStack) -> None:
    body = b"x" * (MAX_REQUEST_BODY_BYTES + 1)

    response = requests.post(f"{local_stack.api_url}/things", data=body, timeout=TIMEOUT)

    assert (response.status_code, response.json()) == (
        413,
        {"message": "Request Entity Too Large"},
    )


def test_chunked_body_over_ten_megabytes_is_413(local_stack: LocalStack) -> None:
    chunk = b"x" * (1024 * 1024)

    def body() -> Iterator[bytes]:
        for _ in range(11):
            yield chunk

    response = requests.post(f"{local_stack.api_url}/things", data=body(), timeout=TIMEOUT)

    assert response.status_code == 413


def test_body_at_the_limit_passes_the_gateway(local_stack: LocalStack) -> None:
    # Lambda's own 6 MB payload limit then fails the invocation: 502, not 413.
    body = b"x" * MAX_REQUEST_BODY_BYTES

    response = requests.post(f"{local_stack.api_url}/things", data=body, timeout=TIMEOUT)

    assert response.status_code != 413
