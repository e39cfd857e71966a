"""The discovery document names what the settings name: the issuer identity signs with, the token
endpoint, and the JWKS this edge serves at its public address."""

from services.edge.entrypoints.oauth import openid_configuration
from tests.support.settings import Settings


def test_every_url_follows_the_edges_address_when_none_is_set() -> None:
    config = openid_configuration(Settings(edge_addr="0.0.0.0:9443"))
    assert (config["issuer"], config["token_endpoint"], config["jwks_uri"], config["service_documentation"]) == (
        "http://127.0.0.1:9443", "http://127.0.0.1:9443/oauth/token", "http://127.0.0.1:9443/.well-known/jwks.json",
        "http://127.0.0.1:9443/docs")


def test_the_jwks_is_where_the_edge_serves_it_even_with_an_issuer_of_another_name() -> None:
    config = openid_configuration(Settings(edge_public_url="https://api.example.com/", token_issuer="https://id.example.com"))
    assert config["issuer"] == "https://id.example.com"
    assert config["jwks_uri"] == "https://api.example.com/.well-known/jwks.json"
    assert config["token_endpoint"] == "https://api.example.com/oauth/token"
