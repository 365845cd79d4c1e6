"""Prometheus metrics of one server (``GET /metrics``), in a registry of its own."""

from __future__ import annotations


class Metrics:
    """Counters and histograms the server updates; :meth:`render` gives the exposition text.

    Attributes:
        requests: ``tryage_requests_total{endpoint, expert, status}``.
        routing: ``tryage_routing_seconds`` (a request's wait for its micro-batch and the routing itself).
        batch_size: ``tryage_routing_batch_size`` (prompts per encoder pass).
        upstream: ``tryage_upstream_seconds{expert}`` (to the whole answer; a stream: to its first event).
        tokens: ``tryage_tokens_total{expert, kind}`` (``kind``: input or output).
        spend: ``tryage_spend_usd_total{expert}`` from the experts file's prices.
        fallbacks: ``tryage_fallbacks_total{from_expert}``.
        rejections: ``tryage_rejections_total{reason}`` (overloaded, expert_busy, too_large, unauthorized).
        in_flight: ``tryage_in_flight_requests``.
        feedback: ``tryage_feedback_rows_total``; ``updates``: ``tryage_router_updates_total``.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tryage_requests", "Requests answered", ["endpoint", "expert", "status"], registry=r)
        self.routing = Histogram("tryage_routing_seconds", "Seconds to route a request (batch wait included)",
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r)
        self.batch_size = Histogram("tryage_routing_batch_size", "Prompts per encoder pass (micro-batch)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.upstream = Histogram("tryage_upstream_seconds", "Seconds an expert took (a stream: to its first event)",
                                  ["expert"], registry=r)
        self.tokens = Counter("tryage_tokens", "Tokens by expert", ["expert", "kind"], registry=r)
        self.spend = Counter("tryage_spend_usd", "Spend in USD by expert (experts file prices)", ["expert"], registry=r)
        self.fallbacks = Counter("tryage_fallbacks", "Calls given to the next expert", ["from_expert"], registry=r)
        self.rejections = Counter("tryage_rejections", "Requests refused", ["reason"], registry=r)
        self.in_flight = Gauge("tryage_in_flight_requests", "Requests in flight", registry=r)
        self.feedback = Counter("tryage_feedback_rows", "Feedback rows logged", registry=r)
        self.updates = Counter("tryage_router_updates", "Router updates put in force", registry=r)

    def usage(self, expert: str, tokens_in: int, tokens_out: int, usd: float) -> None:
        if tokens_in:
            self.tokens.labels(expert, "input").inc(tokens_in)
        if tokens_out:
            self.tokens.labels(expert, "output").inc(tokens_out)
        if usd:
            self.spend.labels(expert).inc(usd)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["Metrics"]
