"""An API handler for the gateway tests that returns the event and context it received.

``/behave/{behaviour}`` misbehaves on request: ``crash`` raises, ``malformed`` returns
something that is not a proxy response, ``headers`` returns single and multi-value
headers, ``binary`` returns a base64 body, ``slow`` outlives the 1-second Timeout.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

INIT_PID = os.getpid()
invocations = 0


def handler(event: dict[str, Any], context: Any) -> Any:
    global invocations
    invocations += 1
    behaviour = (event.get("pathParameters") or {}).get("behaviour")
    if behaviour == "crash":
        raise RuntimeError("the echo handler was asked to crash")
    if behaviour == "malformed":
        return {"status": 200, "text": "not a proxy response"}
    if behaviour == "slow":
        time.sleep(5)
    if behaviour == "headers":
        return {
            "statusCode": 201,
            "headers": {"X-Single": "one", "Content-Type": "text/plain"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
            "body": "created",
        }
    if behaviour == "binary":
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/octet-stream"},
            "body": base64.b64encode(bytes(range(256))).decode(),
            "isBase64Encoded": True,
        }
    answer = {
        "event": event,
        "context": {
            "function_name": context.function_name,
            "aws_request_id": context.aws_request_id,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "remaining_time_in_millis": context.get_remaining_time_in_millis(),
        },
        "process": {"pid": os.getpid(), "init_pid": INIT_PID, "invocations": invocations},
        "environment": {
            name: os.environ.get(name)
            for name in (
                "ITEMS_TABLE",
                "AWS_ENDPOINT_URL_DYNAMODB",
                "AWS_ENDPOINT_URL_SQS",
                "AWS_DEFAULT_REGION",
                "AWS_LAMBDA_FUNCTION_NAME",
            )
        },
    }
    return {"statusCode": 200, "headers": {"X-Echo": "yes"}, "body": json.dumps(answer)}
