"""Who is calling, and what they may do: the identity layer the HTTP API, the gRPC API
and the operator CLI share (README "Security").

A caller presents a bearer token: a static API key (``api_keys``) or an OAuth2
client-credentials JWT (``jwt_tokens``). ``Authenticator`` turns it into an
``Identity`` (a subject and its scopes) or refuses it with ``Unauthenticated``; each
surface then checks the scope its operation needs (``scopes``).
"""
