"""The push to Shopify (``python -m services.push``; README "Shopify push"): keeps each
mapped shop's ``available`` equal to our ATS for its channel at each mapped location.

- ``feed``: the change feed's records, read in one place (the feed's format will change);
- ``shopify``: one shop's Admin API client (pacing, retries, 401/403);
- ``state``: what the push keeps in Redis (last set per level, item ids, the call journal);
- ``shop_reads``: SKUs to inventory item ids, and levels, read from a shop;
- ``target``: one shop's writer (batches, compare-and-set, stale compares, the journal);
- ``levels``: the pending figures, coalesced per (SKU, location), and what may be committed;
- ``engine``: the consumer and the loops; ``resync``: correct every difference;
- ``metrics``: the process's Prometheus metrics; ``process``: the entry point.
"""
