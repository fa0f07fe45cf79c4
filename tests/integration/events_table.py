"""An events table for the event-store tests that write large histories."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from infra.local.template import Template

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def create_events_table_without_stream(client: DynamoDBClient) -> str:
    """Create the template's events table, without its stream, under a unique name.

    DynamoDB Local 3.3 slows down as stream-enabled tables accumulate data. On a
    busy 2-core machine, writing 2,000 events to each of five new tables took 3,
    4, 6, 8 and 13 s with streams, and 1 to 2 s each without. In one trial,
    deleting the earlier tables did not restore the speed. The recorder never
    reads the stream, so the large histories go to a table without one.
    """
    request = Template.load(name_prefix=f"t{uuid.uuid4().hex[:10]}-").create_table_requests()[
        "EventsTable"
    ]
    request.pop("StreamSpecification", None)
    client.create_table(**request)
    client.get_waiter("table_exists").wait(
        TableName=request["TableName"], WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    table_name: str = request["TableName"]
    return table_name
