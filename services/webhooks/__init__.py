"""Shopify order webhooks into our figures (README "Shopify order webhooks").

``POST /v1/webhooks/shopify`` (``services.http.routes_webhooks``) takes Shopify's
``orders/create``, ``orders/cancelled``, ``orders/fulfilled``, ``fulfillments/create``
and ``refunds/create`` and publishes the matching ``reservation.*`` events to
``orders.reservations``, so the worker's fold stays the one source of truth.

- ``signature``: the HMAC check of the raw body with the shop's client secret;
- ``shops``: the shops that may send webhooks, from ``AVAILABILITY_SHOPIFY_TARGETS``;
- ``orders``: payload -> events (pure), and what cannot be mapped;
- ``publisher``: the Kafka producer, with a bounded wait;
- ``receiver``: dedupe, mapping, publishing, dead letters and metrics for one delivery.
"""
