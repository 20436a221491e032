"""How a SKU's state is written to the table's changelog."""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

from availability.state import SkuState, state_from_data, state_to_data


class SkuStateCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        assert isinstance(obj, SkuState)
        return orjson.dumps(state_to_data(obj))

    def _loads(self, s: bytes) -> Any:
        return state_from_data(orjson.loads(s))
