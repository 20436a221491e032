"""A local stand-in for Shopify's GraphQL Admin API (version 2026-10) and its order
webhooks, strict enough that code passing against it works against the real thing.

It validates every document and its variables against the real 2026-10 schema (the
introspection shipped in npm ``@shopify/dev-mcp``, fetched by :mod:`.schema_cache`),
checks access tokens and scopes, prices queries the way Shopify documents it, runs a
leaky bucket per shop, implements ``inventorySetQuantities`` with compare-and-set and
idempotency keys, the inventory reads the push needs, fault injection, and sends
signed order webhooks. Control and inspection live under ``/_standin/``.

Run it with ``python -m dev.shopify_admin --help``; drive it from tests with
:class:`dev.shopify_admin.client.StandIn`. README "Shopify stand-in (development)".
"""
