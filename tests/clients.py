"""A test client that speaks GraphQL as one signed-in user."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask.testing import FlaskClient


@dataclass
class GraphQLClient:
    """Posts GraphQL documents as one user, with a real token from the identity provider."""

    client: FlaskClient
    token: str | None

    def post(self, query: str, variables: dict | None = None, **kwargs: Any):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(kwargs.pop("headers", {}))
        # Encoded as a client's JSON library does, with escapes for what is not ASCII: a lone
        # surrogate can only travel so (the app's own encoder writes UTF-8, which cannot).
        body = json.dumps({"query": query, "variables": variables or {}})
        return self.client.post(
            "/graphql", data=body, content_type="application/json", headers=headers, **kwargs
        )

    def execute(self, query: str, variables: dict | None = None) -> dict[str, Any]:
        """The `data` of a successful execution; fails the test on any GraphQL error."""
        response = self.post(query, variables)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert "errors" not in body, body["errors"]
        return body["data"]
