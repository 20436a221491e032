"""A Shopify shop the service serves (``AVAILABILITY_SHOPIFY_TARGETS``): where it is,
its credentials, and how our locations map to its locations (README "Shopify")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from infra.secrets import SecretSource

#: The Admin API version every call is made with.
SHOPIFY_API_VERSION = "2026-10"


class ShopifyTarget(BaseModel):
    """One shop. ``admin_url`` overrides ``https://<shop_domain>`` (the development
    stand-in); ``locations`` maps our ``location_id`` to the shop's location GID; the
    ``channel`` whose ATS the shop shows is ``online`` unless set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    shop_domain: str = Field(pattern=r"^[A-Za-z0-9.-]{1,255}$")
    admin_url: str | None = Field(default=None, pattern=r"^https?://")
    access_token: SecretSource
    # The app's client secret: signs the shop's webhooks (X-Shopify-Hmac-Sha256).
    client_secret: SecretSource | None = None
    api_version: str = SHOPIFY_API_VERSION
    channel: str = Field(default="online", pattern=r"^[a-z0-9_-]{1,32}$")
    locations: dict[str, str] = Field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return (self.admin_url or f"https://{self.shop_domain}").rstrip("/")

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/admin/api/{self.api_version}/graphql.json"

    def location_of(self, shop_location_gid: str) -> str | None:
        """Our location_id for one of the shop's location GIDs (None: not mapped)."""
        for ours, theirs in self.locations.items():
            if theirs == shop_location_gid:
                return ours
        return None
