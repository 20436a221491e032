"""``StandIn``: the stand-in as a real process for tests and the load test.

    with StandIn(log_dir=tmp_path).start() as standin:
        standin.put_shop(tokens=[{"token": TOKEN, "label": "push"}])
        ids = standin.seed(locations=[{"name": "STORE-001"}], items=[...])
        status, body = standin.graphql(QUERY, {"first": 10}, token=TOKEN)

It runs ``python -m dev.shopify_admin`` on a free loopback port (its own process group,
tied to ours), waits for ``/_standin/health``, and wraps the control API. The schema is
fetched first in *this* process, so a missing npm fails here with a clear message.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import httpx

from dev.processes import popen_child, stop_process
from dev.shopify_admin.schema_cache import API_VERSION, ensure_schema

DEFAULT_SHOP: Final = "standin.myshopify.com"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StandInError(RuntimeError):
    pass


class StandIn:
    def __init__(
        self,
        *,
        log_dir: Path,
        port: int | None = None,
        shop: str = DEFAULT_SHOP,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.shop = shop
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.graphql_url = f"{self.base_url}/admin/api/{API_VERSION}/graphql.json"
        self.log_path = log_dir / f"shopify-standin-{self.port}.log"
        self._args = args
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.http = httpx.Client(timeout=30.0)

    # ----------------------------------------------------------------- process

    def start(self, timeout: float = 30.0) -> StandIn:
        schema = ensure_schema()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        argv = [
            sys.executable,
            "-m",
            "dev.shopify_admin",
            "--port",
            str(self.port),
            "--shop",
            self.shop,
            "--schema",
            str(schema),
            *self._args,
        ]
        self._proc = popen_child(argv, env=self._env, stdout=self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise StandInError(f"stand-in exited ({self._proc.returncode}): {self.tail()}")
            try:
                if (
                    self.http.get(f"{self.base_url}/_standin/health", timeout=1.0).status_code
                    == 200
                ):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise StandInError(f"stand-in not ready after {timeout:.0f} s: {self.tail()}")

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, 5.0)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self.stop()
        self.http.close()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> StandIn:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- control API

    def control(
        self, method: str, path: str, body: dict[str, Any] | None = None, **query: Any
    ) -> Any:
        response = self.http.request(
            method, f"{self.base_url}/_standin{path}", json=body, params=query or None
        )
        if response.status_code >= 400:
            raise StandInError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def put_shop(self, **spec: Any) -> dict[str, Any]:
        """Create or update a shop: ``tokens``, ``bucket``, ``plan``, ``webhook``."""
        result: dict[str, Any] = self.control("POST", "/shops", {"domain": self.shop, **spec})
        return result

    def seed(self, **spec: Any) -> dict[str, Any]:
        """``locations=[{"name"}]``, ``items=[{"sku", "levels": {location: {state: n}}}]``."""
        result: dict[str, Any] = self.control("POST", "/seed", {"shop": self.shop, **spec})
        return result

    def set_levels(self, sku: str, location: str | int, **quantities: int) -> dict[str, Any]:
        result: dict[str, Any] = self.control(
            "POST",
            "/levels",
            {"shop": self.shop, "sku": sku, "location": location, "quantities": quantities},
        )
        return result

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.control("GET", "/state", shop=self.shop)
        return result

    def level(self, sku: str, location: str) -> dict[str, Any]:
        view = self.state()
        item = next(i for i in view["items"] if i["sku"] == sku)
        loc = next(x for x in view["locations"] if x["name"] == location)
        return dict(
            next(
                lv
                for lv in view["levels"]
                if lv["inventory_item_id"] == item["id"] and lv["location_id"] == loc["id"]
            )
        )

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.control("GET", "/calls", shop=self.shop, since=since)
        return result

    def bucket(self, **settings: float) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "/bucket", {"shop": self.shop, **settings})
        return result

    def fault(self, kind: str, **spec: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "/faults", {"kind": kind, **spec})
        return result

    def clear_faults(self) -> None:
        self.control("DELETE", "/faults")

    def webhooks(self, **spec: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "/webhooks", {"shop": self.shop, **spec})
        return result

    def deliveries(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.control("GET", "/webhooks/deliveries", shop=self.shop)
        return result

    def checkout(
        self, location: str, line_items: list[dict[str, Any]], **options: Any
    ) -> dict[str, Any]:
        body = {"shop": self.shop, "location": location, "line_items": line_items, **options}
        result: dict[str, Any] = self.control("POST", "/checkout", body)
        return result

    def order_action(self, order_id: int, action: str, **options: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control(
            "POST", f"/orders/{order_id}/{action}", {"shop": self.shop, **options}
        )
        return result

    # ----------------------------------------------------------------- Admin API

    def graphql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str,
        operation_name: str | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """(HTTP status, parsed body; the text when it is not JSON)."""
        body: dict[str, Any] = {"query": query, "variables": variables or {}}
        if operation_name:
            body["operationName"] = operation_name
        response = self.http.post(
            self.graphql_url,
            json=body,
            headers={"X-Shopify-Access-Token": token},
            timeout=timeout,
        )
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text
