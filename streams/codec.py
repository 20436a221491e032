"""How a SKU's state is written to the table's changelog."""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

from availability.state import SkuState, state_from_data, state_to_data


def encode_state(state: SkuState) -> bytes:
    """A changelog record's value (``SkuStateTable.put`` writes them)."""
    return orjson.dumps(state_to_data(state), option=orjson.OPT_SORT_KEYS)


class SkuStateCodec(codecs.Codec):
    """Reads the changelog back into ``SkuState`` when Faust recovers the table."""

    def _dumps(self, obj: Any) -> bytes:
        assert isinstance(obj, SkuState)
        return encode_state(obj)

    def _loads(self, s: bytes) -> Any:
        return state_from_data(orjson.loads(s))
