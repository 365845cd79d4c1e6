"""LangChain components for Tryage: a router chain, a routing chat model and a route decider."""

from langchain_tryage.chat_models import ChatTryage
from langchain_tryage.route_decider import TryageRouteDecider
from langchain_tryage.router_chain import TryageRouterChain

__all__ = ["ChatTryage", "TryageRouteDecider", "TryageRouterChain"]
