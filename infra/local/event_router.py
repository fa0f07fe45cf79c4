"""EventBridge rules of the template, routed with our pattern matcher on moto's buses.

moto matches rule patterns itself, but misses fields inside arrays of objects
(``detail.lines[].sku``), and the bodies it delivers lack ``account``. So the template's
rules are not given to moto. Instead:

1. Each bus that a template rule listens on gets one catch-all rule in moto
   (``{"source": [{"prefix": ""}]}``) whose only target is an internal queue,
   ``<prefix><BusLogicalId>-router``. ``PutEvents`` on moto therefore leaves every event
   on that queue before it returns, so nothing put on the bus is lost.
2. One ``EventRouter`` thread per bus long-polls the internal queue and restores the
   complete EventBridge envelope (``version, id, detail-type, source, account, time,
   region, resources, detail``). It matches the event against every enabled template
   rule of the bus with :mod:`infra.local.event_pattern` and sends it to each matched
   rule's SQS targets, honouring ``Input`` and ``InputPath``.
3. The message is deleted from the internal queue only after every target accepted it.
   If a send fails, the event is routed again once the internal queue's visibility
   timeout (``ROUTER_VISIBILITY_SECONDS``) ends, so a target can get an event twice,
   which EventBridge's at-least-once delivery allows too.

An event that no rule matches is logged as a routing miss: at INFO level the first
time for each source and detail-type, at DEBUG level after that.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from infra.local.event_pattern import EventPattern, PatternError
from infra.local.template import (
    LOCAL_ACCOUNT,
    LOCAL_REGION,
    Template,
    TemplateError,
    bus_name_of,
    rule_arn,
)

logger = logging.getLogger("orders.local.events")

CATCH_ALL_PATTERN = '{"source": [{"prefix": ""}]}'
ROUTER_VISIBILITY_SECONDS = 5
ROUTER_WAIT_SECONDS = 1
# EventBridge rejects events over 256 KB, so a larger body cannot come from PutEvents.
MAX_EVENT_BYTES = 256 * 1024
ENVELOPE_FIELDS = (
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
)
_SUPPORTED_TARGET_KEYS = {"Id", "Arn", "Input", "InputPath", "SqsParameters"}
_SIMPLE_PATH = re.compile(r"^\$(\.[A-Za-z0-9_\-]+)*$")


class EventRouterError(RuntimeError):
    """Error raised when a rule or bus of the template cannot be routed locally."""


@dataclass(frozen=True)
class RuleTarget:
    target_id: str
    queue_arn: str
    input: str | None = None
    input_path: str | None = None
    message_group_id: str | None = None

    @property
    def queue_name(self) -> str:
        return self.queue_arn.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class EventRule:
    logical_id: str
    name: str
    arn: str
    bus_name: str
    pattern: EventPattern
    targets: tuple[RuleTarget, ...]


def event_rules(template: Template) -> list[EventRule]:
    """Read the enabled ``AWS::Events::Rule`` resources that the router can serve."""
    rules = []
    for logical_id, resource in template.resources_of_type("AWS::Events::Rule").items():
        properties = template.resolve(resource.get("Properties", {}))
        if str(properties.get("State", "ENABLED")).upper() == "DISABLED":
            logger.info("%s: disabled in the template", logical_id)
            continue
        raw_pattern = properties.get("EventPattern")
        if raw_pattern is None:
            logger.warning(
                "%s: only rules with an EventPattern run locally (no schedules); skipped",
                logical_id,
            )
            continue
        text = raw_pattern if isinstance(raw_pattern, str) else json.dumps(raw_pattern)
        try:
            pattern = EventPattern.parse(text)
        except PatternError as error:
            raise TemplateError(f"{logical_id}: EventPattern: {error}") from None
        rules.append(
            EventRule(
                logical_id=logical_id,
                name=template.rule_name(logical_id),
                arn=rule_arn(template, logical_id),
                bus_name=bus_name_of(properties.get("EventBusName")),
                pattern=pattern,
                targets=_targets(logical_id, properties.get("Targets") or []),
            )
        )
    return rules


def _targets(logical_id: str, raw_targets: Sequence[Mapping[str, Any]]) -> tuple[RuleTarget, ...]:
    targets = []
    for raw in raw_targets:
        target_id = str(raw.get("Id", ""))
        where = f"{logical_id}.Targets[{target_id}]"
        ignored = sorted(set(raw) - _SUPPORTED_TARGET_KEYS)
        if ignored:
            logger.warning("%s: the local router ignores %s", where, ", ".join(ignored))
        arn = str(raw.get("Arn", ""))
        if not arn.startswith("arn:aws:sqs:"):
            logger.warning(
                "%s: only SQS targets run locally, so %s gets no events", where, arn or "?"
            )
            continue
        input_path = raw.get("InputPath")
        if input_path is not None and not _SIMPLE_PATH.match(str(input_path)):
            raise TemplateError(
                f"{where}: InputPath {input_path!r} is not a plain path such as '$.detail'"
            )
        group = (raw.get("SqsParameters") or {}).get("MessageGroupId")
        targets.append(
            RuleTarget(
                target_id=target_id,
                queue_arn=arn,
                input=None if raw.get("Input") is None else str(raw["Input"]),
                input_path=None if input_path is None else str(input_path),
                message_group_id=None if group is None else str(group),
            )
        )
    return tuple(targets)


def envelope(delivered: Mapping[str, Any]) -> dict[str, Any]:
    """The event as EventBridge delivers it, from the body moto delivered (no ``account``)."""
    complete = {
        "version": "0",
        "account": LOCAL_ACCOUNT,
        "region": LOCAL_REGION,
        "resources": [],
        **delivered,
    }
    ordered = {name: complete[name] for name in ENVELOPE_FIELDS if name in complete}
    ordered.update({name: value for name, value in complete.items() if name not in ordered})
    return ordered


def matching_targets(
    event: Mapping[str, Any], rules: Sequence[EventRule], bus_name: str
) -> list[tuple[EventRule, RuleTarget]]:
    """Every (rule, target) of ``bus_name`` whose pattern the event matches, in rule order."""
    return [
        (rule, target)
        for rule in rules
        if rule.bus_name == bus_name and rule.pattern.matches(event)
        for target in rule.targets
    ]


def target_body(event: Mapping[str, Any], target: RuleTarget) -> str:
    """What the target receives: the whole event, a constant ``Input``, or an ``InputPath``."""
    if target.input is not None:
        return target.input
    if target.input_path is None or target.input_path == "$":
        return json.dumps(event)
    value: Any = event
    for key in target.input_path.split(".")[1:]:
        value = value.get(key) if isinstance(value, Mapping) else None
    return json.dumps(value)


def router_queue_name(template: Template, bus_logical_id: str) -> str:
    return f"{template.name_prefix}{bus_logical_id}-router"


@dataclass
class RouterStats:
    received: int = 0
    routed: int = 0
    misses: int = 0
    send_failures: int = 0


class EventRouter:
    """Routes the events of one bus from its internal queue to the template's targets."""

    def __init__(
        self,
        *,
        bus_name: str,
        router_queue_url: str,
        rules: Sequence[EventRule],
        sqs_client: Any,
        queue_urls_by_name: Mapping[str, str],
        wait_seconds: int = ROUTER_WAIT_SECONDS,
    ) -> None:
        self.bus_name = bus_name
        self.router_queue_url = router_queue_url
        self.rules = [rule for rule in rules if rule.bus_name == bus_name]
        self.sqs = sqs_client
        self.queue_urls_by_name = dict(queue_urls_by_name)
        self.wait_seconds = wait_seconds
        self.stats = RouterStats()
        self._missed_kinds: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> EventRouter:
        self._thread = threading.Thread(
            target=self._run, name=f"router-{self.bus_name}", daemon=True
        )
        self._thread.start()
        return self

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                logger.warning("%s: the router did not stop within %.0f s", self.bus_name, timeout)
            self._thread = None

    def _run(self) -> None:
        failures_in_a_row = 0
        while not self._stop.is_set():
            try:
                response = self.sqs.receive_message(
                    QueueUrl=self.router_queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=self.wait_seconds,
                )
                failures_in_a_row = 0
            except (BotoCoreError, ClientError) as error:
                failures_in_a_row += 1
                if failures_in_a_row in (1, 10) or failures_in_a_row % 100 == 0:
                    logger.warning(
                        "%s: reading the router queue failed (%s); retrying", self.bus_name, error
                    )
                self._stop.wait(min(2.0, 0.1 * failures_in_a_row))
                continue
            for message in response.get("Messages", []):
                if self._stop.is_set():
                    return
                self.stats.received += 1
                if self.route(message["Body"]):
                    self._delete(message["ReceiptHandle"])

    def route(self, body: str) -> bool:
        """Route one delivered body; False when it should be tried again later."""
        if len(body.encode()) > MAX_EVENT_BYTES:
            logger.error(
                "%s: dropped an event of %d bytes, over EventBridge's %d-byte limit",
                self.bus_name,
                len(body.encode()),
                MAX_EVENT_BYTES,
            )
            return True
        try:
            delivered = json.loads(body)
        except json.JSONDecodeError as error:
            logger.error("%s: dropped a body that is not JSON (%s)", self.bus_name, error)
            return True
        if not isinstance(delivered, dict):
            logger.error("%s: dropped a body that is not a JSON object", self.bus_name)
            return True
        event = envelope(delivered)
        matches = matching_targets(event, self.rules, self.bus_name)
        if not matches:
            self._log_miss(event)
            return True
        delivered_all = True
        for rule, target in matches:
            delivered_all = self._send(event, rule, target) and delivered_all
        return delivered_all

    def _send(self, event: Mapping[str, Any], rule: EventRule, target: RuleTarget) -> bool:
        url = self.queue_urls_by_name.get(target.queue_name)
        try:
            if url is None:
                url = self.sqs.get_queue_url(QueueName=target.queue_name)["QueueUrl"]
                self.queue_urls_by_name[target.queue_name] = url
            request: dict[str, Any] = {"QueueUrl": url, "MessageBody": target_body(event, target)}
            if target.message_group_id is not None:
                request["MessageGroupId"] = target.message_group_id
            self.sqs.send_message(**request)
        except (BotoCoreError, ClientError) as error:
            self.stats.send_failures += 1
            logger.warning(
                "%s: rule %s could not deliver %s %s (id %s) to %s (%s); routing it again in %d s",
                self.bus_name,
                rule.name,
                event.get("source"),
                event.get("detail-type"),
                event.get("id"),
                target.queue_name,
                error,
                ROUTER_VISIBILITY_SECONDS,
            )
            return False
        self.stats.routed += 1
        logger.debug(
            "%s: %s %s -> rule %s -> %s",
            self.bus_name,
            event.get("source"),
            event.get("detail-type"),
            rule.name,
            target.queue_name,
        )
        return True

    def _log_miss(self, event: Mapping[str, Any]) -> None:
        self.stats.misses += 1
        kind = (str(event.get("source")), str(event.get("detail-type")))
        level = logging.DEBUG if kind in self._missed_kinds else logging.INFO
        self._missed_kinds.add(kind)
        logger.log(
            level,
            "%s: no rule matched %s %s (id %s)%s",
            self.bus_name,
            kind[0],
            kind[1],
            event.get("id"),
            "" if level == logging.DEBUG else "; later misses of this kind are logged at DEBUG",
        )

    def _delete(self, receipt_handle: str) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.router_queue_url, ReceiptHandle=receipt_handle)
        except (BotoCoreError, ClientError) as error:
            logger.warning(
                "%s: could not delete a routed event from the router queue (%s); it will be "
                "routed again",
                self.bus_name,
                error,
            )


def start_routers(
    template: Template,
    *,
    sqs_client: Any,
    events_client: Any,
    queue_urls: Mapping[str, str],
) -> tuple[list[EventRouter], dict[str, str]]:
    """Set up the catch-all rules and internal queues, and start one router per bus.

    Returns the routers and bus name -> internal queue URL.
    """
    rules = event_rules(template)
    bus_ids = {name: logical_id for logical_id, name in template.event_bus_names().items()}
    by_name = {url.rsplit("/", 1)[-1]: url for url in queue_urls.values()}
    routers: list[EventRouter] = []
    router_queues: dict[str, str] = {}
    try:
        for bus_name in sorted({rule.bus_name for rule in rules}):
            routers.append(
                _start_router(
                    template, bus_name, bus_ids, rules, sqs_client, events_client, by_name
                )
            )
            router_queues[bus_name] = routers[-1].router_queue_url
    except BaseException:
        for router in routers:
            router.stop()
        raise
    return routers, router_queues


def _start_router(
    template: Template,
    bus_name: str,
    bus_ids: Mapping[str, str],
    rules: Sequence[EventRule],
    sqs_client: Any,
    events_client: Any,
    queue_urls_by_name: Mapping[str, str],
) -> EventRouter:
    if bus_name != "default" and bus_name not in bus_ids:
        raise EventRouterError(
            f"a rule listens on the bus {bus_name!r}, which the template does not declare; "
            f"its buses are {sorted(bus_ids)}"
        )
    bus_id = bus_ids.get(bus_name, "DefaultEventBus")
    queue_url = sqs_client.create_queue(
        QueueName=router_queue_name(template, bus_id),
        Attributes={"VisibilityTimeout": str(ROUTER_VISIBILITY_SECONDS)},
    )["QueueUrl"]
    queue_arn = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    catch_all = f"{template.name_prefix}{bus_id}-local-router"
    events_client.put_rule(
        Name=catch_all, EventBusName=bus_name, EventPattern=CATCH_ALL_PATTERN, State="ENABLED"
    )
    events_client.put_targets(
        Rule=catch_all, EventBusName=bus_name, Targets=[{"Id": "router", "Arn": queue_arn}]
    )
    router = EventRouter(
        bus_name=bus_name,
        router_queue_url=queue_url,
        rules=rules,
        sqs_client=sqs_client,
        queue_urls_by_name=queue_urls_by_name,
    )
    for rule in router.rules:
        logger.info(
            "rule %s on %s -> %s",
            rule.name,
            bus_name,
            ", ".join(target.queue_name for target in rule.targets) or "no local target",
        )
    return router.start()
